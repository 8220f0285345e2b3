"""The model x task summary: main scores, in-domain / OOD averages, best per column.

Owns: the :class:`Summary` table, its renderings and chart, and the ``summary.json`` task facts.
It never runs MTEB and imports no other boom-merge module.

The library returns a :class:`Summary`; :func:`to_markdown` and :func:`to_text` render
it (best per column in bold / with ``*``), :func:`plot_scores` draws the PNG chart
(differences from the reference row per task, and ID against OOD average).
``summary.json`` (:data:`SUMMARY_FILE`) is :meth:`Summary.to_dict` plus what ``run`` adds
(model paths and metadata); :func:`split_averages` is the ID / OOD mean over chosen
sources that the study uses.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

ID_AVG = "ID avg"
OOD_AVG = "OOD avg"
#: the summary file ``boom-merge eval`` writes in its output folder
SUMMARY_FILE = "summary.json"


def split_averages(
    scores: Mapping[str, float], in_domain: Collection[str], out_of_domain: Collection[str]
) -> dict[str, float | None]:
    """``{ID_AVG, OOD_AVG}``: the mean of ``scores`` over the ``in_domain`` and the
    ``out_of_domain`` keys (sources or tasks); keys in neither count in neither, an empty
    side is None. A key missing from ``scores`` is an error (a silently smaller mean is not).
    """
    missing = [key for key in (*in_domain, *out_of_domain) if key not in scores]
    if missing:
        raise KeyError(f"no score for {', '.join(missing)}")
    return {
        ID_AVG: fmean(scores[k] for k in in_domain) if in_domain else None,
        OOD_AVG: fmean(scores[k] for k in out_of_domain) if out_of_domain else None,
    }


@dataclass(frozen=True)
class Summary:
    """Main scores per model and task, and which tasks are in-domain for which model.

    ``in_domain[model]`` is the set of in-domain tasks, or None when the model's training
    data is unknown (all its tasks then count as OOD-unknown). ``tagging[model]`` says
    where the tagging came from. ``sources[task]`` is the task's corpus source (its own
    name for a standard MTEB task); ``task_info[task]`` what evaluation knows about it
    (:func:`boom_merge.evaluation.tasks.task_info`).
    """

    models: list[str]
    tasks: list[str]
    main_scores: dict[str, str]
    scores: dict[str, dict[str, float]]
    in_domain: dict[str, frozenset[str] | None]
    tagging: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    task_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def source_scores(self, model: str) -> dict[str, float]:
        """``model``'s main score per source (task name where no source is recorded)."""
        return {self.sources.get(task, task): self.scores[model][task] for task in self.tasks}

    @property
    def columns(self) -> list[str]:
        """Task columns, then the two averages."""
        return [*self.tasks, ID_AVG, OOD_AVG]

    def is_in_domain(self, model: str, task: str) -> bool:
        """Whether ``task`` is in-domain for ``model`` (False when unknown)."""
        return task in (self.in_domain[model] or ())

    def value(self, model: str, column: str) -> float | None:
        """A task's score or an average; None for an empty average."""
        if column in (ID_AVG, OOD_AVG):
            chosen = [
                self.scores[model][task]
                for task in self.tasks
                if self.is_in_domain(model, task) == (column == ID_AVG)
            ]
            return fmean(chosen) if chosen else None
        return self.scores[model][column]

    def best(self, column: str) -> set[str]:
        """The models with the highest value in ``column`` (ties all count)."""
        values = {model: self.value(model, column) for model in self.models}
        present = [v for v in values.values() if v is not None and not math.isnan(v)]
        if not present:
            return set()
        top = max(present)
        return {model for model, v in values.items() if v is not None and math.isclose(v, top, abs_tol=1e-9)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``summary.json``)."""
        return {
            "models": self.models,
            "tasks": [
                {"name": task, "source": self.sources.get(task, task), "main_score": self.main_scores[task],
                 **self.task_info.get(task, {})}
                for task in self.tasks
            ],
            "scores": self.scores,
            "in_domain": {m: sorted(t) if t is not None else None for m, t in self.in_domain.items()},
            "tagging": self.tagging,
            "averages": {m: {ID_AVG: self.value(m, ID_AVG), OOD_AVG: self.value(m, OOD_AVG)} for m in self.models},
            "best": {column: sorted(self.best(column)) for column in self.columns},
        }


def _cell(summary: Summary, model: str, column: str, best_mark: tuple[str, str]) -> str:
    value = summary.value(model, column)
    if value is None:
        return "n/a"
    text = f"{value:.4f}"
    if model in summary.best(column):
        text = f"{best_mark[0]}{text}{best_mark[1]}"
    if column in summary.tasks and summary.is_in_domain(model, column):
        text += " (ID)"
    return text


def _rows(summary: Summary, best_mark: tuple[str, str]) -> list[list[str]]:
    header = ["model", *summary.columns, "training data"]
    body = [
        [model, *(_cell(summary, model, c, best_mark) for c in summary.columns), summary.tagging.get(model, "")]
        for model in summary.models
    ]
    return [header, *body]


def _legend(summary: Summary, best: str) -> str:
    metrics = ", ".join(sorted({f"{metric}" for metric in summary.main_scores.values()}))
    unknown = [m for m in summary.models if summary.in_domain[m] is None]
    lines = [
        f"Main scores ({metrics}); (ID) = in-domain: the model was trained on that task's dataset; "
        f"{best} = best in its column.",
    ]
    if unknown:
        lines.append(
            f"Training data unknown for {', '.join(unknown)}: all their tasks count as OOD-unknown "
            "(use --in-domain to say which are in-domain)."
        )
    return "\n".join(lines)


def to_markdown(summary: Summary) -> str:
    """``summary.md``: a Markdown table, best per column in bold."""
    rows = _rows(summary, ("**", "**"))
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n\n" + _legend(summary, "bold") + "\n"


def to_text(summary: Summary) -> str:
    """A plain-text table for the terminal, best per column marked with ``*``."""
    rows = _rows(summary, ("", "*"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n" + _legend(summary, "*") + "\n"


def _reference(summary: Summary) -> str:
    """The row the chart measures against: ``BLS`` when there is one, else the first model."""
    return "BLS" if "BLS" in summary.models else summary.models[0]


def differences(summary: Summary, reference: str | None = None) -> dict[str, dict[str, float]]:
    """Each other model's score minus ``reference``'s (default: :func:`_reference`) per column, x100;
    columns where either side has no value are left out."""
    reference = reference or _reference(summary)
    out: dict[str, dict[str, float]] = {}
    for model in summary.models:
        if model == reference:
            continue
        pairs = {c: (summary.value(model, c), summary.value(reference, c)) for c in summary.columns}
        out[model] = {c: 100 * (mine - theirs) for c, (mine, theirs) in pairs.items()
                      if mine is not None and theirs is not None}
    return out


def plot_scores(summary: Summary, path: Path) -> None:
    """``scores.png``: what a reader compares, in points (x100).

    Left: each model's difference from the reference (``BLS`` when there is one, else the
    first model) per task and for the ID / OOD averages, 0 marked; the base (a row named
    ``base``) is left out there when other models remain (its gap would set the scale), and
    drawn on the right. Right: ID average against OOD average of every model (as tune's
    ``pareto.png``), the base a square, the reference a circle. ``(ID)``: in-domain for the
    reference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = _reference(summary)
    gaps = differences(summary, reference)
    shown = [m for m in gaps if m != "base"] or list(gaps)
    columns = summary.columns
    labels = [f"{c} (ID)" if c in summary.tasks and summary.is_in_domain(reference, c) else c for c in columns]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.45 * len(columns) + 2)),
                                      gridspec_kw={"width_ratios": [3, 2]})
    colours = {model: f"C{i}" for i, model in enumerate(summary.models)}
    step = 0.8 / max(1, len(shown))
    for index, model in enumerate(shown):
        rows = [row for row, column in enumerate(columns) if column in gaps[model]]
        ys = [row + (index - (len(shown) - 1) / 2) * step for row in rows]
        xs = [gaps[model][columns[row]] for row in rows]
        left.hlines(ys, 0, xs, color=colours[model], linewidth=2, alpha=0.6)
        left.scatter(xs, ys, color=colours[model], zorder=3, label=f"{model} - {reference}")
        for x, y in zip(xs, ys):
            left.annotate(f"{x:+.2f}", (x, y), xytext=(4 if x >= 0 else -4, 0), textcoords="offset points",
                          ha="left" if x >= 0 else "right", va="center", fontsize=7)
    left.axvline(0, color="black", linewidth=1)
    for row in range(len(summary.tasks), len(columns)):  # the averages: shaded
        left.axhspan(row - 0.5, row + 0.5, color="grey", alpha=0.12)
    left.set_yticks(range(len(columns)))
    left.set_yticklabels(labels, fontsize=8)
    left.invert_yaxis()
    span = max([abs(x) for model in shown for x in gaps[model].values()] + [0.05])
    left.set_xlim(-1.3 * span, 1.3 * span)
    left.set_xlabel(f"difference from {reference} (main score x100)")
    left.set_title(f"per task: each model minus {reference}")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    _id_ood(right, summary, reference, colours)
    fig.suptitle("boom-merge eval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _id_ood(ax: Any, summary: Summary, reference: str, colours: dict[str, str]) -> None:
    """ID average (x) against OOD average (y) per model, x100; the base a square, the reference a circle."""
    points = [(m, summary.value(m, ID_AVG), summary.value(m, OOD_AVG)) for m in summary.models]
    points = [(m, 100 * x, 100 * y) for m, x, y in points if x is not None and y is not None]
    if not points:
        ax.text(0.5, 0.5, "ID / OOD averages need in-domain and OOD tasks", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    for model, x, y in points:
        marker = "s" if model == "base" else "o" if model == reference else "^"
        ax.scatter([x], [y], color=colours[model], marker=marker, s=70, zorder=3)
        ax.annotate(model, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"{ID_AVG} (x100)")
    ax.set_ylabel(f"{OOD_AVG} (x100)")
    ax.set_title("ID vs OOD average (up and right is better)")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
