"""Embedding bases: a plain transformer made a sentence-transformers model that ``train --base`` takes.

Owns: ``boom-merge base``: reading FROM (a model dir, a Hub id ``org/name[@REV]`` resolved by
:mod:`boom_merge.model_refs`, or a ``.gguf`` file, dequantized), refusing what is no plain transformer,
and the modules and settings of the base: pooling, ``Normalize``, bidirectional attention, max
length, prompts, pad token and padding side, and the card's ``base_model``. It never modifies
FROM and never trains; the provenance record is written by :mod:`boom_merge.lineage`, the output
dir by :mod:`boom_merge.outputs`.

Everything is read and built in memory (a GGUF file is dequantized into a scratch dir outside
OUT) before OUT's first byte is written, so bad input is one line naming FROM and leaves nothing.
Defaults follow the embedders built from such models (Qwen3-Embedding, the paper's): last-token
pooling for decoders, mean pooling for encoders, normalised embeddings. A tokenizer without a pad
token pads with its end-of-sequence token (else its unknown token); last-token pooling pads on
the left, so every row's last position is a real token for any reader of the hidden states
(sentence-transformers' pooling reads the attention mask and is right with either side).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from boom_merge.errors import BoomError
from boom_merge.lineage import hub_bases, location, write_source
from boom_merge.model_refs import cache_identity, check_model, first_line, resolve_model
from boom_merge.outputs import atomic_output_dir, check_output

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["POOLINGS", "BaseSettings", "PlainModel", "is_decoder", "make_base", "read_source"]

logger = logging.getLogger(__name__)

Pooling = Literal["lasttoken", "mean", "cls"]
POOLINGS: tuple[str, ...] = ("lasttoken", "mean", "cls")
BIDIRECTIONAL_KEY = "use_bidirectional_attention"
"""The config switch of architectures that can attend both ways (Gemma 3, Gemma, ...)."""
GGUF_INSTALL = "pip install 'boom-merge[gguf]'"
LONG_CONTEXT = 8192
"""A default max length above this is warned about: memory and time per batch grow with it."""
_DECODER_HEADS = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class PlainModel:
    """FROM as read: the dir transformers loads, the GGUF file in it (if any), its Hub identity.

    ``hub_id``/``revision``: FROM's Hub repo and commit (a Hub id, a cache snapshot or a GGUF
    file in one), else the one Hub model a local dir records as its origin, else None.
    """

    spec: str
    path: Path
    gguf_file: str | None
    hub_id: str | None
    revision: str | None

    @property
    def name(self) -> str:
        """The card's ``base_model``: the Hub id, else the GGUF file's or the dir's name."""
        return self.hub_id or self.gguf_file or self.path.name


def _opt(default: Any, help: str) -> Any:
    """A field with its CLI help (the ``base`` command's options are generated from these fields)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BaseSettings:
    """What ``boom-merge base`` makes of FROM (None: the default for its kind); validated on creation.

    Each field's metadata carries its help text: ``boom-merge base`` generates its options from
    these fields (``--pooling``, ``--normalize/--no-normalize``, ...), so a default lives here only.
    """

    pooling: Pooling | None = _opt(  # noqa: RUF009 - a field() with its help
        None, "Pooling of token states (default: lasttoken for decoders, mean for encoders).")
    normalize: bool = _opt(True, "End with a Normalize module (unit-length embeddings, as Qwen3-Embedding and the "
                                 "paper's models).")  # fmt: skip
    bidirectional: bool = _opt(False, "Attend both ways, where the architecture has the switch "
                                      f"(config {BIDIRECTIONAL_KEY}: Gemma 3).")  # fmt: skip
    max_seq_length: int | None = _opt(None, "Truncate inputs to this many tokens (default: the model's maximum; "
                                            f"above {LONG_CONTEXT} a warning suggests a smaller one).")  # fmt: skip
    query_prompt: str | None = _opt(None, "Prompt put before queries (prompt name 'query'), e.g. "
                                          "'Instruct: TASK\\nQuery: ' (a typed \\n is a newline); "
                                          "boom-merge train prompts its queries with it too.")  # fmt: skip
    document_prompt: str | None = _opt(None, "Prompt put before documents (prompt name 'document').")

    def __post_init__(self) -> None:
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise BoomError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise BoomError(f"max sequence length must be at least 1, got {self.max_seq_length}")

    def prompts(self) -> dict[str, str]:
        found = {"query": self.query_prompt, "document": self.document_prompt}
        return {name: text for name, text in found.items() if text is not None}


def read_source(spec: str | Path) -> PlainModel:
    """FROM resolved: a ``.gguf`` file as itself, a dir or Hub id through :func:`resolve_model`."""
    text = str(spec)
    file = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not file.is_file():
            raise BoomError("no such GGUF file", path=text)
        hub_id, revision = cache_identity(file.absolute().parent)
        return PlainModel(text, file.absolute().parent, file.name, hub_id, revision)
    if file.is_file():
        raise BoomError("not a transformer: a file, neither a model dir nor a .gguf file", path=text)
    resolved = resolve_model(text)
    hub_id, revision = resolved.hub_id, resolved.revision
    if hub_id is not None and not (resolved.path / "config.json").is_file():
        return _gguf_repo(text, resolved.path, hub_id, revision)
    if hub_id is None:
        carried = hub_bases(resolved.path)
        hub_id = carried[0] if len(carried) == 1 else None
    return PlainModel(text, resolved.path, None, hub_id, revision)


def _gguf_repo(spec: str, snapshot: Path, hub_id: str, revision: str | None) -> PlainModel:
    """A Hub repo without config.json (a GGUF repo, e.g. ``org/name-GGUF``): its one .gguf file in the cache.

    Its .gguf files are never downloaded with the model (one repo holds many quantizations):
    ``hf download`` puts the wanted one in the cache.
    """
    files = sorted(snapshot.glob("*.gguf")) + sorted(snapshot.glob("*/*.gguf"))
    if len(files) == 1:
        return PlainModel(spec, files[0].parent, files[0].name, hub_id, revision)
    get = f"`hf download {hub_id} FILE.gguf`"
    if not files:
        raise BoomError(f"not a transformer (no config.json), and no .gguf file of it in the cache: for a GGUF repo, "
                        f"{get} first", path=spec)  # fmt: skip
    names = ", ".join(f.relative_to(snapshot).as_posix() for f in files)
    raise BoomError(f"a GGUF repo with {len(files)} .gguf files in the cache ({names}): pass the path of the one "
                    f"to use ({get} prints it)", path=spec)  # fmt: skip


def _plain_dir(source: PlainModel, *, allow_pickle: bool = False) -> Path:
    """FROM's dir, refused unless it holds a plain transformer with a base model class."""
    if (source.path / "modules.json").is_file():
        raise BoomError("already a sentence-transformers model (modules.json): pass it to `train --base` as it is",
                        path=source.spec)  # fmt: skip
    if not (source.path / "config.json").is_file():
        raise BoomError("not a transformer (no config.json)", path=source.spec)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(source.path), local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable config is one line naming FROM
        raise BoomError(f"not a transformer transformers can read ({first_line(error)})", path=source.spec) from None
    _check_base_class(config, source)
    check_model(source.path, allow_pickle=allow_pickle)  # tokenizer files, honest safetensors, finite weights
    return source.path


def _check_base_class(config: PretrainedConfig, source: PlainModel) -> None:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if config.model_type not in MODEL_MAPPING_NAMES:
        raise BoomError(f"architecture {config.model_type!r} has no base model class (AutoModel) in transformers "
                        f"{metadata.version('transformers')}", path=source.spec)  # fmt: skip


def is_decoder(config: PretrainedConfig) -> bool:
    """A causal language model: an architecture with a causal LM head (``ForCausalLM``, ``LMHeadModel``), or a
    type with a causal LM class and no masked one (a base class such as ``Qwen3Model`` names no head)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if any(name.endswith(_DECODER_HEADS) for name in config.architectures or []):
        return True
    kind = config.model_type
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _check_bidirectional(config: PretrainedConfig, decoder: bool, source: PlainModel) -> None:
    if not decoder:
        raise BoomError(f"--bidirectional: {config.model_type!r} is an encoder, which attends both ways already",
                        path=source.spec)  # fmt: skip
    if not hasattr(type(config), BIDIRECTIONAL_KEY):
        raise BoomError(f"--bidirectional: {config.model_type!r} has no bidirectional attention switch "
                        f"(config {BIDIRECTIONAL_KEY}, e.g. Gemma 3)", path=source.spec)  # fmt: skip


def _bidirectional(path: Path, config: PretrainedConfig) -> PreTrainedModel:
    """The model at ``path`` attending both ways, as a config.json with the switch on loads it.

    Not ``from_pretrained(..., use_bidirectional_attention=True)``: that sets the switch after the
    config's ``__post_init__`` (Gemma 3 halves ``sliding_window`` there), so the saved config would
    carry a window that loads differently.
    """
    from transformers import AutoModel

    both = type(config).from_dict({**config.to_dict(), BIDIRECTIONAL_KEY: True})
    return AutoModel.from_pretrained(str(path), config=both, dtype="auto", local_files_only=True)


def _pad_token(tokenizer: PreTrainedTokenizerBase, source: PlainModel) -> str | None:
    """The token to pad with when the tokenizer has none (its eos, else its unk); None when it has one."""
    if tokenizer.pad_token is not None:
        return None
    for token in (tokenizer.eos_token, tokenizer.unk_token):
        if token is not None:
            return str(token)
    raise BoomError("the tokenizer has no pad token, and no end-of-sequence or unknown token to pad with",
                    path=source.spec)  # fmt: skip


def _dequantize(source: PlainModel, scratch: Path) -> Path:
    """The GGUF file read by transformers (dequantized) and saved as a plain model in ``scratch``; returns it."""
    file = source.path / str(source.gguf_file)
    try:
        import gguf
    except ImportError:
        raise BoomError(f"reading a .gguf file needs the gguf package ({GGUF_INSTALL})", path=source.spec) from None
    version = metadata.version("gguf")
    try:
        gguf.GGUFReader(str(file))
    except Exception as error:  # noqa: BLE001 - a corrupt or newer file is one line naming FROM
        raise BoomError(f"not a GGUF file gguf {version} can read ({first_line(error)})", path=source.spec) from None
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(str(source.path), gguf_file=source.gguf_file, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), gguf_file=source.gguf_file, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - an architecture transformers cannot read from GGUF
        raise BoomError(f"transformers {metadata.version('transformers')} cannot load this GGUF file "
                        f"({first_line(error)})", path=source.spec) from None  # fmt: skip
    _check_base_class(model.config, source)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-loaded model: rebuild it plain
    plain = AutoModel.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    del model
    plain.save_pretrained(str(scratch))
    tokenizer.save_pretrained(str(scratch))
    return scratch


def _build(path: Path, source: PlainModel, settings: BaseSettings) -> tuple[SentenceTransformer, dict[str, Any]]:
    """The sentence-transformers model and the settings it was made with (for the provenance record)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    positions = getattr(config, "max_position_embeddings", None)
    if settings.max_seq_length is not None and isinstance(positions, int) and 0 < positions < settings.max_seq_length:
        raise BoomError(f"--max-seq-length {settings.max_seq_length} is above the model's {positions} positions "
                        "(max_position_embeddings)", path=source.spec)
    decoder = is_decoder(config)
    if settings.bidirectional:
        _check_bidirectional(config, decoder, source)
    pooling = settings.pooling or ("lasttoken" if decoder else "mean")
    from sentence_transformers import SentenceTransformer, models

    try:
        transformer = models.Transformer(str(path), max_seq_length=settings.max_seq_length, model_kwargs={"dtype": "auto"})
        if settings.bidirectional:
            transformer.model = _bidirectional(path, transformer.model.config)
    except Exception as error:  # noqa: BLE001 - weights or tokenizer transformers cannot load
        raise BoomError(f"cannot load as a transformer ({first_line(error)})", path=source.spec) from None
    if settings.max_seq_length is None and (transformer.max_seq_length or 0) > LONG_CONTEXT:
        logger.warning("%s: embeds up to %d tokens (the model's maximum), which can exhaust memory on long inputs; "
                       "pass --max-seq-length (e.g. 512) to truncate", source.spec, transformer.max_seq_length)  # fmt: skip
    tokenizer = transformer.tokenizer
    if tokenizer is None:
        raise BoomError("not a text model (no tokenizer)", path=source.spec)
    pad = _pad_token(tokenizer, source)
    if pad is not None:
        tokenizer.pad_token = pad
        transformer.model.config.pad_token_id = tokenizer.pad_token_id  # the model's config says so too
    if pooling == "lasttoken":
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"  # init_kwargs: saved with it
    dimension = transformer.get_embedding_dimension()
    modules = [transformer, models.Pooling(dimension, pooling_mode=pooling)]
    if settings.normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=settings.prompts() or None)
    model.model_card_data.base_model = source.name
    model.model_card_data.base_model_revision = source.revision
    made = {"architecture": config.model_type, "decoder": decoder, "pooling": pooling, "normalize": settings.normalize,
            "bidirectional": settings.bidirectional, "max_seq_length": model.max_seq_length,
            "prompts": settings.prompts(), "pad_token": str(tokenizer.pad_token), "padded_with": pad,
            "padding_side": tokenizer.padding_side}  # fmt: skip
    return model, made


def make_base(from_: str | Path, out: str | Path, settings: BaseSettings = BaseSettings(), *,
              force: bool = False, allow_pickle: bool = False) -> Path:  # fmt: skip
    """Save FROM as a sentence-transformers embedding base in ``out``; return ``out``.

    ``allow_pickle``: accept a FROM whose weights are pickled only (``pytorch_model.bin``;
    unpickling can run code). ``out`` gets the model, a card whose ``base_model`` is FROM's Hub id (or its name) and a
    provenance record (``boom_lineage.json``, kind ``base``) that members and merges made from
    it carry on.
    """
    out = Path(out)
    source = read_source(from_)
    inputs = [source.path / source.gguf_file] if source.gguf_file else [source.path]
    check_output(out, inputs=inputs, force=force)
    with tempfile.TemporaryDirectory(prefix="boom-merge-gguf-") as scratch:  # a GGUF file's plain model
        path = (_dequantize(source, Path(scratch)) if source.gguf_file
                else _plain_dir(source, allow_pickle=allow_pickle))  # fmt: skip
        model, made = _build(path, source, settings)
        with atomic_output_dir(out, inputs=inputs, force=force) as tmp:
            model.save(str(tmp))
            write_source(tmp, hub_id=source.hub_id, revision=source.revision, source=location(source.spec),
                         kind="base", name=source.name, settings=made)  # fmt: skip
    logger.info("%s: embedding base of %s (%s pooling)", out, source.name, made["pooling"])
    return out
