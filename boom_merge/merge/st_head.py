"""The sentence-transformers head of a merge: everything mergekit does not write.

Owns: the sentence-transformers files of a merge (modules, settings, merged Dense layers). It
may not write lineage or the card.

mergekit merges the transformer at a model's root. A sentence-transformers model
also has ``modules.json``, prompts and settings, a Pooling module, maybe Dense
layers and Normalize. :func:`plan_head` checks that all inputs embed the same way
(same modules, pooling, normalisation, prompts, vocabulary) before anything is
merged; :meth:`HeadPlan.write` then copies the settings into the output and merges
every weighted module (e.g. ``Dense``) with the recipe's own method and parameters,
so the output embeds exactly like the hand-merged model (in float32 arithmetic, stored in
the output's dtype). The merge pipeline (:mod:`boom_merge.merge.pipeline`) calls both; lineage
and the model card are its business, not this module's.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.errors import BoomError
from boom_merge.merge.recipes import ordered_references

logger = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)
_CONFIG_SUFFIX = " config"
_OPTIONAL = "sentence_bert_config.json:"  # compared only when both inputs state it
# Settings that differ between library versions but do not change embeddings, and the
# inference length limit, which belongs to how a model is used, not to its weights
# (the output takes the first member's).
_VOLATILE_KEYS = {"__version__", "model_type", "max_seq_length"}


@dataclass(frozen=True)
class ModuleInfo:
    """One entry of ``modules.json`` plus what lives in its folder."""

    name: str
    path: str
    kind: str  # class name, independent of the library version's module path
    config: dict[str, Any] | None  # as sentence-transformers reads it; None if unknown
    weights: Path | None
    has_folder: bool = True  # False: listed without a folder (e.g. MiniLM's Normalize)


@dataclass(frozen=True)
class HeadSpec:
    """How one sentence-transformers directory turns token states into embeddings."""

    path: Path
    modules: tuple[ModuleInfo, ...]
    settings: dict[str, dict[str, Any]]
    vocabulary: str  # sha256 of the vocabulary, "" if none found
    transformer: str = ""  # the transformer's folder: "" (the root), or sentence-transformers 0.x's "0_Transformer"

    def describe(self) -> dict[str, Any]:
        """Everything that must agree between merge inputs, by human-readable name."""
        described: dict[str, Any] = {
            "modules": [m.kind for m in self.modules],
            "vocabulary": self.vocabulary,
        }
        for module in self.modules:
            if module.path and module.config is not None:
                described[f"{module.kind} ({module.path}){_CONFIG_SUFFIX}"] = module.config
        st_config = self.settings.get("config_sentence_transformers.json", {})
        described["prompts"] = {k: v for k, v in (st_config.get("prompts") or {}).items() if v}
        described["default prompt"] = st_config.get("default_prompt_name")
        described["similarity function"] = st_config.get("similarity_fn_name") or "cosine"
        for key, value in self.settings.get("sentence_bert_config.json", {}).items():
            described[f"{_OPTIONAL}{key}"] = value
        return described


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BoomError(f"cannot read JSON ({error})", path=path) from None


def _vocabulary_hash(model_dir: Path) -> str:
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        data = _read_json(tokenizer_json)
        payload = json.dumps(
            [data.get("model", {}).get("vocab"), [t.get("content") for t in data.get("added_tokens", [])]],
            sort_keys=True,
        ).encode()
        return hashlib.sha256(payload).hexdigest()
    for name in ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.json"):
        if (model_dir / name).is_file():
            return hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    return ""


def _canonical_config(model_dir: Path, entry: dict[str, Any]) -> dict[str, Any] | None:
    """A module's configuration as sentence-transformers itself reads it.

    Different library versions save the same module differently (MiniLM's
    ``pooling_mode_mean_tokens: true`` is today's ``pooling_mode: "mean"``), so
    comparing files would refuse compatible inputs. ``None`` if the module class
    cannot load it here; the saved JSON is compared instead.
    """
    module_path, _, class_name = str(entry.get("type", "")).rpartition(".")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module_class = getattr(importlib.import_module(module_path), class_name)
            module = module_class.load(str(model_dir), subfolder=entry.get("path", ""), local_files_only=True)
        return json.loads(json.dumps(module.get_config_dict(), sort_keys=True, default=str))
    except Exception as error:  # any loading failure: fall back to the files
        logger.debug("cannot load module %s of %s: %s", entry.get("type"), model_dir, error)
        return None


def _module_info(model_dir: Path, entry: dict[str, Any]) -> ModuleInfo:
    path = entry.get("path", "")
    folder = model_dir / path
    config: dict[str, Any] | None = None
    weights = None
    if path:
        config = _canonical_config(model_dir, entry)
    if path and folder.is_dir():
        if config is None:
            config = {
                file.name: {k: v for k, v in _read_json(file).items() if k not in _VOLATILE_KEYS}
                for file in sorted(folder.glob("*.json"))
            }
        weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
    return ModuleInfo(
        name=str(entry.get("name", entry.get("idx", ""))),
        path=path,
        kind=str(entry.get("type", "")).rsplit(".", 1)[-1],
        config=config,
        weights=weights,
        has_folder=bool(path) and folder.is_dir(),
    )


def read_head(model_dir: str | Path) -> HeadSpec | None:
    """Read a sentence-transformers directory; ``None`` for a plain transformers model."""
    model_dir = Path(model_dir)
    modules_file = model_dir / MODULES_FILE
    if not modules_file.is_file():
        return None
    entries = _read_json(modules_file)
    if not isinstance(entries, list) or not entries:
        raise BoomError("modules.json must be a non-empty list of modules", path=modules_file)
    first = str(entries[0].get("path", "")) if isinstance(entries[0], dict) else ""
    transformer = str(entries[0].get("type", "")).endswith("Transformer")
    if first and not (transformer and (model_dir / first / "config.json").is_file()):
        raise BoomError(
            f"the first module ({entries[0].get('type')}) lives in {first!r}; boom-merge needs the "
            "transformer there (a Transformer module with its config.json) or at the model root",
            path=modules_file,
        )
    # the transformer itself is compared by the input checks (tensors, config, tokenizer), not loaded here
    modules = (ModuleInfo(str(entries[0].get("name", entries[0].get("idx", ""))), first,
                          str(entries[0].get("type", "")).rsplit(".", 1)[-1], None, None, bool(first)),
               *(_module_info(model_dir, entry) for entry in entries[1:]))
    settings = {
        file: {k: v for k, v in _read_json(folder / file).items() if k not in _VOLATILE_KEYS}
        for file, folder in _settings_folders(model_dir, first).items()
        if (folder / file).is_file()
    }
    return HeadSpec(model_dir, modules, settings, _vocabulary_hash(model_dir / first), first)


def _settings_folders(model_dir: Path, transformer: str) -> dict[str, Path]:
    """Where each settings file lives: the Transformer module's own settings beside it (0.x: ``0_Transformer/``)."""
    return {"config_sentence_transformers.json": model_dir, "sentence_bert_config.json": model_dir / transformer}


def check_compatible(heads: list[HeadSpec]) -> None:
    """Raise naming the first setting in which an input embeds differently from the first."""
    reference = heads[0]
    expected = reference.describe()
    for other in heads[1:]:
        described = other.describe()
        # modules first: a missing Normalize is clearer as a module list than as a config
        for key in [*expected, *(k for k in described if k not in expected)]:
            one_sided = key not in expected or key not in described
            if one_sided and (key.endswith(_CONFIG_SUFFIX) or key.startswith(_OPTIONAL)):
                continue  # unreadable on one side, or a setting one library version omits
            if expected.get(key) != described.get(key):
                raise BoomError(
                    f"inputs embed differently: {key} is {_short(expected.get(key))} in "
                    f"{reference.path} but {_short(described.get(key))} in {other.path}; "
                    "merging them would not give one consistent embedding model"
                )


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        text = f"vocab sha256 {text[:12]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class HeadPlan:
    """A checked set of sentence-transformers inputs, ready to finish an output.

    ``config`` is a deep copy taken before merging: mergekit's planner rewrites the
    configuration it is given in place (``models`` become ``modules``).
    """

    config: Any
    refs: tuple[Any, ...]
    heads: tuple[HeadSpec, ...]
    reference: HeadSpec

    def parameter_sources(self, model: Any = None):
        """Settings for ``model`` from highest to lowest precedence, as mergekit reads them."""
        if model is not None:
            for entry in self.config.models or []:
                if entry.model == model:
                    yield entry.parameters
            for output_slice in self.config.slices or []:
                for source in output_slice.sources:
                    if source.model == model:
                        yield source.parameters
        yield self.config.parameters

    def write(self, out_dir: str | Path) -> None:
        """Copy settings and modules into ``out_dir``; merge weighted modules."""
        out_dir = Path(out_dir)
        ref = self.reference.path
        shutil.copy2(ref / MODULES_FILE, out_dir / MODULES_FILE)
        if self.reference.transformer:  # the output's transformer is at the root, where mergekit wrote it
            modules = _read_json(ref / MODULES_FILE)
            modules[0]["path"] = ""
            (out_dir / MODULES_FILE).write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        for name, folder in _settings_folders(ref, self.reference.transformer).items():
            if (folder / name).is_file():
                shutil.copy2(folder / name, out_dir / name)
        # The vocabulary is the same for all inputs (checked), but tokenizer settings such
        # as model_max_length follow the reference member, not the base that mergekit
        # copies them from: otherwise a merge with a base would silently embed with the
        # base's length limit.
        tokenizer = ref / self.reference.transformer
        for name in TOKENIZER_FILES:
            if (out_dir / name).is_file():
                (out_dir / name).unlink()
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, out_dir / name)
        for index, module in enumerate(self.reference.modules[1:], start=1):
            source = next((h.path / module.path for h in self.heads if h.modules[index].has_folder), None)
            if source is None:
                continue  # no input has this module's folder; it loads with its defaults
            target = out_dir / module.path
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*WEIGHT_FILES))
            if module.weights is not None:
                _merge_module_weights(self, module, target)


def plan_head(merge_config: Any, paths: list[Path] | None = None) -> HeadPlan | None:
    """Check a mergekit configuration's inputs; ``None`` unless all are sentence-transformers.

    ``paths`` are the inputs' local dirs in :func:`~boom_merge.merge.recipes.ordered_references`
    order (Hub ids resolved); default: the references' own paths.
    """
    refs = ordered_references(merge_config)
    paths = [Path(ref.model.path) for ref in refs] if paths is None else [Path(p) for p in paths]
    heads = [read_head(p) if p.is_dir() else None for p in paths]
    if all(head is None for head in heads):
        return None
    if any(head is None for head in heads):
        plain = [str(p) for p, h in zip(paths, heads) if h is None]
        raise BoomError(
            f"mixing sentence-transformers and plain models is not supported: {', '.join(plain)} "
            "has no modules.json"
        )
    check_compatible(heads)
    non_base = [h for h, ref in zip(heads, refs) if ref != merge_config.base_model]
    return HeadPlan(merge_config.model_copy(deep=True), tuple(refs), tuple(heads), (non_base or heads)[0])


def _load_weights(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _merge_module_weights(plan: HeadPlan, module: ModuleInfo, target: Path) -> None:
    """Merge one weighted module (e.g. Dense) tensor by tensor with the recipe's method.

    Not mergekit's ``merge_state_dicts``: one parameter set for all tensors, and its own dtype rule.
    """
    from mergekit.merge_methods import get, merge_tensors
    import torch
    from mergekit.parameter_resolver import resolve_parameters
    from safetensors.torch import save_file

    method = get(plan.config.merge_method)
    models = list(plan.refs)
    base = plan.config.base_model
    state_dicts = []
    for head in plan.heads:
        info = next(m for m in head.modules if m.path == module.path)
        state_dicts.append(_load_weights(info.weights))
    merged = {}
    for key, first in state_dicts[0].items():
        tensor_name = f"{module.path}.{key}"
        if not first.is_floating_point():
            merged[key] = first.clone()
            continue
        # float32 arithmetic (wider inputs stay as they are); the output keeps the inputs' dtype
        tensors = [sd[key].to(torch.promote_types(sd[key].dtype, torch.float32)) for sd in state_dicts]
        out_dtype = getattr(torch, plan.config.out_dtype) if plan.config.out_dtype else first.dtype
        shared, per_input = resolve_parameters(
            method.spec,
            tensor_name=tensor_name,
            inputs={model: tensor_name for model in models},
            sources=plan.parameter_sources,
            base_model=base,
            t=0.0,
        )
        parameters = dict(shared)
        for spec in method.spec.input_parameters:
            parameters[spec.name] = {
                model: values[spec.name] for model, values in per_input.items() if spec.name in values
            }
        merged[key] = merge_tensors(
            tensors,
            method,
            parameters=parameters,
            ids=models,
            base_index=models.index(base) if base in models else None,
            name=tensor_name,
        ).to(out_dtype).contiguous()
    save_file(merged, str(target / "model.safetensors"))
    logger.info("merged %d tensors of module %s", len(merged), module.path)
