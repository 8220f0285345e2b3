"""Query adapters: keep serving an index built with OLD after an update to NEW.

Owns fitting a linear map ``W`` with ``W · NEW(text) ≈ OLD(text)`` (orthogonal
Procrustes, or affine least squares with a ridge) on texts from a corpus' train split,
and saving it as a sentence-transformers model: NEW's modules, then a ``Dense`` module
holding ``W`` (and the bias), then ``Normalize``. Queries encoded with that model search
an index of OLD-encoded documents (Drift-Adapter, EMNLP 2025). Scoring the adapter
against the index is :mod:`boom_merge.incremental.drift`'s job; this module never reads test splits.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

AdapterKind = Literal["orthogonal", "affine"]
ADAPTER_FILE = "boom_adapter.json"
DEFAULT_FIT_TEXTS = 2000


@dataclass(frozen=True)
class Adapter:
    """``y = weight @ x + bias`` maps a NEW embedding ``x`` into OLD's space."""

    weight: np.ndarray  # (old_dim, new_dim)
    bias: np.ndarray | None
    kind: AdapterKind

    def apply(self, new: np.ndarray) -> np.ndarray:
        """Map rows of NEW embeddings into OLD's space and re-normalise them."""
        mapped = new @ self.weight.T + (0.0 if self.bias is None else self.bias)
        return mapped / np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12)


def fit_procrustes(new: np.ndarray, old: np.ndarray) -> Adapter:
    """The orthogonal ``W`` minimising ``||new @ W.T - old||_F`` (Schönemann 1966).

    With ``U S Vᵀ = svd(oldᵀ new)``, ``W = U Vᵀ``; for different widths W is semi-orthogonal.
    Where the texts leave directions undetermined (``S`` has zeros: fewer fit texts than the
    width, or texts spanning less), any rotation of them is as good, and ``U Vᵀ`` would pick an
    arbitrary one that scrambles queries there. Of all the optimal ``W``, the one nearest the
    identity is taken: the undetermined directions ``V⊥`` go to ``U⊥`` by the rotation nearest the
    identity, ``polar(U⊥ᵀ V⊥)`` (the limit of the identity-regularised ``polar(oldᵀ new + λI)``
    as λ -> 0). Between different widths there is no identity to keep: too few texts are refused.
    """
    _check_pairs(new, old)
    product = old.T.astype(np.float64) @ new.astype(np.float64)
    u, s, vt = np.linalg.svd(product, full_matrices=product.shape[0] == product.shape[1])
    rank = int((s > s[0] * max(product.shape) * np.finfo(np.float64).eps).sum()) if s.size and s[0] > 0 else 0
    if rank == len(s):
        return Adapter(weight=u @ vt, bias=None, kind="orthogonal")
    if product.shape[0] != product.shape[1]:
        raise BoomError(f"{len(new)} fit texts span {rank} dimensions; an orthogonal adapter from width "
                        f"{product.shape[1]} to {product.shape[0]} needs {min(product.shape)}: fit on more texts")
    logger.warning("%d fit texts span %d of the %d dimensions: the others are kept as they are "
                   "(fit on more texts to fit them)", len(new), rank, len(s))
    rest_old, rest_new = u[:, rank:], vt[rank:].T
    q_u, _, q_vt = np.linalg.svd(rest_old.T @ rest_new)
    weight = u[:, :rank] @ vt[:rank] + rest_old @ (q_u @ q_vt) @ rest_new.T
    return Adapter(weight=weight, bias=None, kind="orthogonal")


def fit_affine(new: np.ndarray, old: np.ndarray, *, ridge: float = 1e-3) -> Adapter:
    """``W, b`` minimising ``||new @ W.T + b - old||² + ridge·||W||²`` (bias not penalised)."""
    _check_pairs(new, old)
    if ridge < 0:
        raise BoomError(f"ridge must be >= 0, got {ridge}")
    x, y = new.astype(np.float64), old.astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * len(x) * np.eye(x.shape[1])
    weight = np.linalg.solve(gram, xc.T @ yc).T
    return Adapter(weight=weight, bias=y_mean - weight @ x_mean, kind="affine")


def _check_pairs(new: np.ndarray, old: np.ndarray) -> None:
    if new.ndim != 2 or old.ndim != 2 or len(new) != len(old):
        raise BoomError(f"adapter needs paired embeddings, got shapes {new.shape} and {old.shape}")
    if len(new) < 2:
        raise BoomError("adapter needs at least 2 texts to fit")
    if not (np.isfinite(new).all() and np.isfinite(old).all()):
        raise BoomError("adapter embeddings contain NaN or Inf")


def fit_texts(corpus: str | Path, *, limit: int = DEFAULT_FIT_TEXTS, seed: int = 0) -> list[str]:
    """Up to ``limit`` distinct texts (queries and positives) from ``CORPUS/train/*.jsonl``.

    Only the train split is read, so the texts an adapter is scored on (test or dev
    splits) are never the ones it was fitted on.
    """
    train = Path(corpus) / "train"
    files = sorted(train.glob("*.jsonl")) if train.is_dir() else []
    if not files:
        raise BoomError("no train split (train/*.jsonl) to fit an adapter on", path=corpus)
    texts: dict[str, None] = {}
    for file in files:
        try:
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    for text in [row.get("query"), *row.get("pos", [])]:
                        if isinstance(text, str) and text.strip():
                            texts[text] = None
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise BoomError(f"unreadable training file ({type(error).__name__})", path=file) from None
    if len(texts) < 2:
        found = "no text" if not texts else "only 1 distinct text"
        raise BoomError(f"train split ({', '.join(f.name for f in files)}) holds {found} (query or pos) to fit "
                        "an adapter on; it needs at least 2", path=corpus)
    chosen = list(texts)
    random.Random(seed).shuffle(chosen)
    return chosen[:limit]


def fit_adapter(
    old: np.ndarray, new: np.ndarray, *, kind: AdapterKind = "orthogonal", ridge: float = 1e-3
) -> Adapter:
    """Fit the map from ``new`` to ``old`` embeddings of the same texts."""
    if kind == "orthogonal":
        return fit_procrustes(new, old)
    if kind == "affine":
        return fit_affine(new, old, ridge=ridge)
    raise BoomError(f"unknown adapter kind {kind!r}; choose orthogonal or affine")


def save_adapter_model(new_model: str | Path, adapter: Adapter, out: str | Path, *, force: bool = False,
                       inputs: tuple[str | Path, ...] = (), info: dict | None = None) -> Path:
    """Write NEW + Dense(W) + Normalize to ``out`` as a sentence-transformers model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize

    from boom_merge.outputs import atomic_output_dir

    model = SentenceTransformer(str(new_model), device="cpu")
    old_dim, new_dim = adapter.weight.shape
    if model.get_embedding_dimension() != new_dim:
        raise BoomError(f"adapter expects {new_dim}-dim embeddings, the model gives "
                        f"{model.get_embedding_dimension()}", path=new_model)
    dense = Dense(new_dim, old_dim, bias=adapter.bias is not None, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(adapter.weight.astype(np.float32)))
        if adapter.bias is not None:
            dense.linear.bias.copy_(torch.from_numpy(adapter.bias.astype(np.float32)))
    if not isinstance(model[-1], Normalize):  # the map was fitted on unit-norm embeddings
        model.append(Normalize())
    model.append(dense)
    model.append(Normalize())
    with atomic_output_dir(out, force=force, inputs=(new_model, *inputs)) as tmp:
        model.save(str(tmp))
        record = {"kind": adapter.kind, "new_model": str(new_model), "old_dim": old_dim, "new_dim": new_dim,
                  **(info or {})}
        (tmp / ADAPTER_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return Path(out)
