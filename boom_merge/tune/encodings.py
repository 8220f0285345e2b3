"""Racing's encodings: each candidate encodes each dev text once, across the slice and the full stage.

Owns: the embeddings a candidate keeps from its slice stage for its full stage, and how the texts of
one encode call are grouped into forward passes. It never merges, scores or touches files.

The slice's queries and documents are a subset of the full caps (:mod:`.devset`), so a candidate's
full scoring needs only the texts its slice scoring did not encode. A text's embedding also depends,
at float rounding (~1e-7), on the batch it is padded with; so that a full score is the same bit for
bit whether its slice texts were encoded in the slice stage (racing) or now (``--no-racing``, or a
candidate whose slice embeddings were not kept), every encode call is split the same way in every
case: its distinct texts that belong to the slice *of the task being scored* (:attr:`EncodingCache.task`,
set by the scorer), in call order, form one group, the rest another, and each group is encoded by one
call of the model's own ``encode`` (sentence-transformers sorts and batches it) or taken from the kept
embeddings of that very group (the same task, options and texts in the same order; any other group is
encoded whole). A slice-stage call is one group, the slice's; the full stage's slice group is that same
list of texts. Slice membership is per task, and a group is reused only whole: a text that two tasks
share (real dev sets have them), or that one task has both as a slice query and as a document outside
its slice, never brings an embedding computed in another batch. In the latter, rare case the group is
encoded again (racing then encodes a little more than ``--no-racing``, never other numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: the embeddings racing keeps between a candidate's slice and full stages, at most (all candidates);
#: past it a candidate's slice texts are encoded again at the full stage (the same numbers, more time)
KEEP_ENCODED_BYTES = 1024**3


class EncodingCache:
    """Embeddings kept per candidate key for its full stage; ``encoded`` counts texts put through the model.

    ``slice_texts``: per task name, the texts of its slice; ``task``: the task being scored (the scorer
    sets it before each task; None: no slice, every call one group)."""

    def __init__(self, slice_texts: Mapping[str | None, frozenset[str]] | None = None) -> None:
        self.slice_texts = dict(slice_texts or {})
        self.task: str | None = None
        self.kept: dict[str, dict[tuple, np.ndarray]] = {}
        self.kept_bytes = 0
        self.encoded = 0

    def forget(self, key: str) -> None:
        """Drop what ``key``'s candidate kept (after its full stage)."""
        self.kept_bytes -= sum(vectors.nbytes for vectors in self.kept.pop(key, {}).values())

    def attach(self, model: SentenceTransformer, key: str | None = None, *, keep: bool = False) -> None:
        """Route ``model.encode`` through the grouping (module docstring); with ``key``, read the embeddings
        ``key`` kept and, with ``keep``, keep what is encoded now (within :data:`KEEP_ENCODED_BYTES`)."""
        groups = self.kept.setdefault(key, {}) if key is not None else {}
        own = model.encode

        def encode(inputs: Any, **kwargs: Any) -> Any:
            options = tuple(sorted((k, v) for k, v in kwargs.items() if k != "show_progress_bar"))
            if not inputs or not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs) or \
                    not all(isinstance(v, (str, int, float, bool, type(None))) for _, v in options):
                return own(inputs, **kwargs)
            distinct = list(dict.fromkeys(inputs))
            in_slice = self.slice_texts.get(self.task, frozenset())
            found: dict[str, np.ndarray] = {}
            for group in ([t for t in distinct if t in in_slice], [t for t in distinct if t not in in_slice]):
                got = self._group(own, group, (self.task, options, *group), kwargs, groups, keep and key is not None)
                if got is None:
                    return own(inputs, **kwargs)  # not a 2-d array of embeddings: nothing to group or keep
                found.update(zip(group, got))
            return np.stack([found[text] for text in inputs])

        model.encode = encode  # type: ignore[method-assign]

    def _group(self, own: Any, group: Sequence[str], name: tuple, kwargs: dict[str, Any],
               groups: dict[tuple, np.ndarray], keep: bool) -> np.ndarray | None:
        """The embeddings of one group (``name``: its task, options and texts): kept ones when this very
        group was kept, else one call of ``own``."""
        if not group:
            return np.empty((0, 0))
        if name in groups:
            return groups[name]
        embeddings = own(list(group), **kwargs)
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
            return None
        self.encoded += len(group)
        if keep and self.kept_bytes + embeddings.nbytes <= KEEP_ENCODED_BYTES:
            groups[name] = embeddings
            self.kept_bytes += embeddings.nbytes
        return embeddings
