"""The BOOM kernels against mergekit's own methods and an independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mergekit.merge_methods import get, merge_state_dicts, merge_tensors

from boom_merge.merge_methods import register_methods
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
