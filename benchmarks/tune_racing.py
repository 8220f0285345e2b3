"""Racing against the exhaustive search: the same choice, at what share of the cost.

Not a test: run by hand, on a quiet machine (one heavy job at a time). For each case (a set
of members, their base, a corpus with dev splits) it runs, in the same process and in this
order, each into a fresh OUT with no cache to reuse:

1. ``exhaustive``: ``tune(..., racing=False)``, every candidate on the full dev caps;
2. ``racing``: ``tune(...)`` (the default), the slice first, survivors on the full caps;
3. with ``--legacy``: the exhaustive search with the scorer of before the once-per-search
   dev set (``evaluate_models`` per candidate: tasks rebuilt, result files, summary and chart
   written per candidate), the cost the issue measured (33 s per candidate).

Per case it reports both choices, whether they agree, and where they differ the full-dev
difference of the two chosen candidates against its standard error (paired per-query, both
merged and scored again here); whether racing raced (``raced``: false when it could drop
nothing, ``tune.run.racing_skipped``), how many scorings each run took and how many dev texts
its scorer encoded (racing reuses a candidate's slice encodings at its full stage: equal counts
when nothing is raced out), whether every candidate scored on the full caps by both has the
same task scores (``same_full_scores``: it should, to the last bit); the candidate-evaluation
time (merge + scoring, summed over every score taken: ``candidates.json`` ``cost``) and the
wall time of each run, and the ratios racing / exhaustive and racing / legacy; and how many
candidates were behind the slice leader by more than the margin (``beyond_margin``: what the
margin alone would drop, were the top third and the protected candidates not kept).
``--racing-first`` swaps the order of the first two runs; ``--full-grid`` (and ``--scales``) run
both searches as ``tune --full-grid`` does, the bag at every setting and scale: a search with
candidates far from the best, where racing has something to drop. Cases:

* ``--quickstart RUN``: the quickstart's members (``RUN/members/member-*``, ``RUN/base``, the
  corpus named in ``RUN/quickstart.json``; dev caps and scales of the default profile);
* ``--study-v2 DIR --corpus CORPUS``: study v2's bags (``DIR/models/tuned/REGIME/seed-S/``,
  ``DIR/base``; dev caps 60 / 200 and tune's default scales, as ``benchmarks/quality.py``
  ``--parts tuned`` runs them). Missing bags: rerun study v2 first (docs/results.md, section 5).

    python benchmarks/tune_racing.py --quickstart runs/quickstart --workdir /tmp/tune-racing --legacy
    python benchmarks/tune_racing.py --study-v2 runs/v2 --corpus ~/.cache/boom-merge/corpora/HASH \\
        --workdir /tmp/tune-racing-v2
    python benchmarks/tune_racing.py --quickstart runs/quickstart --workdir /tmp/tune-racing-grid \\
        --full-grid --scales 0.25,0.5,0.75,1,1.25
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boom_merge.embedded_default import TRAIN_DOMAINS
from boom_merge.tune import DEFAULT_SCALES, tune
from boom_merge.tune.scoring import DevTasks, dev_scorer, dev_tasks
from boom_merge.tune.select import Scores, objective_value


@dataclass
class Case:
    """One racing-vs-exhaustive comparison."""

    name: str
    members: list[Path]
    base: Path
    corpus: Path
    max_queries: int
    max_corpus: int
    scales: tuple[float, ...]
    in_domain: tuple[str, ...] = TRAIN_DOMAINS
    full_grid: bool = False
    runs: dict[str, Any] = field(default_factory=dict)


def quickstart_case(run: Path) -> Case:
    from boom_merge.quickstart import PROFILES

    record = json.loads((run / "quickstart.json").read_text())
    profile = PROFILES["default"]
    return Case("quickstart", sorted((run / "members").glob("member-*")), run / "base", Path(record["corpus"]),
                profile.tune_max_queries, profile.tune_max_corpus, profile.tune_scales)


def study_cases(root: Path, corpus: Path) -> list[Case]:
    cases = []
    for bag in sorted((root / "models" / "tuned").glob("*/seed-*")):
        members = sorted(p for p in bag.glob("member-*") if (p / "boom_member.json").is_file())
        if members:
            cases.append(Case(f"v2 {bag.parent.name} {bag.name}", members, root / "base", corpus, 60, 200,
                              DEFAULT_SCALES))
    return cases


def legacy_scorer(corpus: Path, tasks: DevTasks, work: Path, max_queries: int, max_corpus: int) -> Any:
    """The dev scorer before the once-per-search dev set: ``evaluate_models`` per candidate (the baseline)."""
    from boom_merge.evaluation import evaluate_models
    from boom_merge.evaluation.summary import ID_AVG, OOD_AVG

    def score(model: Path) -> Scores:
        out = work / "legacy-eval"
        shutil.rmtree(out, ignore_errors=True)
        summary = evaluate_models([model], out, corpus=corpus, split="dev", tasks=[*tasks.in_domain, *tasks.out_of_domain],
                                  in_domain=list(tasks.in_domain), max_queries=max_queries, max_corpus=max_corpus,
                                  labels=["candidate"], progress=False)
        shutil.rmtree(out, ignore_errors=True)
        return Scores(summary.value("candidate", ID_AVG), summary.value("candidate", OOD_AVG),
                      dict(summary.scores["candidate"]))

    return score


def _run(case: Case, out: Path, **options: Any) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.tune-work", ignore_errors=True)
    own = "scorer" not in options  # tune's own scorer, built here to read its encoding count
    if own:
        tasks = dev_tasks(case.corpus, case.members, list(case.in_domain), need_ood=True)
        options["scorer"] = dev_scorer(case.corpus, tasks, max_queries=case.max_queries, max_corpus=case.max_corpus)
    start = time.perf_counter()
    result = tune(case.members, out, base=case.base, corpus=case.corpus, in_domain=list(case.in_domain),
                  max_queries=case.max_queries, max_corpus=case.max_corpus, scales=case.scales, progress=False,
                  full_grid=case.full_grid, **options)
    wall = time.perf_counter() - start
    data = json.loads((out / "candidates.json").read_text())
    marks = [row["racing"] for row in data["candidates"] if row.get("racing")]
    return {"chosen": result.chosen.key, "label": result.label, "objective": objective_value(result.scores, "balanced"),
            "raced": result.racing, "full_scored": len(result.candidates), "raced_out": len(result.raced_out),
            "scorings": data["cost"]["full"] + (len(data.get("slice", {})) if result.racing else 0),
            "encoded_texts": options["scorer"].encodings.encoded if own else None,
            "evaluation_s": round(data["cost"]["merge_s"] + data["cost"]["eval_s"], 1), "wall_s": round(wall, 1),
            "profile_s": data["cost"].get("profile_s"),
            # what the margin alone would drop, were the top third and the protected candidates not kept
            "beyond_margin": sum(m["behind"] > m["margin"] for m in marks) if marks else None,
            "full_tasks": {cand.key: scores.tasks for cand, scores in result.candidates}}


def _noise(case: Case, work: Path, keys: tuple[str, str], out: Path) -> dict[str, float]:
    """Full-dev difference of two chosen candidates and its paired standard error (both merged and scored here)."""
    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.tune.race import paired_margin

    data = json.loads((out / "candidates.json").read_text())
    rows = {row["key"]: row for row in data["candidates"]}
    tasks = dev_tasks(case.corpus, case.members, list(case.in_domain), need_ood=True)
    scorer = dev_scorer(case.corpus, tasks, max_queries=case.max_queries, max_corpus=case.max_corpus)
    scores = []
    for index, key in enumerate(keys):
        recipe = work / f"noise-{index}.yml"
        recipe.write_text(_recipe(case, rows[key]), encoding="utf-8")
        model = merge_recipe(recipe, work / f"noise-{index}", force=True)
        scores.append(scorer(model))
    diff = objective_value(scores[0], "balanced") - objective_value(scores[1], "balanced")
    return {"difference": diff, "standard_error": paired_margin(scores[0], scores[1], "balanced", z=1.0)}


def _recipe(case: Case, row: dict[str, Any]) -> str:
    from boom_merge.tune.candidates import candidate, recipe_text

    names = [m.name for m in case.members]
    cand = candidate(row["kind"], [names.index(n) for n in row["members"]], interpolation=row["interpolation"],
                     weights=row["weights"], scale=row["scale"])
    return recipe_text(cand, case.members, case.base)


def compare(case: Case, workdir: Path, legacy: bool, racing_first: bool = False) -> dict[str, Any]:
    work = workdir / case.name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    for name in ("racing", "exhaustive") if racing_first else ("exhaustive", "racing"):
        case.runs[name] = _run(case, work / name, racing=name == "racing")
    if legacy:
        tasks = dev_tasks(case.corpus, case.members, list(case.in_domain), need_ood=True)
        scorer = legacy_scorer(case.corpus, tasks, work, case.max_queries, case.max_corpus)
        case.runs["legacy"] = _run(case, work / "legacy", racing=False, scorer=scorer)
    exhaustive, raced = case.runs["exhaustive"], case.runs["racing"]
    raced_tasks, exhaustive_tasks = raced.pop("full_tasks"), exhaustive.pop("full_tasks")
    case.runs.get("legacy", {}).pop("full_tasks", None)
    both = set(raced_tasks) & set(exhaustive_tasks)
    report = {"case": case.name, "runs": case.runs, "same_choice": exhaustive["chosen"] == raced["chosen"],
              # racing reuses a candidate's slice encodings at its full stage, grouped as --no-racing groups them
              "same_full_scores": all(raced_tasks[k] == exhaustive_tasks[k] for k in both),
              "racing/exhaustive encoded texts": round(raced["encoded_texts"] / exhaustive["encoded_texts"], 3),
              "racing/exhaustive evaluation": round(raced["evaluation_s"] / exhaustive["evaluation_s"], 3),
              "racing/exhaustive wall": round(raced["wall_s"] / exhaustive["wall_s"], 3)}
    if legacy:
        report["racing/legacy evaluation"] = round(raced["evaluation_s"] / case.runs["legacy"]["evaluation_s"], 3)
        report["racing/legacy wall"] = round(raced["wall_s"] / case.runs["legacy"]["wall_s"], 3)
    if not report["same_choice"]:
        noise = _noise(case, work, (raced["chosen"], exhaustive["chosen"]), work / "exhaustive")
        report["choice_difference"] = {**noise, "within_noise": abs(noise["difference"]) <= 2 * noise["standard_error"]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", type=Path, help="a finished quickstart run dir")
    parser.add_argument("--study-v2", type=Path, help="study v2's OUT (benchmarks/quality.py --parts tuned)")
    parser.add_argument("--corpus", type=Path, help="the built corpus study v2 used")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--legacy", action="store_true", help="also the exhaustive search with the old scorer")
    parser.add_argument("--racing-first", action="store_true",
                        help="run racing before the exhaustive search (to see what the run order does to timings)")
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--full-grid", action="store_true",
                        help="tune --full-grid: the bag at every interpolation x weights x scale")
    parser.add_argument("--scales", help="tune --scales for every case, comma-separated (default: the case's)")
    parser.add_argument("--in-domain", default=",".join(TRAIN_DOMAINS),
                        help="the training domains (ID dev), comma-separated (default: the quickstart's)")
    args = parser.parse_args()
    cases = [quickstart_case(args.quickstart)] if args.quickstart else []
    if args.study_v2:
        if args.corpus is None:
            parser.error("--study-v2 needs --corpus")
        cases += study_cases(args.study_v2, args.corpus)
    if not cases:
        parser.error("give --quickstart and/or --study-v2")
    for case in cases:
        case.in_domain = tuple(name.strip() for name in args.in_domain.split(",") if name.strip())
        case.full_grid = args.full_grid
        if args.scales:
            case.scales = tuple(float(t) for t in args.scales.split(","))
        case.name += " full grid" if args.full_grid else ""
    reports = []
    for case in cases:
        reports.append(compare(case, args.workdir, args.legacy, args.racing_first))
        print(json.dumps(reports[-1], indent=2), flush=True)
    print("\n| case | exhaustive choice | racing choice | same | full / raced out | texts encoded exh. / racing "
          "| eval s exh. / racing" + (" / legacy" if args.legacy else "") + " | racing / exhaustive | racing / legacy "
          "| beyond the margin |")
    print("|---|---|---|---|---|---|---|---:|---:|---:|")
    for r in reports:
        runs = r["runs"]
        times = " / ".join(str(runs[k]["evaluation_s"]) for k in ("exhaustive", "racing", "legacy") if k in runs)
        same = "yes" if r["same_choice"] else (
            f"no ({100 * r['choice_difference']['difference']:+.2f} points, SE "
            f"{100 * r['choice_difference']['standard_error']:.2f})")
        raced = f"{runs['racing']['full_scored']} / {runs['racing']['raced_out']}" if runs["racing"]["raced"] \
            else "racing skipped"
        print(f"| {r['case']} | {runs['exhaustive']['label']} | {runs['racing']['label']} | {same} | {raced} | "
              f"{runs['exhaustive']['encoded_texts']} / {runs['racing']['encoded_texts']} | {times} | "
              f"{r['racing/exhaustive evaluation']} | {r.get('racing/legacy evaluation', '')} | "
              f"{runs['racing']['beyond_margin']} |")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
