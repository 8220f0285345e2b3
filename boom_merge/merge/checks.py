"""Input checks that run before any merge writes anything.

Owns: the safetensors and weight checks that merges and :mod:`boom_merge.model_refs` share; no other
module re-reads headers. It never writes and never unpickles: pickled weights are only found and
refused (or allowed).

Each problem becomes a one-line :class:`BoomError` naming the file (and tensor):
missing config, missing/truncated/corrupt safetensors, headers that lie (a byte
length that does not fit the dtype and shape, tensors sharing bytes, a tensor that is
floating in one input and integer in another), pickled weights (refused unless
allowed: unpickling runs arbitrary code), tensor name or shape mismatches between
models (on the tensors transformers would load: a Hub base's old ``position_ids`` buffer
is no mismatch), and NaN/Inf weights. Tensors are read one at a time, so checking never holds
a whole model in memory. Used by the merge pipeline and :mod:`boom_merge.model_refs`; it
writes nothing.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from boom_merge.errors import BoomError
from boom_merge.merge.model_class import unloaded_tensors

if TYPE_CHECKING:
    import torch

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    span: tuple[int, int] | None = None  # the bytes [start, stop) of the file that hold it


@dataclass(frozen=True)
class ModelFiles:
    """The weights of one model directory, by tensor name."""

    path: Path
    tensors: dict[str, TensorInfo]


def _read_header(file: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header and check that the file holds every byte it declares."""
    size = file.stat().st_size
    try:
        with file.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as error:
        raise BoomError(f"corrupt safetensors file ({error})", path=file) from None
    if not isinstance(header, dict):
        raise BoomError("corrupt safetensors file (its header is not a JSON object)", path=file)
    header.pop("__metadata__", None)
    tensors = {}
    ranges = []
    for name, entry in header.items():
        try:
            begin, stop = _naturals(entry["data_offsets"], length=2)
            shape = _naturals(entry["shape"])
            dtype = entry["dtype"]
        except (KeyError, TypeError, ValueError):
            raise BoomError(f"corrupt safetensors header entry for tensor {name!r}", path=file) from None
        if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
            raise BoomError(f"corrupt safetensors: tensor {name!r} has unknown dtype {dtype!r}", path=file)
        numel = 1
        for dim in shape:
            numel *= dim
        if not 0 <= begin <= stop or stop - begin != numel * _DTYPE_BYTES[dtype]:
            raise BoomError(f"corrupt safetensors: tensor {name!r} has the wrong byte length for "
                            f"{dtype} {list(shape)}", path=file)
        ranges.append((begin, stop, name))
        tensors[name] = TensorInfo(file, dtype, shape, (8 + header_len + begin, 8 + header_len + stop))
    ranges.sort()
    for (_, stop, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < stop:
            raise BoomError(f"corrupt safetensors: tensors {first!r} and {second!r} share bytes", path=file)
    end = ranges[-1][1] if ranges else 0
    if 8 + header_len + end > size:
        raise BoomError(
            f"truncated safetensors file: {size} bytes, header declares {8 + header_len + end}",
            path=file,
        )
    _parse_as_safetensors(file)
    return tensors


def _naturals(value: object, *, length: int | None = None) -> tuple[int, ...]:
    """A JSON list of non-negative integers (not strings, floats or booleans), as the format requires."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise TypeError(value)
    if not all(type(item) is int and item >= 0 for item in value):
        raise ValueError(value)
    return tuple(value)


def _parse_as_safetensors(file: Path) -> None:
    """The safetensors library's own header parse (what mergekit and transformers read with), so a
    fault the checks above do not name (a gap between tensors, bytes after the last one, bad
    metadata) is still one line here instead of a traceback later."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="np"):
            pass
    except (SafetensorError, OSError, ValueError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise BoomError(f"corrupt safetensors file ({reason})", path=file) from None


def read_header(file: str | Path) -> dict[str, TensorInfo]:
    """The tensors one safetensors file declares; one-line BoomError when corrupt or truncated."""
    return _read_header(Path(file))


def model_files(model_dir: str | Path, *, allow_pickle: bool = False) -> ModelFiles:
    """Check a model directory's config and weight files; return its tensor index."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BoomError("model directory not found", path=model_dir)
    if not (model_dir / "config.json").is_file():
        raise BoomError("missing config.json (not a transformers model directory)", path=model_dir)
    weight_files = sorted(model_dir.glob("*.safetensors"))
    if not weight_files:
        pickled = sorted(model_dir.glob("*.bin")) + sorted(model_dir.glob("*.pt"))
        if pickled and not allow_pickle:
            raise BoomError(
                f"only pickled weights ({pickled[0].name}); unpickling can run arbitrary code: "
                "convert to safetensors (load and save it again), or pass --allow-pickle to merge, "
                "incremental or base (the commands that unpickle)",
                path=model_dir,
            )
        if not pickled:
            raise BoomError("no weight files (*.safetensors) found", path=model_dir)
        return ModelFiles(model_dir, {})
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files:
        tensors.update(_read_header(file))
    return ModelFiles(model_dir, tensors)


def _is_float(info: TensorInfo) -> bool:
    return info.dtype.startswith(("F", "BF"))


def loaded_tensors(model: ModelFiles) -> dict[str, TensorInfo]:
    """``model``'s tensors less those its transformers class neither saves nor loads
    (:mod:`boom_merge.merge.model_class`: old checkpoints' ``position_ids`` and the like)."""
    ignored = unloaded_tensors(model.path, model.tensors)
    return {name: info for name, info in model.tensors.items() if name not in ignored}


def check_same_tensors(models: list[ModelFiles]) -> list[str]:
    """Every model must have the same tensor names and shapes as the first, floating where it is.

    Models are compared on the tensors transformers would load: when the names differ, those
    the model class neither saves nor loads are left out first. Returns the names compared.
    """
    reference = models[0]
    if not reference.tensors:
        return []
    others = [other for other in models[1:] if other.tensors]
    if any(set(other.tensors) != set(reference.tensors) for other in others):
        reference, others = (replace(reference, tensors=loaded_tensors(reference)),
                             [replace(other, tensors=loaded_tensors(other)) for other in others])
    for other in others:
        for name in sorted(set(reference.tensors) | set(other.tensors)):
            mine, theirs = reference.tensors.get(name), other.tensors.get(name)
            if mine is None or theirs is None:
                has, lacks = (reference, other) if theirs is None else (other, reference)
                raise BoomError(
                    f"tensor {name!r} is in {has.path} but not in {lacks.path}", path=lacks.path
                )
            if _is_float(mine) != _is_float(theirs):
                raise BoomError(
                    f"tensor {name!r} is {mine.dtype} in {mine.file} but {theirs.dtype} in {theirs.file}; "
                    "one of the headers lies about its dtype (or the models are not of one kind)",
                    path=theirs.file,
                )
            if mine.shape != theirs.shape:
                raise BoomError(
                    f"tensor {name!r} has shape {list(mine.shape)} in {reference.path} "
                    f"but {list(theirs.shape)} in {other.path}",
                    path=other.path,
                )
    return list(reference.tensors)


def check_finite(model: ModelFiles, *, label: str | None = None) -> None:
    """Raise naming the first floating tensor that holds NaN or Inf; ``label`` names the model in the
    progress bar (default: its directory's name)."""
    import torch
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, info in model.tensors.items():
        if _is_float(info):
            by_file.setdefault(info.file, []).append(name)
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as handle:
            for name in tqdm(names, desc=f"checking {label or model.path.name}", leave=False, unit="tensor"):
                if not _finite(handle.get_tensor(name)):
                    raise BoomError(f"tensor {name!r} contains NaN or Inf values", path=file)


def _finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf in ``tensor``: one summing pass (NaN and Inf propagate into a sum; a finite
    sum proves them absent), and the exact element check only when the sum is not finite (a
    NaN/Inf, or a float32 overflow of huge finite values)."""
    import torch

    if bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
        return True
    wide = tensor.float() if tensor.element_size() == 1 else tensor  # torch has no isfinite for float8
    return bool(torch.isfinite(wide).all())
