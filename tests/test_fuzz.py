"""Property tests: mutated safetensors headers and recipes of valid tiny models, run through the merge path.

Every mutant (types, offsets, dtypes, shapes, truncations and JSON shapes of a safetensors
header; keys, types, values, nesting, unicode and huge numbers of a recipe) goes through
:func:`boom_merge.merge.pipeline.merge_recipe` in-process. The only allowed outcomes: a merge whose
weights are all finite, or exactly one one-line :class:`BoomError` naming the file; never
another exception, never a half-written output, never a changed input.

The default run is small and derandomized (a few hundred mutants per kind, seconds);
``BOOM_FUZZ_EXAMPLES=5000`` runs thousands with fresh randomness. A failing mutant becomes an
explicit regression case at the end of this file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boom_merge.merge.checks import read_header
from boom_merge.errors import BoomError
from boom_merge.merge.pipeline import merge_recipe
from tests.tiny_models import make_tiny_st

_ENV = "BOOM_FUZZ_EXAMPLES"
FUZZ = settings(
    max_examples=int(os.environ.get(_ENV, "150")),
    deadline=None,
    database=None,  # nothing written into the checkout
    derandomize=_ENV not in os.environ,  # the default run is the same every time
    suppress_health_check=list(HealthCheck),
)
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16",
          "U32", "U64", "F4", "F8_E8M0", "f32", "", "float32"]
METHODS = ["boom", "boom_incremental", "linear", "multislerp", "task_arithmetic", "ties", "slerp", "passthrough",
           "nuslerp", "karcher", "bagging", "BOOM"]
ODD_NUMBERS = [0, 1, -1, 0.5, 2, 3, 1e-45, 1e308, -1e308, 10**400, -(10**400), 2**63, 2**64, math.inf, -math.inf,
               math.nan, True, False, None, "1", "0.5", "", "ü", "nan", [], {}, [1, 2], {"weight": 1}]

odd_numbers = st.sampled_from(ODD_NUMBERS).map(copy.deepcopy)  # a private copy: mutants are edited in place
json_leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | odd_numbers)
json_values = st.recursive(json_leaves, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tiny members (one the other plus noise), a mutable copy of the second, and its header."""
    root = tmp_path_factory.mktemp("fuzz")
    first = make_tiny_st(root / "first", seed=0, hidden=16, layers=1)
    second = make_tiny_st(root / "second", seed=1, perturb_from=first, perturb_scale=0.05)
    mutant = Path(shutil.copytree(second, root / "mutant"))
    data = (second / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return {"root": root, "first": first, "mutant": mutant, "original": data,
            "header": json.loads(data[8:8 + length]), "body": data[8 + length:], "seen": {}}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finite_output(out: Path) -> None:
    from safetensors.numpy import load_file

    files = sorted(out.rglob("*.safetensors"))
    assert files, f"no weights in {out}"
    for file in files:
        for name, array in load_file(str(file)).items():
            if array.dtype.kind == "f":
                assert bool(__import__("numpy").isfinite(array).all()), f"{file}: {name} is not finite"


def run_mutant(root: Path, recipe: Path, watched: list[Path], needles: list[str]) -> str:
    """Merge ``recipe``; check the outcome rules. Returns "merged" or the error line."""
    out = root / "out"
    before = {path: _digest(path) for path in watched}
    try:
        merge_recipe(recipe, out)
    except BoomError as error:
        message = str(error)
        assert "\n" not in message, message
        assert any(needle in message for needle in needles), f"names none of {needles}: {message}"
        assert not out.exists()
        outcome = message
    else:
        _finite_output(out)
        outcome = "merged"
    finally:
        assert {path: _digest(path) for path in watched} == before, "an input changed"
        assert not [p for p in root.iterdir() if p.name.startswith(".out")], "a temporary dir was left"
        shutil.rmtree(out, ignore_errors=True)
    return outcome


def _recipe(root: Path, data: Any, *, text: str | None = None) -> Path:
    recipe = root / "recipe.yml"
    recipe.write_text(text if text is not None else yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                      encoding="utf-8")
    return recipe


# ---------------------------------------------------------------- safetensors headers


@st.composite
def header_mutants(draw: st.DrawFn, header: dict[str, Any], body: bytes) -> bytes:
    """The bytes of a safetensors file whose header (or framing) is mutated."""
    header = json.loads(json.dumps(header))  # a private copy
    names = [name for name in header if name != "__metadata__"]
    kind = draw(st.sampled_from(["field", "field", "plausible", "plausible", "delete", "tensor", "swap", "metadata",
                                 "whole", "length", "truncate", "append", "flip"]))
    name = draw(st.sampled_from(names))
    entry = header[name]
    if kind == "field":
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(json_values)
    elif kind == "plausible":
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        begin, stop = entry["data_offsets"]
        if field == "dtype":
            entry["dtype"] = draw(st.sampled_from(DTYPES))
        elif field == "shape":
            shape = list(entry["shape"])
            entry["shape"] = draw(st.sampled_from([shape[::-1], [*shape, 1], shape[:-1], [math.prod(shape)], [],
                                                   [0], [d + 1 for d in shape], [str(d) for d in shape],
                                                   [float(d) for d in shape], [-d for d in shape]]))
        else:
            delta = draw(st.integers(min_value=-8, max_value=8))
            entry["data_offsets"] = draw(st.sampled_from([[begin + delta, stop + delta], [begin, stop + delta],
                                                          [stop, begin], [str(begin), str(stop)], [begin],
                                                          [begin, stop, stop], [float(begin), float(stop)],
                                                          [begin, 2**64 + stop], [-begin - 1, stop]]))
    elif kind == "delete":
        del entry[draw(st.sampled_from(sorted(entry)))]
    elif kind == "tensor":
        action = draw(st.sampled_from(["drop", "rename", "add"]))
        if action == "drop":
            del header[name]
        elif action == "rename":
            header[draw(st.text(min_size=1, max_size=12))] = header.pop(name)
        else:
            header[draw(st.text(max_size=12))] = draw(json_values)
    elif kind == "swap":
        other = header[draw(st.sampled_from(names))]
        entry["data_offsets"], other["data_offsets"] = other["data_offsets"], entry["data_offsets"]
    elif kind == "metadata":
        header["__metadata__"] = draw(json_values | st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    elif kind == "whole":
        header = draw(json_values)
    text = json.dumps(header, ensure_ascii=draw(st.booleans())).encode("utf-8")
    length = len(text)
    if kind == "length":
        length = draw(st.sampled_from([0, 1, 7, length - 1, length + 1, length + 8, 2**31, 2**63, 2**64 - 1]))
    data = struct.pack("<Q", length) + text + body
    if kind == "truncate":
        data = data[:draw(st.integers(min_value=0, max_value=len(data) - 1))]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=16))
    elif kind == "flip":
        at = draw(st.integers(min_value=0, max_value=8 + len(text) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(min_value=1, max_value=255))]) + data[at + 1:]
    return data


def check_header_mutant(world: dict[str, Any], data: bytes) -> str:
    """Write ``data`` as the mutant's weights and merge it with the first member."""
    root, mutant = world["root"], world["mutant"]
    file = mutant / "model.safetensors"
    file.write_bytes(data)
    try:  # a mutant the header check accepts: merged once per meaning (same tensors, same bytes)
        read_header(file)
        length = struct.unpack("<Q", data[:8])[0]
        key = json.dumps(json.loads(data[8:8 + length]), sort_keys=True) + hashlib.sha256(data[8 + length:]).hexdigest()
    except BoomError:
        key = None
    if key is not None and key in world["seen"]:
        return world["seen"][key]
    recipe = _recipe(root, {"merge_method": "boom", "models": [{"model": str(world["first"])}, {"model": str(mutant)}]})
    outcome = run_mutant(root, recipe, [file, world["first"] / "model.safetensors"], [str(mutant)])
    if key is not None:
        world["seen"][key] = outcome
    return outcome


def test_safetensors_header_mutants(world: dict[str, Any]) -> None:
    """Each mutant merges to finite weights or is one Error: naming the mutated model."""

    @FUZZ
    @given(data=header_mutants(world["header"], world["body"]))
    def property(data: bytes) -> None:
        check_header_mutant(world, data)

    try:
        property()
    finally:
        (world["mutant"] / "model.safetensors").write_bytes(world["original"])


# ---------------------------------------------------------------- recipes


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a nested dict/list (the root included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _at(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


@st.composite
def recipe_mutants(draw: st.DrawFn, first: str, second: str) -> tuple[Any, str | None]:
    """``(data, text)``: a mutated recipe; ``text`` set when the YAML text itself is mutated."""
    recipe: Any = {"merge_method": "boom", "base_model": first if draw(st.booleans()) else None,
                   "models": [{"model": first, "parameters": {"weight": 1.0}},
                              {"model": second, "parameters": {"weight": 2.0}}],
                   "parameters": {"interpolation": "slerp"}, "dtype": "float32"}
    if recipe["base_model"] is None:
        del recipe["base_model"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(recipe)))
        kind = draw(st.sampled_from(["value", "value", "odd", "delete", "add", "rename", "nest", "method"]))
        if kind == "method":
            if isinstance(recipe, dict):  # (an earlier step may have replaced the whole recipe)
                recipe["merge_method"] = draw(st.sampled_from(METHODS) | st.text(max_size=10))
            continue
        if not path:
            if kind in ("value", "odd"):
                recipe = draw(json_values)
            continue
        parent, last = _at(recipe, path[:-1]), path[-1]
        if kind == "value":
            parent[last] = draw(json_values)
        elif kind == "odd":
            parent[last] = draw(odd_numbers)
        elif kind == "delete":
            del parent[last]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10) | st.sampled_from(["weight", "density", "t", "normalize", "lambda",
                                                                "slices", "tokenizer_source", "out_dtype"]))] = \
                draw(json_values)
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
        elif kind == "nest":
            parent[last] = draw(st.sampled_from(["list", "value", "key"])
                                .map(lambda how, old=parent[last]: {"list": [old], "value": {"value": old}}.get(how, {last: old})))
    text = None
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # the YAML text itself: cut, or a character put in
        text = yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False)
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.sampled_from(["", "\t", ":", "- ", "{", "'", "\x00", "ü", "&a", "*a", "!!python/object:os.system "]))
    return recipe, text


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [*_strings(key), *_strings(item)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def check_recipe_mutant(world: dict[str, Any], recipe_data: Any, text: str | None) -> str:
    root = world["root"]
    key = text if text is not None else json.dumps(recipe_data, sort_keys=True, default=repr)
    if key in world["seen"]:
        return world["seen"][key]
    recipe = _recipe(root, recipe_data, text=text)
    watched = [world["first"] / "model.safetensors", world["mutant"] / "model.safetensors", recipe]
    named = recipe_data
    if text is not None:  # what the cut or changed text names
        try:
            named = yaml.safe_load(text)
        except yaml.YAMLError:
            named = None
    outcome = run_mutant(root, recipe, watched, [str(recipe), *_strings(named)])
    world["seen"][key] = outcome
    return outcome


def test_recipe_mutants(world: dict[str, Any]) -> None:
    """Each mutated recipe merges to finite weights or is one Error: naming the recipe (or a model it names)."""

    @FUZZ
    @given(mutant=recipe_mutants(str(world["first"]), str(world["mutant"])))
    def property(mutant: tuple[Any, str | None]) -> None:
        check_recipe_mutant(world, *mutant)

    property()


# ---------------------------------------------------------------- regression cases found by the fuzzer


def test_a_second_merge_in_one_process_reads_an_input_rewritten_since(world: dict[str, Any]) -> None:
    """Found by the header fuzzer: mergekit kept each model's loader (shard index, open handle)
    for the whole process, so merging again after a member's file was rewritten with another
    header length read the tensors at the old offsets (NaN in embeddings.position_embeddings)."""
    root, mutant = world["root"], world["mutant"]
    file = mutant / "model.safetensors"
    recipe = _recipe(root, {"merge_method": "boom", "models": [{"model": str(world["first"])}, {"model": str(mutant)}]})
    try:
        assert run_mutant(root, recipe, [], []) == "merged"
        merge_recipe(recipe, root / "before")
        spaced = json.dumps(world["header"], indent=4).encode()  # same tensors, a longer header
        file.write_bytes(struct.pack("<Q", len(spaced)) + spaced + world["body"])
        merge_recipe(recipe, root / "after")
        assert (root / "after" / "model.safetensors").read_bytes() == (root / "before" / "model.safetensors").read_bytes()
    finally:
        file.write_bytes(world["original"])
        for name in ("before", "after"):
            shutil.rmtree(root / name, ignore_errors=True)


@pytest.mark.parametrize("where", ["models", "parameters"])
def test_an_integer_beyond_float64_is_one_error_naming_the_recipe(world: dict[str, Any], where: str) -> None:
    """Found by the recipe fuzzer: `weight: 1000...0` (400 digits) raised OverflowError in the recipe check."""
    models = [{"model": str(world["first"]), "parameters": {"weight": 10**400 if where == "models" else 1.0}},
              {"model": str(world["mutant"])}]
    recipe = {"merge_method": "linear", "models": models, **({"parameters": {"weight": -(10**400)}}
                                                            if where == "parameters" else {})}
    outcome = check_recipe_mutant(world, recipe, None)
    assert str(world["root"] / "recipe.yml") in outcome and "weight" in outcome and "must be finite" in outcome


@pytest.mark.parametrize("value", [[False], ["slerp", "linear"], {"value": ["slerp"], "filter": "mlp"}])
def test_a_list_for_a_text_parameter_is_one_error_naming_the_recipe(world: dict[str, Any], value: Any) -> None:
    """Found by the recipe fuzzer: `interpolation: [False]` passed the recipe check (only scalars were
    validated) and failed inside mergekit as `merge failed: ...`, naming no file."""
    recipe = {"merge_method": "boom", "models": [{"model": str(world["first"])}, {"model": str(world["mutant"])}],
              "parameters": {"interpolation": value}}
    outcome = check_recipe_mutant(world, recipe, None)
    assert outcome.startswith(f"{world['root'] / 'recipe.yml'}: ") and "interpolation" in outcome


def test_too_few_models_for_the_method_is_one_error_naming_the_recipe(world: dict[str, Any]) -> None:
    """Found by the recipe fuzzer: nuslerp with its base_model among 2 models has 1 to merge (it needs
    exactly 2): mergekit's `merge failed: Merge method requires at least 2 non-base inputs`, naming no file."""
    first, mutant = str(world["first"]), str(world["mutant"])
    recipe = {"merge_method": "nuslerp", "base_model": first, "models": [{"model": first, "parameters": {"weight": 1.0}},
                                                                         {"model": mutant, "parameters": {"weight": 2.0}}]}
    outcome = check_recipe_mutant(world, recipe, None)
    assert outcome == f"{world['root'] / 'recipe.yml'}: nuslerp merges exactly 2 models besides the base_model; got 1"


def test_a_line_break_in_a_recipe_key_still_gives_one_line(world: dict[str, Any]) -> None:
    """Found by the recipe fuzzer: a parameter named "\\n" made pydantic's message (which quotes the
    key) span two lines; every BoomError is now one line whatever the input held."""
    models = [{"model": str(world["first"])}, {"model": str(world["mutant"]), "parameters": {"weight": 2.0, "\n": None}}]
    outcome = check_recipe_mutant(world, {"merge_method": "boom", "models": models}, None)
    assert outcome.startswith(f"{world['root'] / 'recipe.yml'}: ") and "\n" not in outcome
