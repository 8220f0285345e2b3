"""Independent reference implementations used to check merges (numpy, float64).

They follow the published algorithms directly (including Multi-SLERP's tangent-space
step) and share no code with ``boom_merge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def np_multislerp(tensors: Sequence[np.ndarray], weights: Sequence[float], base: np.ndarray | None = None,
                  eps: float = 1e-8) -> np.ndarray:
    """Barycentric interpolation on the hypersphere, linear where the mean vanishes."""
    x = np.stack([np.asarray(t, dtype=np.float64).ravel() for t in tensors])
    if base is not None:
        x = x - np.asarray(base, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    norms = np.linalg.norm(x, axis=1)
    units = x / (norms[:, None] + eps)
    mean = (units * w[:, None]).sum(0)
    if np.linalg.norm(mean) < eps:
        result = (x * w[:, None]).sum(0)
    else:
        mean = mean / np.linalg.norm(mean)
        tangents = units - (units @ mean)[:, None] * mean
        tangent = (tangents * w[:, None]).sum(0)
        tn = np.linalg.norm(tangent) + eps
        result = (mean * np.cos(tn) + tangent * np.sin(tn) / tn) * float((norms * w).sum())
    if base is not None:
        result = result + np.asarray(base, dtype=np.float64).ravel()
    return result.reshape(np.shape(tensors[0]))


def np_linear(tensors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return sum(wi * np.asarray(t, dtype=np.float64) for wi, t in zip(w, tensors))


def hand_merged_embeddings(inputs: Sequence[str | Path], merge_fn, texts: Sequence[str]) -> np.ndarray:
    """Embed ``texts`` with the first input after replacing every floating weight of the
    whole sentence-transformers pipeline (transformer and Dense layers) by
    ``merge_fn(list_of_arrays)``; non-floating buffers are kept."""
    from sentence_transformers import SentenceTransformer

    models = [SentenceTransformer(str(p), device="cpu") for p in inputs]
    states = [m.state_dict() for m in models]
    merged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            value = merge_fn([s[key].double().numpy() for s in states])
            merged[key] = torch.from_numpy(np.asarray(value)).to(first.dtype)
        else:
            merged[key] = first
    target = models[0]
    target.load_state_dict(merged)
    return target.encode(list(texts), convert_to_numpy=True)


def np_ties(tensors: Sequence[np.ndarray], base: np.ndarray, weights: Sequence[float], density: float) -> np.ndarray:
    """TIES (Yadav et al. 2023) as mergekit runs it with ``normalize: true``: keep each task vector's
    ``max(1, int(density * n))`` largest magnitudes, weight them, elect the sign of their sum (ties: +),
    average the entries that agree with it (weighted), add the base."""
    base = np.asarray(base, dtype=np.float64)
    kept = []
    for tensor in tensors:
        delta = (np.asarray(tensor, dtype=np.float64) - base).ravel()
        k = max(1, int(density * delta.size))
        mask = np.zeros(delta.size)
        mask[np.argsort(-np.abs(delta), kind="stable")[:k]] = 1
        kept.append(delta * mask)
    w = np.asarray(weights, dtype=np.float64)[:, None]
    weighted = np.stack(kept) * w
    elected = np.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = np.sign(weighted) == elected
    divisor = (w * agree).sum(0)
    divisor[divisor == 0] = 1
    return base + ((weighted * agree).sum(0) / divisor).reshape(base.shape)
