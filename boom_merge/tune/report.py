"""Tuning reports: ``candidates.json`` / ``candidates.md`` (every candidate, scores, cost
profile, racing outcome) and ``pareto.png`` (ID-dev vs OOD-dev, the chosen point and the
WiSE-FT line marked, candidates raced out faded at their slice scores).

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


#: the parts of a candidate's cost (seconds), in the order the report shows them
PROFILE = ("merge", "load", "tokenize", "encode", "scoring", "mteb")


def candidate_rows(scored: Sequence[tuple[Candidate, Scores]], names: Sequence[str], objective: Objective,
                   cache: Mapping[str, Any], racing: Mapping[str, Any] | None = None,
                   raced_out: Sequence[tuple[Candidate, Scores]] = ()) -> list[dict[str, Any]]:
    """One JSON-ready record per candidate, in search order (raced-out ones with their slice scores only).

    ``profile``: seconds per part (:data:`PROFILE`), summed over the stages the candidate was scored at.
    """
    racing_rows = (racing or {}).get("candidates", {})
    tag = (racing or {}).get("slice")
    rows = []
    for cand, scores in sorted([*scored, *[(c, None) for c, _ in raced_out]], key=lambda p: p[0].order):
        records = [r for r in (cache["scores"].get(cand.key) if scores is not None else None,
                               cache.get("slice", {}).get(f"{tag}|{cand.key}") if tag else None) if r]
        profile = {part: round(sum(r.get("profile", {}).get(part, 0.0) for r in records), 2) for part in PROFILE}
        row = {
            "key": cand.key, "kind": cand.kind, "label": cand.describe(names),
            "members": [names[i] for i in cand.members], "interpolation": cand.interpolation,
            "weights": cand.weights, "scale": cand.scale,
            "id_dev": scores.id_dev if scores else None, "ood_dev": scores.ood_dev if scores else None,
            "objective": objective_value(scores, objective) if scores else None,
            "tasks": scores.tasks if scores else {},
            # merges made for it: 2 for a survivor merged again at the full stage (no room to keep its slice merge)
            "merges": sum(bool(r.get("merged", True)) for r in records),
            "merge_s": round(sum(r.get("merge_s") or 0 for r in records), 2),
            "eval_s": round(sum(r.get("eval_s") or 0 for r in records), 2), "profile": profile,
        }
        if cand.key in racing_rows:
            row["racing"] = racing_rows[cand.key]
        rows.append(row)
    return rows


def write_report(out: Path, scored: Sequence[tuple[Candidate, Scores]], chosen: Candidate, names: Sequence[str], *,
                 objective: Objective, rule: str, steps: Sequence[SoupStep], full: int, setup: dict[str, Any],
                 cache: Mapping[str, Any], racing: Mapping[str, Any] | None = None,
                 raced_out: Sequence[tuple[Candidate, Scores]] = (), racing_skipped: str | None = None) -> None:
    """Write ``candidates.json``, ``candidates.md`` and ``pareto.png`` into ``out``.

    ``cache``: the search's score cache (``scores``, ``slice``); ``racing``: the racing report
    (``run._racing_report``), None for an exhaustive search; ``raced_out``: candidates with slice
    scores only; ``racing_skipped``: why a racing search ran exhaustively (``run.racing_skipped``).
    """
    rows = candidate_rows(scored, names, objective, cache, racing, raced_out)
    soup = [{"members": [names[i] for i in step.members], "score": step.score, "kept": step.kept} for step in steps]
    cost = {"candidates": len(rows), "full": len(scored), "raced_out": len(raced_out),
            "merges": sum(r["merges"] for r in rows), "merge_s": round(sum(r["merge_s"] for r in rows), 1),
            "eval_s": round(sum(r["eval_s"] for r in rows), 1),
            "profile_s": {part: round(sum(r["profile"][part] for r in rows), 1) for part in PROFILE}}
    keys = {r["key"] for r in rows}
    data = {"objective": objective, "rule": rule, "chosen": chosen.key, "full_data_member": names[full],
            "setup": setup, "cost": cost, "racing": {k: v for k, v in (racing or {}).items() if k != "candidates"} or None,
            "racing_skipped": racing_skipped,
            "greedy_soup": soup, "candidates": rows,
            "scores": {key: cache["scores"][key] for key in keys if key in cache["scores"]}}
    if racing:
        data["slice"] = {f"{racing['slice']}|{key}": cache["slice"][f"{racing['slice']}|{key}"] for key in keys
                         if f"{racing['slice']}|{key}" in cache["slice"]}
    (out / "candidates.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    (out / "candidates.md").write_text(_markdown(rows, chosen, rule, soup, cost, racing, racing_skipped), encoding="utf-8")
    _pareto(out / "pareto.png", scored, chosen, full, names, objective, raced_out)


def _markdown(rows: list[dict[str, Any]], chosen: Candidate, rule: str, soup: list[dict[str, Any]],
              cost: dict[str, Any], racing: Mapping[str, Any] | None, racing_skipped: str | None = None) -> str:
    lines = [f"# boom-merge tune\n\n{rule}.\n"]
    if racing_skipped:
        lines.append(f"Racing skipped, the exhaustive search: {racing_skipped}.\n")
    if racing:
        lines.append(f"{racing['rule'][0].upper()}{racing['rule'][1:]}.\n")
    head = "| | candidate | ID dev | OOD dev | objective |"
    rule_line = "|---|---|---:|---:|---:|"
    if racing:
        head += " slice objective | behind (margin) | racing |"
        rule_line += "---:|---:|---|"
    head += " " + " | ".join(f"{part} s" for part in PROFILE) + " |"
    rule_line += "---:|" * len(PROFILE)
    lines += [head, rule_line]
    for row in rows:
        mark = "**chosen**" if row["key"] == chosen.key else ""
        cells = [mark, row["label"], _fmt(row["id_dev"]), _fmt(row["ood_dev"]), _fmt(row["objective"])]
        if racing:
            race = row.get("racing", {})
            out = f"raced out after the {100 * racing['fraction']:g}% slice" if race.get("raced_out") else "full"
            cells += [_fmt(race.get("slice_objective")),
                      f"{_fmt(race.get('behind'))} ({_fmt(race.get('margin'))})" if race else "",
                      f"{out}: {race.get('reason', '')}" if race else ""]
        cells += [f"{row['profile'][part]:.2f}" for part in PROFILE]
        lines.append("| " + " | ".join(cells) + " |")
    if soup:
        lines.append("\nGreedy soup (members in order of their own dev score; kept if the soup improved"
                     + ("; slice scores shown, decided on full scores where the slice could not tell them apart"
                        if racing else "") + "):\n")
        lines += [f"- {' + '.join(s['members'])}: {_fmt(s['score'])} {'kept' if s['kept'] else 'dropped'}"
                  for s in soup]
    raced = f" ({cost['full']} on the full caps, {cost['raced_out']} raced out on the slice)" if racing else ""
    lines.append(f"\nCost: {cost['candidates']} candidates{raced}, {cost['merges']} merges in "
                 f"{cost['merge_s']} s, {cost['eval_s']} s dev evaluation (as first scored; cached scores are reused). "
                 "Profile per candidate, summed over its stages: merge, model load (checks included), "
                 "tokenization (once per text and tokenizer, then cached), encoding, scoring (similarity "
                 "search, pytrec_eval), MTEB's own work in each task (data loaders, bookkeeping); "
                 "totals: " + ", ".join(f"{part} {value} s" for part, value in cost["profile_s"].items()) + ".\n")
    lines.append("Scores x100 (nDCG@10 / Spearman) on dev splits only; OOD test sources were not read"
                 + ("; behind and margin: slice objective points x100." if racing else ".") + "\n")
    return "\n".join(lines)


def _pareto(path: Path, scored: Sequence[tuple[Candidate, Scores]], chosen: Candidate, full: int,
            names: Sequence[str], objective: Objective, raced_out: Sequence[tuple[Candidate, Scores]] = ()) -> None:
    """ID dev (x) vs OOD dev (y) of every candidate, the WiSE-FT line, the chosen point and the
    objective's level line through it (no candidate lies beyond it); candidates raced out faded
    at their slice scores (another data set: a cheap estimate, not comparable point for point);
    the legend below the axes."""
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
    faded = [s for _, s in raced_out if s.id_dev is not None and s.ood_dev is not None]
    if faded:
        ax.scatter([100 * s.id_dev for s in faded], [100 * s.ood_dev for s in faded], marker="x", color="grey",
                   alpha=0.5, label="raced out (slice score)")
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
