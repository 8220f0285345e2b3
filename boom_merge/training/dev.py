"""What a training run evaluates on every ``--eval-steps``: a BEIR dev split or held-out pairs.

Owns: the evaluators a run uses during training. It never writes (the trainer logs their scores)
and reads only splits with ``qrels/dev.tsv`` or held-out pairs, never ``qrels/test.tsv``.

* a dev split as ``boom-merge data build`` writes it (``CORPUS/dev/NAME/{queries.jsonl,
  corpus.jsonl,qrels/dev.tsv}``): one ``InformationRetrievalEvaluator`` per dataset (nDCG@10,
  queries with the dataset's prompt), run in sequence;
* otherwise a directory of held-out training pairs (``NAME.jsonl``, the training format):
  the training loss on them, per dataset.

By default a run evaluates on ``DATA/../dev`` when that exists. Reads only; owns no output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.training.config import TrainConfig

_QRELS = Path("qrels") / "dev.tsv"


@dataclass(frozen=True)
class DevSet:
    """An evaluator (dev split) or an eval dataset (held-out pairs), and where it came from."""

    path: Path
    kind: str  # "retrieval" | "pairs"
    datasets: tuple[str, ...]
    evaluator: Any = None
    pairs: Any = None

    def report(self) -> dict[str, Any]:
        """What the manifest records."""
        return {"path": str(self.path), "kind": self.kind, "datasets": list(self.datasets)}


def default_dev(data: str | Path) -> Path | None:
    """``DATA/../dev`` when DATA is a corpus' train dir with a dev split beside it."""
    candidate = Path(data).resolve().parent / "dev"
    return candidate if candidate.is_dir() and any(candidate.glob(f"*/{_QRELS.as_posix()}")) else None


def load_dev(path: str | Path, config: TrainConfig, seed: int) -> DevSet:
    """The dev set at ``path``: a BEIR dev split if it has ``NAME/qrels/dev.tsv``, else held-out pairs."""
    path = Path(path)
    if not path.exists():
        raise BoomError("no such dev split or held-out pairs", path=path)
    names = sorted(q.parent.parent.name for q in path.glob(f"*/{_QRELS.as_posix()}"))
    if names:
        return DevSet(path, "retrieval", tuple(names), evaluator=_retrieval_evaluator(path, names, config))
    return _held_out_pairs(path, config, seed)


def _retrieval_evaluator(dev: Path, names: list[str], config: TrainConfig) -> Any:
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
        SequentialEvaluator,
    )

    from boom_merge.evaluation.corpus import read_retrieval

    evaluators = []
    for name in names:
        split = read_retrieval(dev.parent, name, split=dev.name)
        evaluators.append(
            InformationRetrievalEvaluator(
                queries=split.queries,
                corpus={doc: f"{d['title']} {d['text']}".strip() for doc, d in split.corpus.items()},
                relevant_docs={qid: {doc for doc, score in docs.items() if score > 0} for qid, docs in split.qrels.items()},
                name=f"dev_{name}",
                query_prompt=config.prompt_for(name) or None,
                batch_size=config.batch_size,
                write_csv=False,
            )
        )
    return SequentialEvaluator(evaluators, main_score_function=lambda scores: sum(scores) / len(scores))


def _held_out_pairs(path: Path, config: TrainConfig, seed: int) -> DevSet:
    from datasets import Dataset, DatasetDict

    from boom_merge.data.loading import scan_training_data
    from boom_merge.training.rows import training_rows

    datasets = scan_training_data(path)
    pairs = DatasetDict(
        {
            name: Dataset.from_dict(training_rows(data.examples, range(len(data.examples)), config, seed, name,
                                                    data.source))
            for name, data in sorted(datasets.items())
        }
    )
    return DevSet(path, "pairs", tuple(pairs), pairs=pairs)
