"""Tuning reports: ``candidates.json`` / ``candidates.md`` (every candidate, scores, cost)
and ``pareto.png`` (ID-dev vs OOD-dev, the chosen point and the WiSE-FT line marked).

Owns: the content of ``candidates.json``, ``candidates.md`` and ``pareto.png``. It never scores
or selects, and writes only into the directory it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from boom_merge.tune.candidates import Candidate
from boom_merge.tune.select import Objective, Scores, SoupStep, objective_value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def candidate_rows(scored: Sequence[tuple[Candidate, Scores]], names: Sequence[str], objective: Objective,
                   cache: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One JSON-ready record per candidate, in search order."""
    rows = []
    for cand, scores in scored:
        cost = cache.get(cand.key, {})
        rows.append({
            "key": cand.key, "kind": cand.kind, "label": cand.describe(names),
            "members": [names[i] for i in cand.members], "interpolation": cand.interpolation,
            "weights": cand.weights, "scale": cand.scale, "id_dev": scores.id_dev, "ood_dev": scores.ood_dev,
            "objective": objective_value(scores, objective), "tasks": scores.tasks,
            "merge_s": cost.get("merge_s"), "eval_s": cost.get("eval_s"),
        })
    return rows


def write_report(out: Path, scored: Sequence[tuple[Candidate, Scores]], chosen: Candidate, names: Sequence[str], *,
                 objective: Objective, rule: str, steps: Sequence[SoupStep], full: int, setup: dict[str, Any],
                 cache: Mapping[str, Any]) -> None:
    """Write ``candidates.json``, ``candidates.md`` and ``pareto.png`` into ``out``."""
    rows = candidate_rows(scored, names, objective, cache)
    soup = [{"members": [names[i] for i in step.members], "score": step.score, "kept": step.kept} for step in steps]
    cost = {"candidates": len(rows), "merge_s": round(sum(r["merge_s"] or 0 for r in rows), 1),
            "eval_s": round(sum(r["eval_s"] or 0 for r in rows), 1)}
    data = {"objective": objective, "rule": rule, "chosen": chosen.key, "full_data_member": names[full],
            "setup": setup, "cost": cost, "greedy_soup": soup, "candidates": rows,
            "scores": {key: cache[key] for key in (r["key"] for r in rows)}}
    (out / "candidates.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    (out / "candidates.md").write_text(_markdown(rows, chosen, rule, soup, cost), encoding="utf-8")
    _pareto(out / "pareto.png", scored, chosen, full, names, objective)


def _markdown(rows: list[dict[str, Any]], chosen: Candidate, rule: str, soup: list[dict[str, Any]],
              cost: dict[str, Any]) -> str:
    lines = [f"# boom-merge tune\n\n{rule}.\n",
             "| | candidate | ID dev | OOD dev | objective | merge s | eval s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        mark = "**chosen**" if row["key"] == chosen.key else ""
        lines.append(f"| {mark} | {row['label']} | {_fmt(row['id_dev'])} | {_fmt(row['ood_dev'])} | "
                     f"{_fmt(row['objective'])} | {row['merge_s']} | {row['eval_s']} |")
    if soup:
        lines.append("\nGreedy soup (members in order of their own dev score; kept if the soup improved):\n")
        lines += [f"- {' + '.join(s['members'])}: {_fmt(s['score'])} {'kept' if s['kept'] else 'dropped'}"
                  for s in soup]
    lines.append(f"\nCost: {cost['candidates']} candidates, {cost['merge_s']} s merging, "
                 f"{cost['eval_s']} s dev evaluation (as first scored; cached scores are reused).\n")
    lines.append("Scores x100 (nDCG@10 / Spearman) on dev splits only; OOD test sources were not read.\n")
    return "\n".join(lines)


def _pareto(path: Path, scored: Sequence[tuple[Candidate, Scores]], chosen: Candidate, full: int,
            names: Sequence[str], objective: Objective) -> None:
    """ID dev (x) vs OOD dev (y) of every candidate, the WiSE-FT line, the chosen point and the
    objective's level line through it (no candidate lies beyond it); the legend below the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(c, s) for c, s in scored if s.id_dev is not None and s.ood_dev is not None]
    fig, ax = plt.subplots(figsize=(6.5, 5.8))
    for kind, marker in (("base", "s"), ("member", "o"), ("bag", "^"), ("soup", "v")):
        chosen_kind = [(c, s) for c, s in points if c.kind == kind]
        if chosen_kind:
            ax.scatter([100 * s.id_dev for _, s in chosen_kind], [100 * s.ood_dev for _, s in chosen_kind],
                       marker=marker, label=kind, alpha=0.8)
    line = sorted(((c.scale, s) for c, s in points if c.members == (full,)), key=lambda p: p[0])
    if line:
        ax.plot([100 * s.id_dev for _, s in line], [100 * s.ood_dev for _, s in line], "k--", marker=".",
                label=f"WiSE-FT line ({names[full]} + base)")
        for t, s in line:
            ax.annotate(f"t={t:g}", (100 * s.id_dev, 100 * s.ood_dev), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    best = [s for c, s in points if c.key == chosen.key]
    if best:
        ax.scatter([100 * best[0].id_dev], [100 * best[0].ood_dev], marker="*", s=250, c="red", zorder=5,
                   label=f"chosen: {chosen.describe(names)}")
        _level_line(ax, 100 * best[0].id_dev, 100 * best[0].ood_dev, objective)
    ax.set_xlabel("ID dev average (x100)")
    ax.set_ylabel("OOD dev average (x100)")
    ax.set_title("boom-merge tune: dev scores of every candidate")
    ax.grid(alpha=0.3)
    if points:
        fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.16, 1, 1))
    else:
        ax.text(0.5, 0.5, "no OOD dev scores (objective id)", ha="center", transform=ax.transAxes)
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _level_line(ax: Any, x: float, y: float, objective: Objective) -> None:
    """The points scoring as the chosen one does: x + y constant (balanced), x (id) or y (ood) constant."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    label = f"equal {objective} objective"
    if objective == "balanced":
        ax.plot([x0, x1], [x + y - x0, x + y - x1], ":", color="grey", label=label)
    elif objective == "id":
        ax.axvline(x, linestyle=":", color="grey", label=label)
    else:
        ax.axhline(y, linestyle=":", color="grey", label=label)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
