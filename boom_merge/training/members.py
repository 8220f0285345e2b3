"""The training entry points: bagging members (:func:`train_members`, :func:`train_member`) and
update models (:func:`train_update`).

Owns: the entry points, which members are already trained, the base resolved and hashed once, the
query prompt a run trains with when its options give none (the trained model's own). It never writes
(``training.runner`` does).

Each resolves its base once (a local dir, or a Hub id ``org/name[@REV]`` through
:func:`boom_merge.model_refs.resolve_model`: downloaded when online, the cache when offline),
decides per member whether it is already trained (same settings, same base id/revision),
and hashes the base once per run, only when something is trained. Samples come from
``boom_merge.data.sampling``, rows from ``training.rows``, the run itself from
``training.runner``. Writes nothing itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from boom_merge.data.loading import DataSpec, LoadedDataset, OnBadLine, is_datasets_id, scan_training_data
from boom_merge.data.sampling import MemberSpec, member_sample, plan_members, sample_ids
from boom_merge.errors import BoomError
from boom_merge.lineage import MEMBER_FILE, location, read_member_manifest
from boom_merge.training.config import TrainConfig
from boom_merge.training.dev import DevSet, default_dev, load_dev
from boom_merge.training.manifest import base_record, common_manifest
from boom_merge.training.rows import Part, sizes
from boom_merge.training.runner import output_guard, run_identity, run_training

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from boom_merge.model_refs import ResolvedModel

__all__ = ["train_member", "train_members", "train_update"]

logger = logging.getLogger(__name__)
_DEV_SEED = 0  # every member evaluates the same held-out rows


class _Base:
    """A run's base: resolved once; its identity record (with the hash) computed at most once; its own
    ``query`` prompt (``config_sentence_transformers.json``, read without loading weights)."""

    def __init__(self, spec: str | Path) -> None:
        from boom_merge.model_refs import check_model, resolve_model, stored_prompts

        self.model: ResolvedModel = resolve_model(spec)
        check_model(self.model.path)  # no tokenizer / NaN weights: refused before anything is trained or written
        self.query_prompt = stored_prompts(self.model.path).get("query") or None
        self.cheap = base_record(self.model, with_hash=False)
        self.full: Callable[[], dict[str, Any]] = cache(lambda: base_record(self.model))


def _prompted(config: TrainConfig, trained: _Base) -> TrainConfig:
    """``config`` with the trained model's own ``query`` prompt as ``query_prompt`` when it names none.

    The saved model keeps that prompt and evaluation prompts queries with it, so training does too
    (datasets with an instruction keep theirs); ``training_args.query_prompt`` records the prompt used.
    """
    if config.query_prompt is not None or trained.query_prompt is None:
        return config
    return replace(config, query_prompt=trained.query_prompt)


def _check_instructions(config: TrainConfig, datasets: Sequence[Mapping[str, LoadedDataset]], data: str) -> None:
    names = {name for sets in datasets for name in sets}
    unknown = sorted(set(config.instructions or {}) - names)
    if unknown:
        raise BoomError(f"--instruction for unknown datasets {unknown} (datasets: {sorted(names)})", path=data)


def _sources(data: DataSpec | Sequence[DataSpec]) -> list[DataSpec]:
    return [data] if isinstance(data, (str, Path)) else list(data)


def _where(data: DataSpec | Sequence[DataSpec]) -> str:
    """Where training data came from, for manifests and messages: each path made absolute or a datasets id."""
    return ", ".join(location(spec) for spec in _sources(data))


def _dev_set(config: TrainConfig, data: DataSpec | Sequence[DataSpec], dev: str | Path | None) -> DevSet | None:
    """The run's dev set: ``dev``, else ``DATA/../dev`` (of the first DATA) when evaluating; None when not."""
    data = _sources(data)[0]
    if config.eval_steps is None:
        if dev is not None:
            raise BoomError("--dev is only used with --eval-steps N")
        return None
    path = dev if dev is not None else default_dev(data)
    if path is None:
        raise BoomError(
            "--eval-steps needs a dev split: none beside DATA (../dev/NAME/qrels/dev.tsv); pass --dev DIR "
            "(a BEIR dev split or held-out pairs NAME.jsonl)",
            path=data,
        )
    return load_dev(path, config, _DEV_SEED)


def _same_run(done: Mapping[str, Any], manifest: Mapping[str, Any],
              base_hash: Callable[[], str | None] | None = None) -> bool:
    """Whether a finished member is the one asked for: same settings (but REPORTING_ONLY) and base (id/path
    and, where the finished one records it, revision). Options added since it was trained count as defaults.

    A local base at another path (a moved run dir, another node's mount) is the same base when its
    bytes are: ``base_hash`` (called only then) equals the finished member's ``base_model_sha256``.
    """
    done = {**done, "training_args": {**asdict(TrainConfig()), **(done.get("training_args") or {})}}
    settings = {k: v for k, v in run_identity(done).items() if k != "base_model_sha256"}
    asked = {k: v for k, v in run_identity(manifest).items() if k != "base_model_sha256"}
    revision = manifest.get("base_model_revision")
    if settings != asked or done.get("base_model_revision", revision) != revision:
        return False
    if done.get("base_model") == manifest.get("base_model"):
        return True
    recorded = done.get("base_model_sha256")
    return bool(recorded) and base_hash is not None and base_hash() == recorded


def _train_loaded_member(
    data: DataSpec | Sequence[DataSpec],
    datasets: dict[str, LoadedDataset],
    base: _Base,
    spec: MemberSpec,
    out: Path,
    config: TrainConfig,
    *,
    force: bool,
    callbacks: Sequence[TrainerCallback] = (),
    dev: DevSet | None = None,
) -> Path:
    target = Path(out) / spec.name
    part = Part(datasets, member_sample(spec, sizes(datasets)))
    manifest = common_manifest("member", base.model.spec, config, spec.seed, base_identity=base.cheap) | {
        "member_index": spec.index,
        "sample_ratio": spec.ratio,
        "mode": spec.mode,
        "sample_seed": spec.sample_seed,
        "complement_part": spec.part if spec.mode == "complement" else None,
        "data": _where(data),
        "datasets": part.report(),
    }
    done = read_member_manifest(target) if (target / MEMBER_FILE).is_file() and not force else None
    if done is not None:
        if not _same_run(done.data, manifest, lambda: base.full().get("base_model_sha256")):
            raise BoomError("exists with different settings; pass --force to retrain it", path=target)
        logger.info("%s: already trained with these settings, skipped (--force retrains)", target)
        return target
    inputs = [*_sources(data), *([dev.path] if dev else [])]
    with output_guard(target, [base.model.path, *inputs], force=force):  # before the base is hashed
        manifest |= base.full()
        return run_training(
            target, base.model, [part], [""], manifest, config, spec.seed,
            force=force, callbacks=callbacks, dev=dev, inputs=inputs,
        )  # fmt: skip


def _loaded(
    data: DataSpec | Sequence[DataSpec],
    base: str,
    config: TrainConfig,
    dev: str | Path | None,
    on_bad_line: OnBadLine,
    data_config: str | None,
    data_split: str | None,
) -> tuple[dict[str, LoadedDataset], _Base, TrainConfig, DevSet | None]:
    """What the members of one run share: DATA read and checked, the base resolved, the config prompted, the dev set."""
    datasets = scan_training_data(data, on_bad_line, config=data_config, split=data_split)
    _check_instructions(config, [datasets], _where(data))
    resolved = _Base(base)
    config = _prompted(config, resolved)
    return datasets, resolved, config, _dev_set(config, data, dev)


def train_member(
    data: DataSpec | Sequence[DataSpec],
    base: str,
    spec: MemberSpec,
    out: str | Path,
    config: TrainConfig,
    *,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    dev: str | Path | None = None,
    data_config: str | None = None,
    data_split: str | None = None,
) -> Path:
    """Train one member into ``out/member-I-rRR`` and return that path.

    Self-contained (resolves the base and loads the data itself) and with picklable
    arguments, so a scheduler can run members on different machines. A finished member
    with the same settings is kept; an interrupted one resumes from its last checkpoint.
    ``dev``: what ``config.eval_steps`` evaluates on (default ``DATA/../dev``).
    ``data``: one source or several, as :func:`boom_merge.data.loading.scan_training_data`
    takes them (``data_config``, ``data_split`` for datasets ids).
    """
    datasets, resolved, config, dev_set = _loaded(data, base, config, dev, on_bad_line, data_config, data_split)
    return _train_loaded_member(
        data, datasets, resolved, spec, Path(out), config, force=force, callbacks=callbacks, dev=dev_set
    )


def train_members(
    data: DataSpec | Sequence[DataSpec],
    base: str,
    ratios: str,
    out: str | Path,
    config: TrainConfig,
    *,
    seed: int = 42,
    sampling: str = "without_replacement",
    member: int | None = None,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    dev: str | Path | None = None,
    data_config: str | None = None,
    data_split: str | None = None,
) -> list[Path]:
    """Train every member of a ratio spec (or only member ``member``) into ``out``; see :func:`train_member`."""
    specs = plan_members(ratios, seed=seed, sampling=sampling)
    if member is not None:
        if not 0 <= member < len(specs):
            raise BoomError(f"--member {member} is out of range: {ratios!r} has members 0..{len(specs) - 1}")
        specs = [specs[member]]
    datasets, resolved, config, dev_set = _loaded(data, base, config, dev, on_bad_line, data_config, data_split)
    return [
        _train_loaded_member(
            data, datasets, resolved, spec, Path(out), config, force=force, callbacks=callbacks, dev=dev_set
        )
        for spec in tqdm(specs, desc="members", unit="member")
    ]


def train_update(
    base: str,
    new_data: str | Path,
    history_data: str | Path,
    history_ratio: float,
    out: str | Path,
    config: TrainConfig,
    *,
    seed: int = 42,
    init: Literal["base", "existing"] = "base",
    existing: str | None = None,
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    dev: str | Path | None = None,
    data_config: str | None = None,
    data_split: str | None = None,
) -> Path:
    """Train an update model on all new data plus ``history_ratio`` of each old dataset.

    It starts from ``base`` (as the paper's update models do) or, with
    ``init="existing"``, from the ``existing`` model. Datasets are named
    ``new/NAME`` and ``history/NAME`` so each batch stays within one of them.
    ``dev``: what ``config.eval_steps`` evaluates on (default ``NEW_DATA/../dev``).
    ``data_config``, ``data_split``: for whichever of the two is a datasets id.
    """
    if not 0 < history_ratio <= 1:
        raise BoomError(f"--history-ratio must be in (0, 1], got {history_ratio}")
    if init not in ("base", "existing") or (init == "existing") != (existing is not None):
        raise BoomError("--init existing needs --existing MODEL, and --existing is only used with --init existing")
    if str(new_data) == str(history_data) or (Path(new_data).exists() and Path(new_data).resolve() == Path(history_data).resolve()):
        logger.warning("%s: --history-data is --new-data: the update trains on the new data twice (the members' "
                       "training data is what --history-data is for)", history_data)
    if data_config is not None and not any(map(is_datasets_id, (new_data, history_data))):
        raise BoomError(f"--data-config {data_config!r} applies to a Hugging Face dataset id (org/name); none is given")
    new_sets, old_sets = (
        scan_training_data(part, on_bad_line, config=data_config if is_datasets_id(part) else None, split=data_split)
        for part in (new_data, history_data)
    )
    _check_instructions(config, [new_sets, old_sets], _where(new_data))
    base_model = _Base(base)
    init_model = _Base(existing) if init == "existing" and existing is not None else base_model
    config = _prompted(config, init_model)  # the model trained (and saved) is INIT's
    dev_set = _dev_set(config, new_data, dev)
    new = Part(new_sets, {name: list(range(n)) for name, n in sizes(new_sets).items()})
    history = Part(old_sets, sample_ids(sizes(old_sets), history_ratio, seed))
    inputs = [new_data, history_data, *([dev_set.path] if dev_set else [])]
    with output_guard(Path(out), [base_model.model.path, init_model.model.path, *inputs], force=force):
        base_identity = base_model.full()  # hashed only once the output is checked and locked
        new_report, history_report = new.report(), history.report()
        manifest = common_manifest("update", base, config, seed, base_identity=base_identity) | {
            "mode": "without_replacement",
            "init": init,
            "init_model": init_model.full()["base_model"],
            "init_model_revision": init_model.model.revision,
            "init_model_sha256": init_model.full()["base_model_sha256"],
            "new_data": {"path": location(new_data), "datasets": new_report},
            "history": {"path": location(history_data), "history_ratio": history_ratio, "datasets": history_report},
            "datasets": {f"new/{k}": v for k, v in new_report.items()}
            | {f"history/{k}": v for k, v in history_report.items()},
        }
        return run_training(
            Path(out), init_model.model, [new, history], ["new/", "history/"], manifest, config, seed,
            force=force, callbacks=callbacks, dev=dev_set, inputs=inputs,
        )  # fmt: skip
