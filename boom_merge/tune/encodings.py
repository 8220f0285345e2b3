"""Racing's encodings: each candidate encodes each dev text once, across the slice and the full stage.

Owns: the embeddings a candidate keeps from its slice stage for its full stage, and how the texts of
one encode call are grouped into forward passes. It never merges, scores or touches files.

The slice's queries and documents are a subset of the full caps (:mod:`.devset`), so a candidate's
full scoring needs only the texts its slice scoring did not encode. A text's embedding also depends,
at float rounding (~1e-7), on the batch it is padded with; so that a full score is the same bit for
bit whether its slice texts were encoded in the slice stage (racing) or now (``--no-racing``, or a
candidate whose slice embeddings were not kept), every encode call is split the same way in every
case: its distinct texts that belong to the slice, in call order, form one group, the rest another,
and each group is encoded by one call of the model's own ``encode`` (sentence-transformers sorts
and batches it) or taken whole from the kept embeddings (a group with a text missing is encoded whole).
A slice-stage call is one group, the slice's; the full stage's slice group is that same list of texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: the embeddings racing keeps between a candidate's slice and full stages, at most (all candidates);
#: past it a candidate's slice texts are encoded again at the full stage (the same numbers, more time)
KEEP_ENCODED_BYTES = 1024**3


class EncodingCache:
    """Embeddings kept per candidate key for its full stage; ``encoded`` counts texts put through the model."""

    def __init__(self, slice_texts: frozenset[str] = frozenset()) -> None:
        self.slice_texts = slice_texts
        self.kept: dict[str, dict[tuple, np.ndarray]] = {}
        self.kept_bytes = 0
        self.encoded = 0

    def forget(self, key: str) -> None:
        """Drop what ``key``'s candidate kept (after its full stage)."""
        self.kept_bytes -= sum(vector.nbytes for vector in self.kept.pop(key, {}).values())

    def attach(self, model: SentenceTransformer, key: str | None = None, *, keep: bool = False) -> None:
        """Route ``model.encode`` through the grouping (module docstring); with ``key``, read the embeddings
        ``key`` kept and, with ``keep``, keep what is encoded now (within :data:`KEEP_ENCODED_BYTES`)."""
        vectors = self.kept.setdefault(key, {}) if key is not None else {}
        own = model.encode

        def encode(inputs: Any, **kwargs: Any) -> Any:
            options = tuple(sorted((k, v) for k, v in kwargs.items() if k != "show_progress_bar"))
            if not inputs or not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs) or \
                    not all(isinstance(v, (str, int, float, bool, type(None))) for _, v in options):
                return own(inputs, **kwargs)
            distinct = list(dict.fromkeys(inputs))
            found: dict[str, np.ndarray] = {}
            for group in ([t for t in distinct if t in self.slice_texts], [t for t in distinct if t not in self.slice_texts]):
                got = self._group(own, group, options, kwargs, vectors, keep and key is not None)
                if got is None:
                    return own(inputs, **kwargs)  # not a 2-d array of embeddings: nothing to group or keep
                found.update(got)
            return np.stack([found[text] for text in inputs])

        model.encode = encode  # type: ignore[method-assign]

    def _group(self, own: Any, group: Sequence[str], options: tuple, kwargs: dict[str, Any],
               vectors: dict[tuple, np.ndarray], keep: bool) -> dict[str, np.ndarray] | None:
        """The embeddings of one group: kept ones when every text has one, else one call of ``own``."""
        if not group:
            return {}
        if all((options, text) in vectors for text in group):
            return {text: vectors[(options, text)] for text in group}
        embeddings = own(list(group), **kwargs)
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
            return None
        self.encoded += len(group)
        got = dict(zip(group, embeddings))
        if keep and self.kept_bytes + embeddings.nbytes <= KEEP_ENCODED_BYTES:
            new = {(options, text): vector for text, vector in got.items() if (options, text) not in vectors}
            vectors.update(new)
            self.kept_bytes += sum(vector.nbytes for vector in new.values())
        return got
