"""``--keep-checkpoints K``: K evenly spaced checkpoints of a run kept as complete models.

Owns: the kept checkpoints (``keep/`` in the work dir, ``MEMBER/checkpoints/``). It never writes
a manifest itself (:func:`boom_merge.lineage.write_member_manifest` does).

While training, checkpoint ``k`` of K (step ``ceil(k * total / K)``, so the last is the
final step) is saved as a sentence-transformers model into the run's work directory
(``keep/step-N``, written under a temporary name, then renamed); an interrupted run keeps
the ones it saved. When the run finishes they move into ``MEMBER/checkpoints/step-N/``,
each with the member's manifest plus ``"checkpoint": {"step", "steps"}``, so a soup of
them (``boom-merge recipe --checkpoints MEMBER``) keeps the member's provenance. Only the
main process writes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.lineage import MEMBER_FILE, write_member_manifest

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CHECKPOINTS_DIR = "checkpoints"


def keep_steps(total: int, keep: int) -> list[int]:
    """The steps whose models are kept: K evenly spaced, the last one the final step."""
    return sorted({math.ceil(k * total / keep) for k in range(1, keep + 1)}) if keep and total else []


def keep_callback(model: SentenceTransformer, work: Path, keep: int) -> Any:
    """A ``TrainerCallback`` saving ``model`` at the kept steps into ``work/keep``."""
    from transformers import TrainerCallback

    class KeepCheckpoints(TrainerCallback):
        def __init__(self) -> None:
            self.steps: set[int] = set()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps = set(keep_steps(state.max_steps, keep))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in self.steps and state.is_world_process_zero:
                target = work / "keep" / f"step-{state.global_step}"
                partial = target.with_name(f".{target.name}.partial")
                shutil.rmtree(partial, ignore_errors=True)
                model.save(str(partial))
                shutil.rmtree(target, ignore_errors=True)
                partial.rename(target)

    return KeepCheckpoints()


def move_kept(work: Path, out: Path, manifest: dict[str, Any], total: int) -> list[Path]:
    """Move the kept models into ``out/checkpoints/``, each with its manifest; return their paths."""
    kept = sorted((work / "keep").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    moved = []
    for source in kept:
        step = int(source.name.split("-")[1])
        target = out / CHECKPOINTS_DIR / source.name
        target.parent.mkdir(exist_ok=True)
        shutil.move(str(source), target)
        record = {k: v for k, v in manifest.items() if k != "training_result"}
        record["checkpoint"] = {"step": step, "steps": total}
        write_member_manifest(target, record)
        moved.append(target)
    return moved


def kept_checkpoints(member: str | Path) -> list[Path]:
    """A member's kept checkpoints, in step order ([] when it kept none)."""
    folder = Path(member) / CHECKPOINTS_DIR
    found = [p for p in folder.glob("step-*") if p.name.split("-")[1].isdigit() and (p / MEMBER_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))
