"""The BOOM merge methods, written against mergekit's ``merge_method`` decorator.

Owns: the kernels of ``boom`` and ``boom_incremental`` and :data:`BOOM_METHODS`. It never reads
or writes files (mergekit does) and imports no other boom-merge module.

``boom`` merges the M bag members of one base into one model; ``boom_incremental``
folds an update model into an existing model. Both are registered with mergekit's
registry by :func:`register_methods` (called by the import hook in ``_hook.py``), so
plain ``mergekit-yaml`` recipes can name them.

Multi-SLERP here is mergekit's ``multislerp``: project each input onto the unit sphere,
take the normalised weighted mean direction, and rescale it to the weighted mean
norm. mergekit also projects onto the tangent space at that mean and maps back, but
that step cancels exactly (sum_i w_i (u_i - <u_i, m> m) = |s| m - |s| m = 0 for
s = sum_i w_i u_i, m = s / |s|), so we compute the same result in one streaming pass
with one accumulator instead of stacking M copies of every tensor. Where the mean
direction vanishes (all inputs zero, or antipodal inputs) we fall back to the linear
average instead of raising: zero tensors such as MiniLM's ``pooler.dense.bias`` then
merge to zero.

Norms are reduced in float32 blocks of :data:`NORM_BLOCK` elements and summed in
float64 (:func:`tensor_norm`): torch's float32 reduction over a whole embedding matrix
(30522 x 384) is off by ~5e-4 relative, which moved every merged weight by ~1e-4.

With a base, ``scale`` (t) scales the merged delta: ``base + t * merge(members - base)``
(WiSE-FT of the merge; with one member, WiSE-FT of that member). t = 1 skips the step.

Both kernels refuse non-finite input (:class:`NonFiniteInputError`, naming the tensor and the
input's id), whichever door calls them: ``boom-merge merge``, plain ``mergekit-yaml``, mergekit's
in-memory API, ``SentenceTransformer.merge``. NaN and Inf propagate into every merged element
they touch, so a Multi-SLERP needs no extra pass (the norms it computes over every input
element are finite exactly when the inputs are, up to float32 overflow), a linear merge checks
its *output* with one float32 sum (:func:`_refuse_non_finite`), and the culprit is looked for
among the inputs only when a norm or that sum is not finite; an input returned
as it is (one member, alpha = 0 or 1) is that output, and an input a kernel leaves out (the
updates at alpha = 0, the existing model at alpha = 1) is not read. The inputs are not read again.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import torch
from mergekit.merge_methods import (
    BasePolicy,
    InputContract,
    MergeMethod,
    PerNonBase,
    TensorGroup,
    merge_method,
)
from pydantic import Field
from typing_extensions import Annotated

Interpolation = Literal["slerp", "linear"]
EPS = 1e-8
NORM_BLOCK = 1024


class NonFiniteInputError(ValueError):
    """An input tensor of a BOOM kernel holds NaN or Inf: ``tensor`` (its name, when mergekit
    gives one) of the input whose id is ``input_id`` (mergekit's ``ModelReference`` under
    ``run_merge``, the input's index under ``merge_tensors`` / ``merge_state_dicts``)."""

    def __init__(self, tensor: str | None, input_id: Hashable):
        self.tensor, self.input_id = tensor, input_id
        super().__init__(f"tensor {tensor!r} of input {input_id} contains NaN or Inf values")


class _NonFiniteNorm(ArithmeticError):
    """A norm of a Multi-SLERP is not finite (an input holds NaN/Inf, or overflows float32)."""


def _refuse_non_finite(group: TensorGroup, result: torch.Tensor | None) -> torch.Tensor:
    """``result``, unless it is not finite because an input is not: then raise naming that input.

    One float32 sum over the output (a NaN or Inf in any input reaches it); the inputs are
    searched element-wise only when that sum is not finite (or there is no ``result``: a norm
    was not). Finite inputs whose merge overflows are returned as they are.
    """
    if result is not None and (not result.is_floating_point()
                               or bool(torch.isfinite(result.sum(dtype=torch.float32)))):
        return result
    for entry in (*group.non_base, *((group.base,) if group.base is not None else ())):
        tensor = entry.tensor.float() if entry.tensor.element_size() == 1 else entry.tensor
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteInputError(group.metadata.name, entry.id)
    if result is None:
        raise ValueError(f"tensor {group.metadata.name!r}: its norms overflow float32")
    return result


def _checked_combine(
    group: TensorGroup,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    interpolation: Interpolation,
    origin: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """:func:`combine`, refusing NaN/Inf input: a Multi-SLERP's norms see every input element
    (a free check); otherwise one sum over the output (:func:`_refuse_non_finite`)."""
    try:
        merged = combine(tensors, weights, interpolation, origin, scale)
    except _NonFiniteNorm:
        return _refuse_non_finite(group, None)
    if interpolation == "slerp" and len(tensors) > 1:
        return merged
    return _refuse_non_finite(group, merged)


def tensor_norm(tensor: torch.Tensor) -> float:
    """Euclidean norm to float32 rounding at any size: float32 block norms, summed in float64."""
    flat = tensor.reshape(-1)
    if flat.dtype == torch.float64:
        return float(torch.linalg.vector_norm(flat))
    whole = flat.numel() // NORM_BLOCK * NORM_BLOCK
    squares = flat[whole:].double().square().sum()
    if whole:
        blocks = torch.linalg.vector_norm(flat[:whole].view(-1, NORM_BLOCK), dim=1)
        squares += blocks.double().square().sum()
    return math.sqrt(float(squares))


def _accumulation_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"merge weights must sum to a positive number, got {list(weights)}")
    return [float(w) / total for w in weights]


def linear_combination(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    origin: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """``origin + scale * sum_i w_i (t_i - origin)`` with normalised weights, in float32 or wider."""
    weights = _normalised(weights)
    dtype = _accumulation_dtype(tensors[0])
    wide_origin = None if origin is None else origin.to(dtype)
    result = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    for tensor, weight in zip(tensors, weights):
        result.add_(_delta(tensor, wide_origin, dtype), alpha=weight)
    if wide_origin is not None:
        if scale != 1.0:
            result.mul_(scale)
        result.add_(wide_origin)
    return result.to(tensors[0].dtype)


def _delta(tensor: torch.Tensor, wide_origin: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``tensor - origin`` in ``dtype`` (one widened copy of ``tensor`` at a time)."""
    wide = tensor.to(dtype)
    return wide if wide_origin is None else (wide.sub_(wide_origin) if wide is not tensor else wide - wide_origin)


def spherical_combination(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    origin: torch.Tensor | None = None,
    scale: float = 1.0,
    eps: float = EPS,
) -> torch.Tensor:
    """Multi-SLERP of ``tensors`` (minus ``origin``) with normalised weights, plus ``origin``
    after scaling the merged delta by ``scale``.

    Equals mergekit's ``multislerp`` wherever that one is defined; falls back to
    :func:`linear_combination` where the weighted mean direction vanishes.
    """
    weights = _normalised(weights)
    dtype = _accumulation_dtype(tensors[0])
    wide_origin = None if origin is None else origin.to(dtype)
    direction = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    mean_norm = 0.0
    for tensor, weight in zip(tensors, weights):
        delta = _delta(tensor, wide_origin, dtype)
        norm = tensor_norm(delta)
        direction.add_(delta, alpha=weight / (norm + eps))
        mean_norm += weight * norm
    direction_norm = tensor_norm(direction)
    if not math.isfinite(mean_norm + direction_norm):
        raise _NonFiniteNorm(f"Multi-SLERP norms {mean_norm}, {direction_norm}")
    if direction_norm < eps:
        return linear_combination(tensors, weights, origin, scale)
    result = direction.mul_(mean_norm / direction_norm)
    if wide_origin is not None and scale != 1.0:
        result.mul_(scale)
    if wide_origin is not None:
        result.add_(wide_origin)
    return result.to(tensors[0].dtype)


def combine(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    interpolation: Interpolation,
    origin: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Merge tensors with the chosen interpolation; non-floating tensors are copied.

    With ``origin``, ``scale`` multiplies the merged delta before ``origin`` is added back.
    """
    if not tensors[0].is_floating_point():
        return (origin if origin is not None else tensors[0]).clone()
    if len(tensors) == 1 and origin is not None:
        return linear_combination(tensors, [1.0], origin, scale)
    if interpolation == "slerp":
        return spherical_combination(tensors, weights, origin, scale)
    return linear_combination(tensors, weights, origin, scale)


@merge_method(
    name="boom",
    pretty_name="BOOM (bagging-based robust model merging)",
    reference_url="https://arxiv.org/abs/2602.05787",
    contract=InputContract(base=BasePolicy.OPTIONAL, min_non_base=1),
)
def boom_merge(
    group: TensorGroup,
    weight: PerNonBase[Annotated[float, Field(ge=0)]] = 1.0,
    interpolation: Interpolation = "slerp",
    scale: Annotated[float, Field(ge=0)] = 1.0,
) -> torch.Tensor:
    """Merge bag members; with a base, merge their deltas from it and add ``scale`` times that back."""
    members = group.non_base
    origin = group.base.tensor if group.base is not None else None
    if scale != 1.0 and origin is None:
        raise ValueError(f"boom: scale={scale} needs a base_model (output = base + scale * merged delta)")
    if len(members) == 1 and scale == 1.0:
        return _refuse_non_finite(group, members[0].tensor)
    return _checked_combine(group, [entry.tensor for entry in members], weight.values_for(members), interpolation,
                            origin, scale)


@merge_method(
    name="boom_incremental",
    pretty_name="BOOM incremental update",
    reference_url="https://arxiv.org/abs/2602.05787",
    contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1),
)
def boom_incremental_merge(
    group: TensorGroup,
    weight: PerNonBase[Annotated[float, Field(ge=0)]] = 1.0,
    update_weight: Annotated[float, Field(ge=0, le=1)] = 0.5,
    interpolation: Interpolation = "slerp",
) -> torch.Tensor:
    """Fold update model(s) into the existing model (the base).

    ``update_weight`` (alpha) is the updates' total share, split among them by
    ``weight``: alpha = 0 returns the existing tensor bit-exact, alpha = 1 the updates.
    """
    existing = group.base.tensor
    updates = group.non_base
    if update_weight == 0.0:
        return _refuse_non_finite(group, existing)
    shares = [update_weight * w for w in _normalised(weight.values_for(updates))]
    if update_weight == 1.0:
        if len(updates) == 1:
            return _refuse_non_finite(group, updates[0].tensor)
        return _checked_combine(group, [entry.tensor for entry in updates], shares, interpolation)
    return _checked_combine(group, [existing, *(entry.tensor for entry in updates)], [1.0 - update_weight, *shares],
                            interpolation)


BOOM_METHODS: tuple[MergeMethod, ...] = (boom_merge, boom_incremental_merge)


def register_methods() -> None:
    """Make the BOOM methods available to mergekit by name (idempotent)."""
    from mergekit.merge_methods import register, registered_methods

    known = {method.spec.name for method in registered_methods()}
    for method in BOOM_METHODS:
        if method.spec.name not in known:
            register(method)
