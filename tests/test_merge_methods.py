"""The BOOM kernels against mergekit's own methods and an independent numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mergekit.merge_methods import get, merge_state_dicts, merge_tensors

from boom_merge.merge.methods import register_methods
from tests.reference_merges import np_linear, np_multislerp

register_methods()


def _tensors(m: int, shape=(7, 5), seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(m)]


@pytest.mark.parametrize("m", [2, 3, 4, 8])
@pytest.mark.parametrize("with_base", [False, True])
def test_boom_slerp_equals_mergekit_multislerp(m: int, with_base: bool) -> None:
    tensors = _tensors(m + 1, seed=m)
    weights = [0.1 + i for i in range(m)]
    base_index = m if with_base else None
    inputs = tensors if with_base else tensors[:m]
    ours = merge_tensors(inputs, "boom", parameters={"weight": weights}, base_index=base_index)
    theirs = merge_tensors(inputs, "multislerp", parameters={"weight": weights}, base_index=base_index)
    reference = np_multislerp([t.numpy() for t in tensors[:m]], weights, tensors[m].numpy() if with_base else None)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("m", [2, 4])
def test_boom_linear_equals_mergekit_linear(m: int) -> None:
    tensors = _tensors(m, seed=10 + m)
    weights = [1.0, 3.0, 0.5, 2.0][:m]
    ours = merge_tensors(tensors, "boom", parameters={"weight": weights, "interpolation": "linear"})
    theirs = merge_tensors(tensors, "linear", parameters={"weight": weights})
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.numpy(), np_linear([t.numpy() for t in tensors], weights), atol=1e-6)


def test_boom_linear_with_base_adds_the_mean_delta() -> None:
    *members, base = _tensors(4, seed=3)
    ours = merge_tensors([*members, base], "boom", parameters={"interpolation": "linear"}, base_index=3)
    expected = base.double() + sum((t.double() - base.double()) for t in members) / 3
    assert torch.allclose(ours.double(), expected, atol=1e-6)


def test_one_member_is_returned_unchanged() -> None:
    (member,) = _tensors(1)
    assert torch.equal(merge_tensors([member], "boom"), member)
    base = torch.zeros_like(member)
    assert torch.equal(merge_tensors([member, base], "boom", base_index=1), member)


def test_all_zero_tensor_merges_to_zero_where_mergekit_raises() -> None:
    zeros = [torch.zeros(384) for _ in range(4)]
    assert torch.equal(merge_tensors(zeros, "boom"), torch.zeros(384))
    with pytest.raises(ValueError, match="weighted sum"):
        merge_tensors(zeros, "multislerp", parameters={"weight": [1.0] * 4})


def test_non_floating_buffers_are_copied_not_averaged() -> None:
    states = [{"w": t, "position_ids": torch.arange(6).unsqueeze(0)} for t in _tensors(3, shape=(6,))]
    merged = merge_state_dicts(states, "boom")
    assert merged["position_ids"].dtype == torch.int64
    assert torch.equal(merged["position_ids"], torch.arange(6).unsqueeze(0))
    np.testing.assert_allclose(merged["w"].numpy(), np_multislerp([s["w"].numpy() for s in states], [1, 1, 1]), atol=1e-5)


def test_incremental_alpha_zero_is_bit_exact_and_one_is_the_update() -> None:
    existing, update = _tensors(2, seed=5)
    for interpolation in ("slerp", "linear"):
        params = {"interpolation": interpolation}
        zero = merge_tensors([existing, update], "boom_incremental", base_index=0, parameters={**params, "update_weight": 0.0})
        one = merge_tensors([existing, update], "boom_incremental", base_index=0, parameters={**params, "update_weight": 1.0})
        assert torch.equal(zero, existing)
        assert torch.equal(one, update)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.8])
def test_incremental_matches_references(alpha: float) -> None:
    existing, update = _tensors(2, seed=6)
    linear = merge_tensors([existing, update], "boom_incremental", base_index=0,
                           parameters={"update_weight": alpha, "interpolation": "linear"})
    assert torch.allclose(linear, (1 - alpha) * existing + alpha * update, atol=1e-6)
    slerp = merge_tensors([existing, update], "boom_incremental", base_index=0, parameters={"update_weight": alpha})
    reference = np_multislerp([existing.numpy(), update.numpy()], [1 - alpha, alpha])
    np.testing.assert_allclose(slerp.numpy(), reference, atol=1e-5)
    # the merge lies between the two: closer to the update as alpha grows
    d_old = float((slerp - existing).norm())
    d_new = float((slerp - update).norm())
    assert (d_old < d_new) == (alpha < 0.5) or alpha == 0.5


def test_incremental_splits_alpha_among_several_updates() -> None:
    existing, u1, u2 = _tensors(3, seed=7)
    merged = merge_tensors([existing, u1, u2], "boom_incremental", base_index=0,
                           parameters={"update_weight": 0.4, "interpolation": "linear", "weight": [1.0, 3.0]})
    assert torch.allclose(merged, 0.6 * existing + 0.1 * u1 + 0.3 * u2, atol=1e-6)


def test_parameters_are_validated() -> None:
    tensors = _tensors(2)
    with pytest.raises(ValueError, match="slerp"):
        merge_tensors(tensors, "boom", parameters={"interpolation": "cubic"})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        merge_tensors(tensors, "boom_incremental", base_index=0, parameters={"update_weight": 1.5})
    with pytest.raises(ValueError, match="base"):
        merge_tensors(tensors, "boom_incremental")


def test_methods_are_registered_once() -> None:
    register_methods()
    register_methods()
    assert get("boom").spec.name == "boom"
    assert get("boom_incremental").spec.contract.base.value == "required"


def test_multislerp_is_float64_accurate_on_an_embedding_matrix(minilm_path: str) -> None:
    """MiniLM's word embeddings (30522 x 384), three perturbed copies, weights 1:2:1.

    torch's float32 norm of such a tensor is off by ~5e-4 relative; that moved every
    merged weight by ~1e-4 before the norms were summed in float64.
    """
    from safetensors import safe_open

    (weights_file,) = Path(minilm_path).rglob("model.safetensors")
    with safe_open(str(weights_file), "pt") as handle:
        (name,) = [key for key in handle.keys() if key.endswith("word_embeddings.weight")]
        centre = handle.get_tensor(name).float()
    assert centre.shape == (30522, 384)
    generator = torch.Generator().manual_seed(0)
    members = [centre + torch.randn(centre.shape, generator=generator) * 0.01 for _ in range(3)]
    weights = [1.0, 2.0, 1.0]
    ours = merge_tensors(members, "boom", parameters={"weight": weights}).double()
    wide = [m.double() for m in members]
    norms = [float(torch.sqrt(torch.sum(m * m))) for m in wide]
    direction = sum(w / n * m for w, n, m in zip(weights, norms, wide))
    reference = direction * (sum(w * n for w, n in zip(weights, norms)) / sum(weights)
                             / float(torch.sqrt(torch.sum(direction * direction))))
    error = float((ours - reference).abs().max()) / float(reference.abs().max())
    assert error <= 1e-6, f"relative error {error:.2e}"


@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
@pytest.mark.parametrize("m", [1, 3])
def test_scale_one_is_bit_exact_and_zero_is_the_base(interpolation: str, m: int) -> None:
    *members, base = _tensors(m + 1, seed=20 + m)
    params = {"interpolation": interpolation, "weight": [1.0, 2.0, 1.0][:m]}
    plain = merge_tensors([*members, base], "boom", parameters=params, base_index=m)
    one = merge_tensors([*members, base], "boom", parameters={**params, "scale": 1.0}, base_index=m)
    zero = merge_tensors([*members, base], "boom", parameters={**params, "scale": 0.0}, base_index=m)
    assert torch.equal(one, plain)
    assert torch.equal(zero, base)
    if m == 1:
        assert torch.equal(one, members[0])


@pytest.mark.parametrize("scale", [0.25, 0.5, 1.25])
@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
def test_scale_against_numpy(interpolation: str, scale: float) -> None:
    *members, base = _tensors(4, seed=30)
    weights = [1.0, 2.0, 3.0]
    ours = merge_tensors([*members, base], "boom", base_index=3,
                         parameters={"interpolation": interpolation, "weight": weights, "scale": scale})
    arrays, origin = [t.numpy() for t in members], base.numpy().astype(np.float64)
    if interpolation == "slerp":
        merged = np_multislerp(arrays, weights, origin)
    else:
        merged = origin + np_linear([a - origin for a in arrays], weights)
    np.testing.assert_allclose(ours.numpy(), origin + scale * (merged - origin), atol=1e-5, rtol=0)


def test_scale_of_one_member_is_wise_ft() -> None:
    member, base = _tensors(2, seed=40)
    ours = merge_tensors([member, base], "boom", base_index=1, parameters={"scale": 0.3})
    np.testing.assert_allclose(ours.numpy(), 0.7 * base.double().numpy() + 0.3 * member.double().numpy(), atol=1e-6)


def test_scale_without_a_base_is_refused() -> None:
    with pytest.raises(ValueError, match="scale=0.5 needs a base_model"):
        merge_tensors(_tensors(2), "boom", parameters={"scale": 0.5})
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        merge_tensors(_tensors(2), "boom", base_index=1, parameters={"scale": -1.0})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
@pytest.mark.parametrize("with_base", [False, True])
def test_streamed_blocks_merge_as_one_block(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype,
                                            interpolation: str, with_base: bool) -> None:
    """The kernels read the inputs in blocks of STREAM_BLOCK elements; a tensor of many blocks and a
    ragged tail merges as it does in one block, and as the float64 references do."""
    import boom_merge.merge.methods as kernels

    *members, base = [t.to(dtype) for t in _tensors(4, shape=(37, 229), seed=50)]  # 8473 elements
    inputs, base_index = ([*members, base], 3) if with_base else (members, None)
    params = {"interpolation": interpolation, "weight": [1.0, 2.0, 0.5], **({"scale": 0.6} if with_base else {})}
    whole = merge_tensors(inputs, "boom", parameters=params, base_index=base_index)
    monkeypatch.setattr(kernels, "STREAM_BLOCK", 2 * kernels.NORM_BLOCK)  # 5 blocks, the last one ragged
    streamed = merge_tensors(inputs, "boom", parameters=params, base_index=base_index)
    assert streamed.dtype == dtype and streamed.shape == (37, 229)
    assert torch.allclose(streamed.float(), whole.float(), atol=1e-6 if dtype == torch.float32 else 0, rtol=0)
    arrays = [t.float().numpy() for t in members]
    origin = base.float().numpy().astype(np.float64) if with_base else None
    if interpolation == "slerp":
        merged = np_multislerp(arrays, [1.0, 2.0, 0.5], origin)
    else:
        merged = np_linear(arrays if origin is None else [a - origin for a in arrays], [1.0, 2.0, 0.5])
        merged = merged if origin is None else origin + merged
    expected = merged if origin is None else origin + 0.6 * (merged - origin)
    np.testing.assert_allclose(streamed.float().numpy(), expected, atol=1e-5 if dtype == torch.float32 else 2e-2,
                               rtol=0)


@pytest.mark.parametrize("interpolation", ["slerp", "linear"])
def test_a_nan_in_a_late_block_is_refused(monkeypatch: pytest.MonkeyPatch, interpolation: str) -> None:
    import boom_merge.merge.methods as kernels

    monkeypatch.setattr(kernels, "STREAM_BLOCK", kernels.NORM_BLOCK)
    members = _tensors(3, shape=(5000,), seed=60)
    members[1][4990] = float("nan")
    with pytest.raises(kernels.NonFiniteInputError, match="input 1"):
        merge_tensors(members, "boom", parameters={"interpolation": interpolation})


def test_the_reused_direction_buffer_merges_as_fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside reusing_scratch, Multi-SLERP's direction is one buffer reused from tensor to tensor: a
    smaller tensor after a larger one, and a larger one after that, merge bit for bit as they do in
    fresh memory; an earlier result is not changed by a later merge; the buffer goes at the end."""
    import boom_merge.merge.methods as kernels

    monkeypatch.setattr(kernels, "STREAM_BLOCK", kernels.NORM_BLOCK)
    shapes = [(40, 300), (7, 5), (3, 1000), (61, 400)]  # large, small, middle, larger still
    groups = [[t.to(torch.bfloat16) for t in _tensors(3, shape=shape, seed=70 + i)] for i, shape in enumerate(shapes)]
    fresh = [merge_tensors(g, "boom", parameters={"weight": [1.0, 2.0, 0.5]}) for g in groups]
    with kernels.reusing_scratch():
        reused = [merge_tensors(g, "boom", parameters={"weight": [1.0, 2.0, 0.5]}) for g in groups]
        assert kernels._scratch.buffer.numel() == 61 * 400 and kernels._scratch.buffer.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(fresh, reused))
    assert kernels._scratch.buffer is None
