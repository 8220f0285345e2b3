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
s = sum_i w_i u_i, m = s / |s|), so we compute the same result with one accumulator instead of
stacking M copies of every tensor: on the CPU the inputs are read block by block
(:data:`STREAM_BLOCK` elements, widened to float32 in one reused buffer that stays in cache),
once for their norms and once for the direction, never as a full-size float32 copy. Where the mean
direction vanishes (all inputs zero, or antipodal inputs) we fall back to the linear
average instead of raising: zero tensors such as MiniLM's ``pooler.dense.bias`` then
merge to zero.

Norms are reduced in float32 blocks of :data:`NORM_BLOCK` elements and summed in
float64 (:func:`_sum_squares`): torch's float32 reduction over a whole embedding matrix
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
updates at alpha = 0, the existing model at alpha = 1) is not read. No input is read for the check alone.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Hashable, Iterator, Sequence
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
#: elements per block of the kernels' streaming passes on the CPU: 4 MiB of float32, which stays in cache
#: (measured on a 40000 x 2560 bf16 tensor, M = 4: 2^18-2^20 fastest, 2^14 3.9x and 2^22 1.2x slower)
STREAM_BLOCK = 1024 * NORM_BLOCK
_scratch = threading.local()  # .buffer: the reused direction buffer, inside :func:`reusing_scratch`


@contextlib.contextmanager
def reusing_scratch() -> Iterator[None]:
    """Inside it, Multi-SLERP's full-size float32 direction is one buffer reused from tensor to tensor
    (in this thread), instead of fresh memory that the system must zero for every tensor (an eighth of a
    4B merge's CPU time); it is let go at the end. The merge pipeline wraps each mergekit run in it."""
    outer = getattr(_scratch, "buffer", None)
    _scratch.buffer = outer if outer is not None else torch.empty(0)
    try:
        yield
    finally:
        _scratch.buffer = outer


def check_scale(scale: float, *, has_base: bool) -> None:
    """``boom``'s rule for ``scale``: other than 1 it needs a base (it scales the merged delta from the
    base); ValueError otherwise. The kernel applies it, and recipe validation before any work."""
    if scale != 1.0 and not has_base:
        raise ValueError(f"boom: scale={scale} needs a base_model (output = base + scale * merged delta)")


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


def _accumulation_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"merge weights must sum to a positive number, got {list(weights)}")
    return [float(w) / total for w in weights]


def _sum_squares(flat: torch.Tensor) -> torch.Tensor:
    """The sum of squares of a 1-d tensor as a float64 scalar: float32 norms of :data:`NORM_BLOCK`-element
    blocks, squared and summed in float64 (float64 input: in float64)."""
    if flat.dtype == torch.float64:
        return flat.square().sum()
    whole = flat.numel() // NORM_BLOCK * NORM_BLOCK
    squares = flat[whole:].double().square().sum()
    if whole:
        squares += torch.linalg.vector_norm(flat[:whole].view(-1, NORM_BLOCK), dim=1).double().square().sum()
    return squares


def _spans(numel: int, device: torch.device) -> list[tuple[int, int]]:
    """The blocks of a streaming pass: :data:`STREAM_BLOCK` elements on the CPU, the whole tensor elsewhere."""
    step = STREAM_BLOCK if device.type == "cpu" else max(numel, 1)
    return [(start, min(start + step, numel)) for start in range(0, numel, step)]


class _Stream:
    """The inputs of one merge, read block by block: each block of an input is widened into one reused
    buffer (the accumulation dtype) and its ``origin`` block subtracted, so no full-size widened copy is made."""

    def __init__(self, tensors: Sequence[torch.Tensor], origin: torch.Tensor | None) -> None:
        self.shape, self.out_dtype, device = tensors[0].shape, tensors[0].dtype, tensors[0].device
        self.dtype = _accumulation_dtype(tensors[0])
        self.flats = [tensor.reshape(-1) for tensor in tensors]
        self.origin = None if origin is None else origin.reshape(-1)
        self.spans = _spans(self.flats[0].numel(), device)
        self.block_size = self.spans[0][1] - self.spans[0][0] if self.spans else 0
        self._buffer = torch.empty(self.block_size, dtype=self.dtype, device=device)
        self._origin_buffer = None if origin is None else torch.empty(self.block_size, dtype=self.dtype, device=device)

    def origin_block(self, start: int, stop: int) -> torch.Tensor | None:
        """The origin's block in the accumulation dtype (None without an origin)."""
        if self.origin is None or self._origin_buffer is None:
            return None
        return self._origin_buffer[:stop - start].copy_(self.origin[start:stop])

    def delta(self, index: int, start: int, stop: int, origin: torch.Tensor | None) -> torch.Tensor:
        """Input ``index``'s block minus ``origin`` (the block from :meth:`origin_block`), widened; valid
        until the next call."""
        block = self._buffer[:stop - start].copy_(self.flats[index][start:stop])
        return block if origin is None else block.sub_(origin)

    def full(self, dtype: torch.dtype) -> torch.Tensor:
        """An empty flat tensor of the inputs' size in ``dtype``."""
        return torch.empty(self.flats[0].numel(), dtype=dtype, device=self.flats[0].device)

    def scratch(self) -> torch.Tensor:
        """A flat buffer of the inputs' size in the accumulation dtype, not returned to the caller: the
        reused one inside :func:`reusing_scratch` (CPU), else :meth:`full`'s."""
        reused = getattr(_scratch, "buffer", None)
        numel, device = self.flats[0].numel(), self.flats[0].device
        if reused is None or device.type != "cpu":
            return self.full(self.dtype)
        if reused.numel() < numel or reused.dtype != self.dtype:
            _scratch.buffer = reused = torch.empty(0)  # the old one goes before the new one is made
            _scratch.buffer = reused = torch.empty(numel, dtype=self.dtype)
        return reused[:numel]


def linear_combination(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    origin: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """``origin + scale * sum_i w_i (t_i - origin)`` with normalised weights, in float32 or wider,
    one block at a time (:class:`_Stream`): each input is read once."""
    weights = _normalised(weights)
    stream = _Stream(tensors, origin)
    out = stream.full(stream.out_dtype)
    total = torch.empty(stream.block_size, dtype=stream.dtype, device=out.device)
    for start, stop in stream.spans:
        base = stream.origin_block(start, stop)
        block = total[:stop - start].zero_()
        for index, weight in enumerate(weights):
            block.add_(stream.delta(index, start, stop, base), alpha=weight)
        if base is not None:
            if scale != 1.0:
                block.mul_(scale)
            block.add_(base)
        out[start:stop].copy_(block)
    return out.view(stream.shape)


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
    :func:`linear_combination` where the weighted mean direction vanishes. Streams the inputs
    block by block (:class:`_Stream`) in two reads: their norms, then the direction (whose norm is
    summed block by block as it is made); the direction is the one full-size float32 buffer.
    """
    weights = _normalised(weights)
    stream = _Stream(tensors, origin)
    squares = [torch.zeros((), dtype=torch.float64) for _ in tensors]
    for start, stop in stream.spans:
        base = stream.origin_block(start, stop)
        for index in range(len(tensors)):
            squares[index] += _sum_squares(stream.delta(index, start, stop, base))
    norms = [math.sqrt(float(square)) for square in squares]
    mean_norm = sum(weight * norm for weight, norm in zip(weights, norms))
    if not math.isfinite(mean_norm):
        raise _NonFiniteNorm(f"Multi-SLERP mean norm {mean_norm}")
    # the direction is the output when they share a dtype; else a scratch buffer
    direction = stream.full(stream.dtype) if stream.out_dtype == stream.dtype else stream.scratch()
    direction_squares = torch.zeros((), dtype=torch.float64)
    for start, stop in stream.spans:
        base = stream.origin_block(start, stop)
        block = direction[start:stop].zero_()
        for index, (weight, norm) in enumerate(zip(weights, norms)):
            block.add_(stream.delta(index, start, stop, base), alpha=weight / (norm + eps))
        direction_squares += _sum_squares(block)
    direction_norm = math.sqrt(float(direction_squares))
    if not math.isfinite(direction_norm):
        raise _NonFiniteNorm(f"Multi-SLERP direction norm {direction_norm}")
    if direction_norm < eps:
        return linear_combination(tensors, weights, origin, scale)
    out = direction if stream.out_dtype == stream.dtype else stream.full(stream.out_dtype)
    for start, stop in stream.spans:
        block = direction[start:stop].mul_(mean_norm / direction_norm)
        base = stream.origin_block(start, stop)
        if base is not None:
            if scale != 1.0:
                block.mul_(scale)
            block.add_(base)
        if out is not direction:
            out[start:stop].copy_(block)
    return out.view(stream.shape)


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
    check_scale(scale, has_base=origin is not None)
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
