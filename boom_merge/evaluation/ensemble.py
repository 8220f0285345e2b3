"""The embedding ensemble of several models, as an MTEB encoder.

Owns: the ensemble encoder (the mean of normalised member embeddings). It never loads or checks
models (:mod:`.run` hands it the members' encoders) and writes nothing.

A merge approximates this ensemble at 1/M of its inference cost: every text is encoded
by each of the M members, their L2-normalised embeddings are averaged and the mean is
renormalised (cosine similarity). ``evaluate_models(..., ensembles={label: dirs})``
evaluates it beside ordinary models; this module holds the encoder itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader


def normalise_rows(embeddings: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; zero rows stay zero)."""
    array = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


def mean_of_normalised(member_embeddings: Sequence[Any]) -> np.ndarray:
    """The ensemble embedding: mean of the members' normalised rows, renormalised."""
    return normalise_rows(np.mean([normalise_rows(e) for e in member_embeddings], axis=0))


class EnsembleEncoder(AbsEncoder):
    """Encodes with every member (each with its own prompts) and averages.

    ``members`` are MTEB encoders, e.g. ``SentenceTransformerEncoderWrapper``; the
    ensemble scores with cosine similarity under the name ``boom-merge/LABEL``.
    """

    def __init__(self, members: Sequence[AbsEncoder], label: str) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.model = None
        # evaluation replaces the revision and sizes (evaluation.meta.ensemble_meta)
        self.mteb_model_meta = members[0].mteb_model_meta.model_copy(
            update={"name": f"boom-merge/{label}", "similarity_fn_name": ScoringFunction.COSINE}
        )

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """The members' embeddings of ``inputs``, combined by :func:`mean_of_normalised`."""
        return mean_of_normalised(
            [
                member.encode(
                    inputs,
                    task_metadata=task_metadata,
                    hf_split=hf_split,
                    hf_subset=hf_subset,
                    prompt_type=prompt_type,
                    **kwargs,
                )
                for member in self.members
            ]
        )
