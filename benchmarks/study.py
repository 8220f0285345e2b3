"""What the study's parts share (``quality.py``, ``quality_chain.py``, ``quality_tuned.py``).

Owns: the study's tables (mean ± std over training seeds, differences paired by seed) and
option parsing shared by the parts. It may not train, merge or evaluate (boom_merge does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean, stdev


def names(value: str) -> tuple[str, ...]:
    """An option's comma list, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def spread(values: Sequence[float]) -> str:
    """``mean ± std`` x100 (the std needs two or more values)."""
    mean = 100 * fmean(values)
    return f"{mean:.2f} ± {100 * stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def paired_deltas(
    values: Mapping[int | None, Mapping[str, float]],
    reference: Mapping[int | None, Mapping[str, float]],
    column: str,
) -> list[float]:
    """``values[seed][column] - reference[seed][column]`` for every seed both have."""
    return [values[s][column] - reference[s][column] for s in values if s is not None and s in reference]


def seed_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    *,
    reference: str | None = "BLS",
    delta_columns: Sequence[str] = (),
    names: Mapping[str, str] | None = None,
) -> str:
    """Markdown: one line per model (in order of appearance), mean ± std over seeds per column.

    Each row is ``{"model", "seed", "values": {column: score}}``. With ``reference`` and
    ``delta_columns``, each model's difference from the reference model of the same seed
    follows (mean ± std over the seeds both have). ``names`` relabels column headers.
    """
    names = names or {}
    by_model: dict[str, dict[int | None, Mapping[str, float]]] = {}
    for row in rows:
        by_model.setdefault(str(row["model"]), {})[row["seed"]] = row["values"]  # type: ignore[index]
    ref = by_model.get(reference) if reference else None
    deltas = list(delta_columns) if ref else []
    header = ["model", "seeds", *(names.get(c, c) for c in columns), *(f"Δ {names.get(c, c)} vs {reference}" for c in deltas)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, seeds in by_model.items():
        cells = [model, str(len(seeds)), *(spread([v[c] for v in seeds.values()]) for c in columns)]
        for column in deltas:
            paired = paired_deltas(seeds, ref, column) if model != reference else []
            cells.append(spread(paired) if paired else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
