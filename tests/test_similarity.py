"""`boom-merge inspect`: pairwise cosine of member deltas, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from boom_merge.cli import main
from boom_merge.inspection import OVERALL, layer_of, member_similarity
from tests.test_drift import _broken, _one_error_line
from tests.test_models import OLD_SHA, place_in_cache


def _flat_deltas(members, base, keep=lambda name: True) -> np.ndarray:
    states = [load_file(str(m / "model.safetensors")) for m in members]
    origin = load_file(str(base / "model.safetensors"))
    keys = [k for k in origin if origin[k].is_floating_point() and keep(k)]
    return np.stack([np.concatenate([(s[k].double() - origin[k].double()).numpy().ravel() for k in keys]) for s in states])


def _cosine(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    return (x @ x.T) / np.outer(norms, norms)


def test_cosine_matches_numpy_overall_and_per_layer(tiny_bag) -> None:
    base, members = tiny_bag
    report = member_similarity(members, base=base)
    np.testing.assert_allclose(report.cosine[OVERALL].numpy(), _cosine(_flat_deltas(members, base)), atol=1e-9)
    layer = _cosine(_flat_deltas(members, base, keep=lambda k: ".layer.1." in k))
    np.testing.assert_allclose(report.cosine["layer 01"].numpy(), layer, atol=1e-9)


def test_identical_members_have_cosine_one(tmp_path, tiny_bag) -> None:
    base, members = tiny_bag
    report = member_similarity([members[0], members[0], members[1]], base=base)
    assert abs(float(report.cosine[OVERALL][0, 1]) - 1.0) < 1e-9
    assert float(report.cosine[OVERALL][0, 2]) < 0.5


def test_without_base_deltas_are_from_the_mean(tiny_bag) -> None:
    _, members = tiny_bag
    report = member_similarity(members)
    states = [load_file(str(m / "model.safetensors")) for m in members]
    keys = [k for k in states[0] if states[0][k].is_floating_point()]
    flat = np.stack([np.concatenate([s[k].double().numpy().ravel() for k in keys]) for s in states])
    np.testing.assert_allclose(report.cosine[OVERALL].numpy(), _cosine(flat - flat.mean(0)), atol=1e-9)


def test_cli_table_and_heatmap(tmp_path, tiny_bag) -> None:
    base, members = tiny_bag
    png = tmp_path / "sim.png"
    result = CliRunner().invoke(main, ["inspect", *map(str, members), "--base", str(base), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "layer 00" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_plot_path_inside_a_model_is_refused_before_any_work(tiny_bag, monkeypatch) -> None:
    import boom_merge.inspection as inspection

    base, members = tiny_bag
    monkeypatch.setattr(inspection, "_load", lambda *args: pytest.fail("compared before the plot path was checked"))
    result = CliRunner().invoke(main, ["inspect", *map(str, members), "--plot", str(members[0] / "sim.png")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == f"Error: output {members[0] / 'sim.png'} lies inside the input {members[0]}; " \
        "write elsewhere", result.output
    assert not (members[0] / "sim.png").exists()


def test_two_models_without_a_base_are_warned_about(tiny_bag, caplog) -> None:
    _, members = tiny_bag
    with caplog.at_level("WARNING"):
        report = member_similarity(members[:2])
    assert float(report.cosine[OVERALL][0, 1]) == pytest.approx(-1.0)
    assert "every cosine is -1; pass --base" in caplog.text


def test_layer_groups() -> None:
    assert layer_of("encoder.layer.3.attention.self.query.weight") == "layer 03"
    assert layer_of("model.layers.12.mlp.up_proj.weight") == "layer 12"
    assert layer_of("embeddings.word_embeddings.weight") == "embeddings"


def test_hub_ids_resolve_from_cache(tiny_bag, hub_cache) -> None:
    base, members = tiny_bag
    for i, member in enumerate(members[:2]):
        place_in_cache(member, hub_cache, f"acme/member-{i}")
    place_in_cache(base, hub_cache, "acme/base", sha=OLD_SHA, ref="v1")
    by_id = member_similarity(["acme/member-0", "acme/member-1"], base="acme/base@v1", device="cpu")
    by_dir = member_similarity(members[:2], base=base)
    assert torch.equal(by_id.cosine[OVERALL], by_dir.cosine[OVERALL])
    assert by_id.models == ["acme/member-0", "acme/member-1"] and by_id.origin == "acme/base@v1"
    result = CliRunner().invoke(main, ["inspect", "acme/member-0", "acme/member-1", "--base", "acme/base@v1"])
    assert result.exit_code == 0 and "[0] acme/member-0" in result.output, result.output


@pytest.mark.parametrize("how", ["nan", "no-tokenizer"])
def test_broken_member_is_refused(how: str, tiny_bag, tmp_path) -> None:
    _, members = tiny_bag
    bad = _broken(members[1], tmp_path, how)
    result = CliRunner().invoke(main, ["inspect", str(members[0]), str(bad)])
    line = _one_error_line(result)
    problem = "contains NaN or Inf values" if how == "nan" else "no tokenizer files"
    assert line.startswith(f"Error: {bad}") and problem in line, line
