"""Models by name: local dirs and Hugging Face Hub ids, checked before anyone reads them.

Owns: resolving a model spec, the checks every model reader shares, loading, the default device.
It never writes a model (a download fills only huggingface_hub's cache).

Every command that reads a model goes through here:

- :func:`resolve_model` turns a spec (a local dir, ``org/name`` or ``org/name@REV``) into a
  local snapshot dir, letting ``huggingface_hub.snapshot_download`` decide: it downloads when
  online, uses the cache when offline, honours ``HF_HUB_OFFLINE``. Nothing here refuses a Hub
  id before the Hub library has tried. Not found / gated / no network -> one-line
  :class:`BoomError` naming the id.
- :func:`check_model` refuses what would give wrong results silently: no config, no tokenizer
  files (transformers would build a tokenizer that maps every word to ``[UNK]``), unreadable or
  dishonest safetensors, NaN/Inf weights (naming the tensor). Safetensors are read by
  :mod:`boom_merge.merge.checks`.
- :func:`check_each_once`: a command given several models (members, a base) takes each once.
- :func:`load_sentence_transformer` = resolve + check + load on :func:`default_device`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boom_merge.merge.checks import ModelFiles, check_finite, model_files, read_header
from boom_merge.errors import BoomError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

_OTHER_FORMATS = [
    "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel",
    "onnx/*", "openvino/*", "coreml/*", "tf_model*", "flax_model*", "rust_model*",
]
"""Weights for other frameworks: never downloaded (sentence-transformers reads none of them)."""
_PICKLES = ["*.bin", "*.pt", "*.pth"]
"""Downloaded only when a repo has no safetensors weights."""
_CACHE_SNAPSHOT = re.compile(r"^models--(?P<repo>.+)$")
_TOKENIZER_SETS = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("tokenizer.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
    ("vocab.json", "tokenizer_config.json"),  # word/character-level vocabularies without merges
)
_TOKENIZER_NAMES = (
    "tokenizer.json, vocab.txt, vocab.json + merges.txt, tokenizer.model, spiece.model or sentencepiece.bpe.model"
)


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec and the local dir it names.

    ``hub_id``/``revision`` are the Hub repo and the resolved commit sha (also for a local
    dir that is a Hugging Face cache snapshot); None for plain local dirs.
    """

    spec: str
    path: Path
    hub_id: str | None
    revision: str | None

    @property
    def name(self) -> str:
        """What to call the model in reports and cards: ``org/name`` or the dir name."""
        return self.hub_id or self.path.name

    @property
    def recipe_name(self) -> str:
        """What a recipe names: ``org/name@COMMIT`` for a model given by Hub id (the commit read), else its dir."""
        by_id = self.hub_id and not Path(self.spec).expanduser().is_dir()
        return f"{self.hub_id}@{self.revision}" if by_id else str(self.path)


def reference_spec(model: Any) -> str:
    """The spec of a recipe's model (mergekit's ``ModelReference.model``): its path, ``@revision`` when pinned."""
    return str(model.path) + (f"@{model.revision}" if getattr(model, "revision", None) else "")


def resolve_model(spec: str | Path) -> ResolvedModel:
    """A local dir as itself; else ``org/name[@REV]`` through ``snapshot_download``."""
    text = str(spec)
    local = Path(text).expanduser()
    if local.is_dir():
        path = local.resolve()
        hub_id, revision = cache_identity(path)
        return ResolvedModel(text, path, hub_id, revision)
    repo_id, revision = _hub_reference(text)
    path = _download(text, repo_id, revision)
    return ResolvedModel(text, path, repo_id, path.name)


def check_spec(spec: str | Path) -> None:
    """``spec`` can name a model: a local dir, or a Hub id by its form (not looked up: a recipe may name
    a model that is not downloaded yet); else the one-line refusal :func:`resolve_model` gives."""
    if not Path(str(spec)).expanduser().is_dir():
        _hub_reference(str(spec))


def check_each_once(members: Sequence[tuple[str | Path, str]], base: tuple[str | Path, str] | None = None) -> None:
    """Each model once: ``(spec, key)`` pairs, ``key`` what identifies the model (a local dir's real path, a
    Hub id as written or its snapshot); a repeat is refused naming the spec as typed and the first one."""
    seen: dict[str, str | Path] = {}
    for spec, key in members:
        if key in seen:
            raise BoomError(f"member given twice (also as {seen[key]})", path=spec)
        seen[key] = spec
    if base is not None and base[1] in seen:
        raise BoomError(f"the base is also given as a member ({seen[base[1]]}); the members are the models "
                        "trained from it", path=base[0])


def _hub_reference(text: str) -> tuple[str, str | None]:
    """``org/name[@REV]`` of a spec that is no local dir, as (repo id, revision); a file, or a spec of
    another form, is refused in one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(text).expanduser().exists():
        raise BoomError("not a model directory (a file)", path=text)
    repo_id, _, revision = text.partition("@")
    try:
        if not repo_id or text.count("@") > 1 or ("@" in text and not revision):
            raise HFValidationError(text)
        validate_repo_id(repo_id)
    except HFValidationError:
        raise BoomError("not a local directory, nor a Hub id (org/name or org/name@revision)", path=text) from None
    return repo_id, revision or None


def cache_identity(path: Path) -> tuple[str | None, str | None]:
    """``(org/name, sha)`` when ``path`` is ``.../models--org--name/snapshots/SHA`` (a Hub cache snapshot)."""
    if path.parent.name != "snapshots":
        return None, None
    match = _CACHE_SNAPSHOT.match(path.parent.parent.name)
    return (match.group("repo").replace("--", "/"), path.name) if match else (None, None)


def _download(spec: str, repo_id: str, revision: str | None) -> Path:
    """``snapshot_download`` without foreign-framework weights; pickles only if needed."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, ignore_patterns=_OTHER_FORMATS + _PICKLES))
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*/*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, ignore_patterns=_OTHER_FORMATS))
    except Exception as error:  # noqa: BLE001 - every Hub failure becomes one line naming the id
        raise BoomError(_hub_problem(error, revision), path=spec) from None
    logger.info("%s resolved to %s", spec, folder)
    return folder


def _hub_problem(error: Exception, revision: str | None) -> str:
    """One line saying why the Hub could not give us the model."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hub

    offline = bool(constants.HF_HUB_OFFLINE)
    if isinstance(error, hub.HFValidationError):
        return "not a local directory, nor a valid Hub id (org/name or org/name@revision)"
    if isinstance(error, hub.GatedRepoError):
        return "gated Hub model: accept its conditions on huggingface.co, then log in (`hf auth login` or HF_TOKEN)"
    if isinstance(error, hub.RevisionNotFoundError):
        return f"revision {revision!r} not found on the Hub"
    if isinstance(error, hub.RepositoryNotFoundError):
        return (
            "not a local directory, and no such model on the Hub "
            "(or it is private: log in with `hf auth login` or HF_TOKEN)"
        )
    cause = error.__cause__ or error.__context__
    if isinstance(error, hub.LocalEntryNotFoundError) or type(error).__name__ == "IncompleteSnapshotError":
        if offline:
            return (
                "not a local directory, and not (completely) in the Hugging Face cache; "
                "HF_HUB_OFFLINE is set, so nothing is downloaded"
            )
        reason = first_line(cause) if cause is not None else "the Hub cannot be reached"
        return (
            f"not a local directory, not (completely) in the Hugging Face cache, "
            f"and the Hub cannot be reached ({reason})"
        )
    return f"cannot get the model from the Hub ({first_line(error)})"


def first_line(error: BaseException) -> str:
    """An exception as ``Type: first line of its message``, for one-line errors about a model."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def transformer_dir(model_dir: Path) -> Path:
    """The dir holding the transformer: the model dir, or an old-style ``0_Transformer/`` module."""
    if (model_dir / "config.json").is_file():
        return model_dir
    for module in _modules(model_dir):
        if module.get("type", "").endswith("Transformer") and module.get("path"):
            return model_dir / module["path"]
    return model_dir


def stored_prompts(model_dir: Path) -> dict[str, str]:
    """The prompts a sentence-transformers dir stores (``config_sentence_transformers.json``'s ``prompts``;
    {} when there are none), read without loading the model."""
    file = model_dir / "config_sentence_transformers.json"
    if not file.is_file():
        return {}
    try:
        prompts = json.loads(file.read_text(encoding="utf-8")).get("prompts") or {}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as error:
        raise BoomError(f"unreadable sentence-transformers config ({error})", path=file) from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise BoomError("prompts must map prompt names to texts", path=file)
    return prompts


def _modules(model_dir: Path) -> list[dict[str, Any]]:
    """modules.json's entries ([] when there is none)."""
    file = model_dir / "modules.json"
    if not file.is_file():
        return []
    try:
        modules = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BoomError(f"unreadable modules.json ({error})", path=file) from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise BoomError("modules.json is not a list of modules", path=file)
    return modules


def check_model(
    path: str | Path, *, tokenizer: bool = True, finite: bool = True, allow_pickle: bool = False,
    transformer_finite: bool = True,
) -> None:
    """Refuse a model dir that cannot give right results; one line naming the file and problem.

    Checks: config.json, tokenizer files (``tokenizer``), every safetensors file of the
    transformer and of the sentence-transformers modules readable with an honest header, and
    every floating tensor finite (``finite``; reads each tensor once). ``transformer_finite=False``
    leaves the transformer's own weights to a reader that checks them as it reads (a BOOM merge's
    kernel) and checks only the modules' (Dense).
    """
    model_dir = Path(path)
    transformer = transformer_dir(model_dir)
    weights = model_files(transformer, allow_pickle=allow_pickle)
    if tokenizer:
        check_tokenizer(transformer)
    heads = [model_dir / m["path"] for m in _modules(model_dir) if m.get("path")]
    modules = [weights] if transformer_finite else []
    modules += [_module_files(d) for d in heads if d.resolve() != transformer.resolve()]
    if finite:
        hub_id, _ = cache_identity(model_dir.resolve())  # a Hub model's bar shows its id, not the snapshot hash
        for files in modules:
            check_finite(files, label=hub_id)


def _module_files(module_dir: Path) -> ModelFiles:
    """The safetensors of one sentence-transformers module dir (e.g. ``2_Dense``)."""
    tensors = {}
    for file in sorted(module_dir.glob("*.safetensors")):
        tensors.update(read_header(file))
    return ModelFiles(module_dir, tensors)


def check_tokenizer(model_dir: str | Path) -> None:
    """Refuse a dir without tokenizer files, naming what is missing."""
    model_dir = Path(model_dir)
    present = {p.name for p in model_dir.iterdir()} if model_dir.is_dir() else set()
    if any(all(name in present for name in names) for names in _TOKENIZER_SETS):
        return
    if "vocab.json" in present:
        raise BoomError("incomplete tokenizer: vocab.json without merges.txt or tokenizer_config.json", path=model_dir)
    raise BoomError(
        f"no tokenizer files (missing {_TOKENIZER_NAMES}); transformers would map every word to [UNK]",
        path=model_dir,
    )


def default_device() -> str:
    """``cuda`` when a CUDA device is available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_device_type(device: str) -> str:
    """``cpu``, ``cuda``, ``mps`` ... of a device string."""
    import torch

    return torch.device(device).type


def flushing_subnormals() -> bool:
    """Whether this thread computes subnormal floats as zero now (``torch.set_flush_denormal`` has no getter)."""
    import torch

    tiny = torch.tensor([torch.finfo(torch.float32).tiny])
    return bool((tiny / 2).item() == 0.0)


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Compute subnormal floats as zero on the CPU inside the block, then restore the previous mode.

    Decoders such as Gemma 3 underflow into subnormals, which x86 CPUs compute in microcode:
    encoding gemma-3-270m ran 10-30x slower without this (256 queries: 76 s vs 2.6 s on 2 cores).
    Values below 1.2e-38 become 0; nothing a model computes depends on them. The mode is the
    processor's, global to the thread, so it never outlives the block: other code in the process
    (hypothesis, numerics that test for IEEE behaviour) sees the default.
    """
    import torch

    was = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was:
            torch.set_flush_denormal(False)


def flush_subnormals_in_forward(model: torch.nn.Module) -> None:
    """Run each of ``model``'s top-level modules under :func:`subnormals_flushed` (forward hooks).

    sentence-transformers calls its modules one by one (``SentenceTransformer.forward`` is called
    directly by ``encode``, so a hook on the model itself would not run); backward passes are
    not covered: training wraps its loop in :func:`subnormals_flushed` itself.
    """
    import torch

    modes: list[bool] = []

    def enter(_module: torch.nn.Module, _args: Any) -> None:
        modes.append(flushing_subnormals())
        torch.set_flush_denormal(True)

    def leave(_module: torch.nn.Module, _args: Any, _output: Any) -> None:
        if modes and not modes.pop():
            torch.set_flush_denormal(False)

    for child in model.children():
        child.register_forward_pre_hook(enter)
        child.register_forward_hook(leave, always_call=True)


def check_device(device: str | None) -> str:
    """The device to use (default :func:`default_device`); refuse one this machine lacks."""
    import torch

    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise BoomError(f"--device {device}: not a torch device ({error})") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise BoomError(f"--device {device}: no CUDA device available (torch.cuda.is_available() is False)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise BoomError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise BoomError(f"--device {device}: MPS is not available")
    return device


def load_sentence_transformer(
    spec: str | Path | ResolvedModel, *, device: str | None = None, **kwargs: Any
) -> SentenceTransformer:
    """Resolve (unless already resolved), check and load ``spec`` as a ``SentenceTransformer``.

    ``device`` defaults to :func:`default_device`. ``kwargs`` go to ``SentenceTransformer``
    (e.g. ``model_kwargs``, ``trust_remote_code``). Any load failure becomes a one-line
    :class:`BoomError` naming the model.
    """
    resolved = spec if isinstance(spec, ResolvedModel) else resolve_model(spec)
    spec = resolved.spec
    check_model(resolved.path)
    device = check_device(device)
    from sentence_transformers import SentenceTransformer

    kwargs.setdefault("local_files_only", True)
    try:
        model = SentenceTransformer(str(resolved.path), device=device, **kwargs)
    except Exception as error:  # noqa: BLE001 - a model that does not load is a user-facing error
        logger.debug("loading %s failed", spec, exc_info=True)
        raise BoomError(f"cannot load as a sentence-transformers model ({first_line(error)})", path=spec) from None
    if torch_device_type(device) == "cpu":
        flush_subnormals_in_forward(model)
    return model

