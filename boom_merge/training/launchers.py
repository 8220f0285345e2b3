"""Train members in parallel with an existing engine: one Ray task per member.

Owns: the Ray fan-out of members. It may not train itself (each task calls
:func:`~boom_merge.training.train_member`) and never writes.

Members are independent, so they fan out as Ray tasks on an existing cluster
(``address``) or on a local Ray runtime started for the run. Each task runs
:func:`boom_merge.training.train_member` (which resolves the base itself, so a Hub id is
downloaded on the node that needs it) and gets one GPU when the cluster has GPUs.
Data and output paths must be visible to every node (a shared file system). A member
that fails does not stop the others; finished members are kept, so rerunning the
same command trains only what is missing. Data parallelism inside one member is
``torchrun`` / ``accelerate launch``'s job (see docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from boom_merge.errors import BoomError
from boom_merge.lineage import location

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from boom_merge.data.loading import OnBadLine
    from boom_merge.data.sampling import MemberSpec
    from boom_merge.training.config import TrainConfig

logger = logging.getLogger(__name__)


def _train_one(
    data: str | list[str], base: str, spec: MemberSpec, out: str, config: TrainConfig, options: dict[str, Any]
) -> str:
    """Body of one Ray task (imports inside: it runs in a fresh worker process)."""
    from boom_merge.training.members import train_member

    return str(train_member(data, base, spec, out, config, **options))


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[Any]:
    """Yield the ``ray`` module, connected; a runtime started here is shut down afterwards."""
    try:
        import ray
    except ImportError:
        raise BoomError("--launcher ray needs Ray: pip install 'boom-merge[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise BoomError(f"cannot connect to the Ray cluster at {address}: {error}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_train_members(
    data: str | Path | Sequence[str | Path],
    base: str,
    ratios: str,
    out: str | Path,
    config: TrainConfig,
    *,
    seed: int = 42,
    sampling: str = "without_replacement",
    on_bad_line: OnBadLine = "fail",
    force: bool = False,
    address: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    dev: str | Path | None = None,
    data_config: str | None = None,
    data_split: str | None = None,
) -> list[Path]:
    """Train every member of ``ratios`` as its own Ray task and return their paths.

    ``address`` is an existing cluster (``ray://HOST:10001`` or ``HOST:6379``); None
    uses ``RAY_ADDRESS`` if set, else starts a local runtime on this machine.
    ``callbacks`` are pickled to every task (each task gets its own copies).
    """
    from boom_merge.data.sampling import plan_members

    specs = plan_members(ratios, seed=seed, sampling=sampling)
    # each data source as a path made absolute, or a datasets id as given
    data = location(data) if isinstance(data, (str, Path)) else [location(spec) for spec in data]
    base, out = location(base), str(Path(out).resolve())
    options = {"on_bad_line": on_bad_line, "force": force, "callbacks": list(callbacks),
               "dev": location(dev) if dev is not None else None, "data_config": data_config, "data_split": data_split}
    with _ray_session(address) as ray:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_train_one)
        refs = {spec.index: task.remote(data, base, spec, out, config, options) for spec in specs}
        logger.info("submitted %d members to Ray (%d GPU each)", len(refs), gpus)
        return [Path(path) for path in _gather(ray, refs)]


def _gather(ray: Any, refs: dict[int, Any]) -> Sequence[str]:
    """Wait for every task (with progress); raise one error naming each failed member."""
    results: dict[int, str] = {}
    failures: list[str] = []
    index_of = {ref: index for index, ref in refs.items()}
    pending = list(refs.values())
    with tqdm(total=len(refs), desc="members", unit="member") as progress:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            index = index_of[done[0]]
            try:
                results[index] = ray.get(done[0])
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, BaseException) else error
                message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                failures.append(f"member {index}: {type(cause).__name__}: {message}")
            progress.update(1)
    if failures:
        raise BoomError(f"{len(failures)} of {len(refs)} members failed ({'; '.join(sorted(failures))}); "
                        "finished members are kept, rerun to train the rest")
    return [results[index] for index in sorted(results)]
