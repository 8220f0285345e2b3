"""``boom-merge tune``: search merge settings on dev splits, write the chosen recipe.

Owns: the search order, the score cache and OUT's files. It never scores (:mod:`.scoring` does)
or selects (:mod:`.select` does) itself, and never reads test splits.

The search (fixed, staged so that its cost stays small):

1. the base (the full-data member at t = 0) and every member alone;
2. the bag of all members at t = 1: interpolation slerp / linear x weights equal / ratio
   (with ``full_grid``: at every t of the grid);
3. the greedy soup (Wortsman et al. 2022) with the best setting of step 2;
4. the ``scale`` grid on the best bag or soup of steps 2-3;
5. the WiSE-FT line: the full-data member and the base at every t of the grid.

Every member and the base first pass a merge's input checks (:func:`check_tuned_models`), so a
refused input fails before anything is scored and leaves no work dir. Every candidate is
merged by :func:`boom_merge.merge.pipeline.run_recipe` into a work dir beside
OUT (``.OUT.tune-work``), scored on dev splits only by the scorer
(:class:`boom_merge.tune.scoring.DevScorer`: MTEB on the ID dev splits of the training
domains and the OOD dev sources, its tasks, texts and tokenization held for the whole
search), and deleted after its last scoring (a racing survivor's slice merge waits for its full
stage within :data:`KEEP_MERGED_SHARE` of the disk, else it is merged again).

Racing (the default; ``racing=False`` / ``--no-racing`` is the exhaustive search): steps 1-5
run on a seeded slice of each dev source (:mod:`.devset`); the bag setting of step 2, each
greedy-soup step (and its order of members) and the bag-or-soup of step 3 are decided on the
full scores of the candidates within the racing margin on the slice (where the slice cannot tell
them apart); then :func:`boom_merge.tune.race.race` drops the candidates
clearly behind the slice leader, the rest are scored on the full caps, and the selection rule
(:mod:`boom_merge.tune.select`) picks among the candidates with full scores. A candidate's full
stage encodes only the dev texts its slice stage did not (:mod:`.encodings`; the numbers are
``--no-racing``'s), so racing never encodes a candidate's texts twice; where racing could
drop nothing (:func:`racing_skipped`, known before scoring) the search is exhaustive. Scores are
cached per stage and candidate key in the work dir (an interrupted run resumes) and in
``OUT/candidates.json`` (a finished run re-selects with ``--force`` without scoring again).
OUT gets ``recipe.yml``, ``candidates.json`` / ``.md``, ``pareto.png`` and, with ``merge``,
``model/``. OUT's lock is held from the first candidate to the last file, so a second tune
into OUT fails at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.lineage import full_data_index
from boom_merge.model_refs import check_each_once, resolve_model, transformer_dir
from boom_merge.outputs import atomic_output_dir, check_output, output_lock, write_output_file
from boom_merge.merge.recipe_writing import member_weights, read_manifest
from boom_merge.tune.candidates import (
    DEFAULT_SCALES, INTERPOLATIONS, WEIGHT_SCHEMES, Candidate, candidate, recipe_text,
)
from boom_merge.tune.devset import SliceSpec
from boom_merge.tune.race import DEFAULT_KEEP, DEFAULT_Z, RaceMark, droppable, protected, race
from boom_merge.tune.report import write_report
from boom_merge.tune.scoring import DevTasks, Scorer, dev_scorer, dev_tasks, setup_fingerprint
from boom_merge.tune.select import Objective, Scores, SoupStep, choose, greedy_soup, objective_value, selection_rule

logger = logging.getLogger(__name__)

CACHE_FILE = "scores.json"
CANDIDATES_FILE = "candidates.json"
#: racing keeps the slice stage's merges on disk for the full stage (a survivor is then renamed, not
#: merged again) while all kept merges fit in this share of the space free beside OUT when the search
#: began: a quickstart's 15 MiniLM merges anywhere, a 0.6B-8B model's as far as the disk allows
KEEP_MERGED_SHARE = 0.5
#: dev caps per source: sized so that the default search on the quickstart's 4 members fits
#: 10 minutes on 2 CPU cores (see docs of ``boom-merge tune``)
DEFAULT_MAX_QUERIES = 100
DEFAULT_MAX_CORPUS = 300


@dataclass
class TuneResult:
    """What :func:`tune` chose and where it wrote it."""

    out: Path
    rule: str
    chosen: Candidate
    label: str
    scores: Scores
    candidates: list[tuple[Candidate, Scores]]
    soup_steps: list[SoupStep]
    scored_now: int
    #: candidates raced out on the slice (never scored on the full caps), with their slice scores
    raced_out: list[tuple[Candidate, Scores]] = field(default_factory=list)
    #: whether the search raced (False: ``racing=False``, or racing could drop nothing: :func:`racing_skipped`)
    racing: bool = False


def full_data_member(members: Sequence[Path]) -> int:
    """Index of the first member whose manifest makes it the full-data (BLS) member (:func:`full_data_index`)."""
    samplings = []
    for member in members:
        try:
            manifest = read_manifest(member)
        except BoomError:
            manifest = {}
        samplings.append((manifest.get("sample_ratio"), manifest.get("mode")))
    full = full_data_index(samplings)
    if full is None:
        raise BoomError("no full-data member (sample_ratio 1.0 in boom_member.json); pass --full MEMBER")
    return full


def _weight_schemes(members: Sequence[Path]) -> list[str]:
    """``equal`` and ``ratio``; ``ratio`` only where manifests give ratios that differ."""
    try:
        ratios = member_weights(members, "ratio")
    except BoomError as error:
        logger.warning("ratio weights skipped: %s", error)
        return ["equal"]
    return list(WEIGHT_SCHEMES) if len(set(ratios)) > 1 else ["equal"]


class _Search:
    """Scores candidates (merge, score, delete), each stage once, with the cache on disk.

    ``stage`` is what the search's own decisions read: ``full`` (exhaustive) or ``slice`` (racing).
    With racing, :meth:`best` and :meth:`beats` race their group first: the candidates within the
    racing margin of the group's slice leader are scored on the full caps and the best full score wins.
    """

    def __init__(self, members: list[str], base: str, work: Path, scorer: Scorer,
                 cache: dict[str, Any], objective: Objective, progress: Any, *, racing: Racing | None) -> None:
        self.members, self.base, self.work, self.scorer = members, base, work, scorer
        self.cache, self.objective, self.progress, self.racing = cache, objective, progress, racing
        self.keep_bytes = int(shutil.disk_usage(work).free * KEEP_MERGED_SHARE)  # kept merges' room, fixed now
        self.stage = "slice" if racing else "full"
        self.scored: dict[str, tuple[Candidate, Scores]] = {}  # at the search's stage, in search order
        self.full: dict[str, tuple[Candidate, Scores]] = {}
        self.scored_now = 0

    def score(self, cand: Candidate) -> Scores:
        """The candidate's scores at the search's stage."""
        if cand.key not in self.scored:
            self.scored[cand.key] = (cand, self._scores(cand, self.stage))
        return self.scored[cand.key][1]

    def full_score(self, cand: Candidate) -> Scores:
        """The candidate's scores on the full caps."""
        if cand.key not in self.full:
            cand = self.scored.get(cand.key, (cand,))[0]  # the first of equal recipes keeps its place in the search
            self.full[cand.key] = (cand, self._scores(cand, "full"))
        return self.full[cand.key][1]

    def _scores(self, cand: Candidate, stage: str) -> Scores:
        bucket, key = ("scores", cand.key) if stage == "full" else ("slice", f"{self.racing.spec.tag}|{cand.key}")
        record, fresh = cached_record(self.cache, bucket, key, self.work, lambda: self._merge_and_score(cand, stage))
        self.scored_now += fresh
        self.progress.update(1)
        return Scores(record["id_dev"], record["ood_dev"], record["tasks"], record.get("per_query", {}),
                      record.get("profile", {}))

    def value(self, cand: Candidate) -> float:
        return objective_value(self.score(cand), self.objective)

    def _merge_and_score(self, cand: Candidate, stage: str) -> dict[str, Any]:
        """Merge (or take the merge kept from the slice stage), score at ``stage``, then delete or keep it."""
        from boom_merge.merge.pipeline import load_recipe, run_recipe

        kept = self.work / "kept" / hashlib.sha1(f"{self.cache['setup']}|{cand.key}".encode()).hexdigest()[:20]
        model = self.work / "model"
        shutil.rmtree(model, ignore_errors=True)
        start = time.perf_counter()
        renamed = stage == "full" and kept.is_dir()
        if renamed:
            kept.rename(model)  # merged for the slice: no second merge
        else:
            recipe = self.work / "candidate.yml"
            recipe.write_text(recipe_text(cand, self.members, self.base), encoding="utf-8")
            config, text = load_recipe(recipe)
            run_recipe(config, model, recipe_text=text)
        merged = time.perf_counter()
        try:
            score = self.scorer if stage == "full" else self.scorer.slice  # type: ignore[attr-defined]
            # a racing scorer is told the candidate: its full stage reuses its slice stage's encodings
            scores = score(model, key=cand.key) if self.racing else score(model)
            if stage == "slice" and self._room_for(model):
                kept.parent.mkdir(exist_ok=True)
                model.rename(kept)  # whole merges only: a rename, after the merge finished
        finally:
            shutil.rmtree(model, ignore_errors=True)
        record = {"id_dev": scores.id_dev, "ood_dev": scores.ood_dev, "tasks": scores.tasks,
                  "merged": not renamed, "merge_s": round(merged - start, 2),
                  "eval_s": round(time.perf_counter() - merged, 2),
                  "profile": {"merge": round(merged - start, 3), **scores.profile}}
        if stage == "slice":
            record["per_query"] = scores.per_query
        return record

    def _room_for(self, model: Path) -> bool:
        """Whether ``model`` may stay on disk until the full stage (kept merges within ``keep_bytes``)."""
        def size(folder: Path) -> int:
            return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0

        return size(self.work / "kept") + size(model) <= self.keep_bytes

    def ranking_value(self, cand: Candidate, group: Sequence[Candidate]) -> float:
        """``cand``'s objective for ranking it within ``group``: with racing, its full score when the slice
        cannot tell it from the group's slice leader, else its slice score less 10 (objectives lie in
        [-1, 1]: it ranks after every candidate the slice could not separate)."""
        if self.racing is None:
            return self.value(cand)
        if cand.key in self._close(group):
            return objective_value(self.full_score(cand), self.objective)
        return self.value(cand) - 10.0

    def beats(self, challenger: Candidate, holder: Candidate) -> bool:
        """Whether ``challenger``'s objective is above ``holder``'s; with racing, on the full scores
        when the slice cannot tell the two apart (both within the racing margin of the better)."""
        if self.racing is not None and len(self._close([holder, challenger])) == 2:
            full = [objective_value(self.full_score(c), self.objective) for c in (challenger, holder)]
            return full[0] > full[1]
        return self.value(challenger) > self.value(holder)

    def _close(self, group: Sequence[Candidate]) -> set[str]:
        """Keys of the candidates the slice cannot tell from ``group``'s slice leader (the racing margin)."""
        marks = race([(c, self.score(c)) for c in group], self.objective, z=self.racing.z, keep=0.0)
        return {key for key, mark in marks.items() if mark.kept}

    def best(self, candidates: Sequence[Candidate]) -> Candidate:
        """The rule's pick among ``candidates``; with racing, on the full scores of the group's survivors."""
        if self.racing is None:
            return choose([(c, self.score(c)) for c in candidates], self.objective)
        close = self._close(candidates)
        return choose([(c, self.full_score(c)) for c in candidates if c.key in close], self.objective)


@dataclass(frozen=True)
class Racing:
    """Racing settings: the slice, the margin's z, the share always kept (:mod:`.race`)."""

    spec: SliceSpec = SliceSpec()
    z: float = DEFAULT_Z
    keep: float = DEFAULT_KEEP


def _run_search(search: _Search, full: int, scales: Sequence[float], schemes: Sequence[str],
                full_grid: bool) -> list[SoupStep]:
    """Steps 1-5 of the module docstring; returns the greedy-soup trials."""
    counter = iter(range(10_000))
    everyone = list(range(len(search.members)))
    search.score(candidate("base", [full], scale=0.0, order=next(counter)))
    singles = [candidate("member", [i], order=next(counter)) for i in everyone]
    for single in singles:
        search.score(single)
    steps: list[SoupStep] = []
    if len(everyone) > 1:
        grid = scales if full_grid else (1.0,)
        bags = [candidate("bag", everyone, interpolation=interp, weights=w, scale=t, order=next(counter))
                for interp in INTERPOLATIONS for w in schemes for t in grid]
        best = search.best([bag for bag in bags if bag.scale == 1.0])
        for bag in bags:
            search.score(bag)

        def soup_of(trial: tuple[int, ...]) -> Candidate:
            if len(trial) == 1:
                return singles[trial[0]]
            return candidate("soup", trial, interpolation=best.interpolation, weights=best.weights, order=next(counter))

        soup, steps = greedy_soup(everyone, lambda i: search.ranking_value(singles[i], singles),
                                  lambda t: search.value(soup_of(t)),
                                  lambda trial, held: search.beats(soup_of(trial), soup_of(held)))
        final = candidate("soup", soup, interpolation=best.interpolation, weights=best.weights)
        top = search.best([best, final]) if len(soup) > 1 else best
        if not full_grid or top.members != tuple(everyone):
            for t in scales:
                search.score(candidate(top.kind, top.members, interpolation=top.interpolation,
                                       weights=top.weights, scale=t, order=next(counter)))
    for t in scales:
        search.score(candidate("wise_ft", [full], scale=t, order=next(counter)))
    return steps


def racing_rule(racing: Racing) -> str:
    """The racing rule in words, printed before scoring."""
    return (f"racing (fixed before scoring): every candidate first on a seeded {racing.spec.fraction:.0%} slice of "
            f"each dev source's queries and documents; the search's choices (the bag setting, the greedy soup's "
            f"order and steps, bag or soup) are made on the full scores of the candidates within the margin on "
            f"the slice, its other steps on slice scores; then only "
            f"candidates behind the slice leader by more than {racing.z:g} standard errors of the paired per-query "
            f"difference, outside the top {racing.keep:.0%} and not the base, the plain bag or the best WiSE-FT "
            f"point are dropped; the rest are scored on the full caps (encoding only the dev texts their slice "
            f"stage did not: the same numbers as --no-racing) and the selection rule picks among them; racing is "
            f"skipped, the search exhaustive, where it could drop nothing: when the top share, the base, the plain "
            f"bag and the best WiSE-FT point are every planned candidate, or a dev source has fewer than 2 slice "
            f"queries")


def racing_skipped(scorer: Scorer, candidates: int, members: int, keep: float) -> str | None:
    """Why racing could drop nothing in this search, known before scoring (None: it may race).

    ``candidates``: the planned count (an upper bound); ``members``: how many are tuned. Racing keeps
    the top share, the slice leader and the guarded (the base, the best WiSE-FT point, with two or more
    members the plain bag); and its margin needs two slice queries per dev source.
    """
    if droppable(candidates, 2 + (members > 1), keep) == 0:
        return f"at most {candidates} candidates, all kept by the racing rule (top {keep:.0%}, the base, " \
               "the plain bag, the best WiSE-FT point)"
    queries = getattr(scorer, "slice_queries", None)
    if queries is not None and queries() < 2:
        return f"a dev source has {queries()} query in the slice: no margin to race on"
    return None


def _racing_report(search: _Search, marks: dict[str, RaceMark]) -> dict[str, Any]:
    """Each candidate's slice scores and racing outcome, for the report."""
    rows = {}
    for cand, scores in search.scored.values():
        mark = marks[cand.key]
        if cand.key in search.full and not mark.kept:
            mark = RaceMark(True, mark.behind, mark.margin, "scored on the full caps for a choice of the search")
        rows[cand.key] = {"slice_id_dev": scores.id_dev, "slice_ood_dev": scores.ood_dev,
                          "slice_objective": objective_value(scores, search.objective),
                          "behind": mark.behind, "margin": mark.margin,
                          "raced_out": cand.key not in search.full, "reason": mark.reason,
                          "last_stage": search.racing.spec.tag if cand.key not in search.full else "full"}
    return {"slice": search.racing.spec.tag, "fraction": search.racing.spec.fraction, "z": search.racing.z,
            "keep": search.racing.keep, "rule": racing_rule(search.racing), "candidates": rows}


def _final_race(search: _Search, members: int, full: int) -> dict[str, RaceMark]:
    """Race every candidate on its slice scores; score the survivors on the full caps."""
    racing = search.racing
    slice_scored = list(search.scored.values())
    guarded = protected(slice_scored, search.objective, members, full)
    marks = race(slice_scored, search.objective, z=racing.z, keep=racing.keep, guarded=guarded)
    for cand, _ in slice_scored:
        if marks[cand.key].kept or cand.key in search.full:
            search.full_score(cand)
    return marks


def _planned(members: int, scales: int, schemes: int, full_grid: bool) -> int:
    """An upper bound on the number of distinct candidates (the progress bar's total, racing's count rule):
    the base, the members, the bags, the soup trials, the scale grid and the WiSE-FT line less their
    t = 1 points (the best bag or soup, the full-data member)."""
    if members == 1:
        return 1 + scales
    bags = 2 * schemes * (scales if full_grid else 1)
    return 1 + members + bags + (members - 1) + 2 * (scales - 1)


def load_score_cache(work: Path, out: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """Scores of earlier runs with the same setup: the work dir's cache, then OUT's candidates.

    ``scores``: full-cap records by candidate key; ``slice``: racing-slice records by
    ``SLICE_TAG|KEY`` (:attr:`SliceSpec.tag`).
    """
    cache: dict[str, Any] = {"setup": setup, "scores": {}, "slice": {}}
    for file in (out / CANDIDATES_FILE, work / CACHE_FILE):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("setup") != setup:
            logger.warning("%s: scores of another setup; not reused", file)
            continue
        cache["scores"].update(data.get("scores", {}))
        cache["slice"].update(data.get("slice", {}))
    return cache


def cached_record(cache: dict[str, Any], bucket: str, key: str, work: Path,
                  merge_and_score: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """``(record, scored now)``: ``cache[bucket][key]``, else ``merge_and_score()``'s record, stored and the
    cache written to ``work``'s :data:`CACHE_FILE` at once (an interrupted search resumes from it).

    The one search step of ``tune`` and ``--update-weight auto`` (:mod:`boom_merge.incremental.update_weight`).
    """
    record = cache[bucket].get(key)
    if record is not None:
        return record, False
    record = merge_and_score()
    cache[bucket][key] = record
    write_output_file(work / CACHE_FILE, json.dumps(cache, indent=2))
    return record, True


def _tuned_model(spec: str | Path) -> tuple[Path, str, str]:
    """``(local dir read, what recipes name, label name)`` of a member or the base.

    Recipes name a model as :attr:`ResolvedModel.recipe_name` (a local dir absolute, a Hub id
    ``org/name@COMMIT``, never the cache path); labels as :attr:`ResolvedModel.name`.
    """
    resolved = resolve_model(spec)  # not a dir, not a Hub model in the cache / on the Hub: one line
    if not (transformer_dir(resolved.path) / "config.json").is_file():
        raise BoomError("not a model directory (no config.json)", path=spec)
    return resolved.path, resolved.recipe_name, resolved.name


def check_tuned_models(refs: Sequence[str], out: Path, *, force: bool = False) -> None:
    """Every member and the base pass the checks of a merge of them all (config, tokenizer, honest
    headers, finite weights, same tensors, sentence-transformers heads alike) before anything is
    scored: a refused input fails in seconds and leaves no work dir."""
    from mergekit.config import MergeConfiguration

    from boom_merge.merge.pipeline import plan_merge

    models = [{"model": ref, "parameters": {"weight": 1.0}} for ref in dict.fromkeys(refs)]
    plan_merge(MergeConfiguration.model_validate({"merge_method": "linear", "models": models, "dtype": "float32"}),
               out, force=force)


def tune(
    members: Sequence[str | Path],
    out: str | Path,
    *,
    base: str | Path,
    corpus: str | Path,
    in_domain: Sequence[str] | None = None,
    objective: Objective = "balanced",
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    max_corpus: int | None = DEFAULT_MAX_CORPUS,
    scales: Sequence[float] = DEFAULT_SCALES,
    full: str | Path | None = None,
    full_grid: bool = False,
    merge: bool = False,
    force: bool = False,
    device: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    scorer: Scorer | None = None,
    racing: bool = True,
    slice_fraction: float = SliceSpec.fraction,
    echo: Callable[[str], None] = logger.info,
) -> TuneResult:
    """Tune the merge of ``members`` (trained from ``base``) on the dev splits of ``corpus``.

    Members, base and ``full`` are local dirs or Hub ids (``org/name[@REV]``); recipes name a Hub
    model ``org/name@COMMIT``. ``racing`` (default) scores every candidate on a ``slice_fraction``
    slice of each dev source first and only the survivors on the full caps (:mod:`.race`);
    ``racing=False`` is the exhaustive search, and so is a search where racing could drop nothing
    (:func:`racing_skipped`). A ``scorer`` without a ``slice`` method cannot race; a racing scorer's
    ``scorer(model, key=)`` and ``scorer.slice(model, key=)`` are told the candidate's key.
    """
    from tqdm.auto import tqdm

    corpus, out = Path(corpus), Path(out)
    rule = selection_rule(objective)
    if not members:
        raise BoomError("give at least one member model")
    tuned = [_tuned_model(m) for m in members]
    base_spec = base
    base, base_ref, _ = _tuned_model(base)
    check_each_once([(spec, str(path.resolve())) for spec, (path, _, _) in zip(members, tuned)],
                    (base_spec, str(base.resolve())))
    members = [path for path, _, _ in tuned]  # the local dirs read (a Hub model's snapshot)
    refs = [ref for _, ref, _ in tuned]  # what the recipes name
    if any(t <= 0 for t in scales):
        raise BoomError(f"scales must be positive, got {list(scales)}")
    scales = sorted({*map(float, scales), 1.0})
    if full is None:
        full_index = full_data_member(members)
    else:
        resolved = [m.resolve() for m in members]
        full_path = resolve_model(full).path
        if full_path.resolve() not in resolved:
            raise BoomError("--full must be one of the members", path=Path(full))
        full_index = resolved.index(full_path.resolve())
    settings = Racing(SliceSpec(slice_fraction)) if racing else None
    inputs = [*members, base, corpus]
    check_output(out, inputs=inputs, force=force)
    tasks: DevTasks = dev_tasks(corpus, members, in_domain, need_ood=objective != "id")
    setup = setup_fingerprint(members, base, corpus, tasks, max_queries, max_corpus)
    echo(rule)
    if settings is not None:
        echo(racing_rule(settings))
    echo(f"ID dev: {', '.join(tasks.in_domain)}; OOD dev: {', '.join(tasks.out_of_domain) or 'none'}")
    check_tuned_models([*refs, base_ref], out, force=force)
    with output_lock(out):  # held for the whole search: a second tune into OUT fails fast, never shares the work dir
        work = out.parent / f".{out.name}.tune-work"
        work.mkdir(parents=True, exist_ok=True)
        cache = load_score_cache(work, out, setup)
        scorer = scorer or dev_scorer(corpus, tasks, max_queries=max_queries, max_corpus=max_corpus,
                                      device=device, batch_size=batch_size, spec=SliceSpec(slice_fraction))
        if settings is not None and not hasattr(scorer, "slice"):
            logger.warning("the scorer has no slice: exhaustive search (no racing)")
            settings = None
        schemes = _weight_schemes(members)
        planned = _planned(len(members), len(scales), len(schemes), full_grid)
        skipped = racing_skipped(scorer, planned, len(members), settings.keep) if settings is not None else None
        if skipped:
            echo(f"racing skipped, the exhaustive search: {skipped}")
            settings = None
        bar = tqdm(total=planned + (planned // 2 if settings else 0), desc="tune", unit="score", disable=not progress)
        search = _Search(refs, base_ref, work, scorer, cache, objective, bar, racing=settings)
        with bar:
            steps = _run_search(search, full_index, scales, schemes, full_grid)
            marks = _final_race(search, len(members), full_index) if settings else {}
            bar.total = bar.n  # the planned count is an upper bound (equal recipes are scored once)
            bar.refresh()
        scored = list(search.full.values()) if settings else list(search.scored.values())
        raced_out = [pair for pair in search.scored.values() if pair[0].key not in search.full] if settings else []
        chosen = choose(scored, objective)
        names = [name for _, _, name in tuned]
        with atomic_output_dir(out, force=force, inputs=inputs) as tmp:
            header = (f"# Written by `boom-merge tune` ({objective}): {chosen.describe(names)}\n"
                      f"# {rule}\n# Run: mergekit-yaml recipe.yml MODEL   (or: boom-merge merge recipe.yml MODEL)\n")
            text = recipe_text(chosen, refs, base_ref, header)
            (tmp / "recipe.yml").write_text(text, encoding="utf-8")
            write_report(tmp, scored, chosen, names, objective=objective, rule=rule, steps=steps, full=full_index,
                         setup=setup, cache=cache, racing=_racing_report(search, marks) if settings else None,
                         raced_out=raced_out, racing_skipped=skipped)
            if merge:
                from boom_merge.merge.pipeline import load_recipe, run_recipe

                config, loaded = load_recipe(tmp / "recipe.yml")
                run_recipe(config, tmp / "model", recipe_text=loaded)
        shutil.rmtree(work, ignore_errors=True)
        return TuneResult(out, rule, chosen, chosen.describe(names), dict(scored)[chosen], scored, steps,
                          search.scored_now, raced_out, racing=settings is not None)
