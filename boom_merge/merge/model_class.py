"""Which of a checkpoint's tensors its transformers model class loads.

Owns: the rule that decides, from the model class itself, which stored tensors transformers
neither saves nor needs: buffers that older versions saved and today's class keeps
non-persistent (``embeddings.position_ids`` in BERT-family checkpoints saved by transformers
4.x, such as the Hub's all-MiniLM-L6-v2; per-layer ``rotary_emb.inv_freq``), and names the
class's ``_keys_to_ignore_on_load_unexpected`` patterns match. It never reads weights, never
writes, and never runs a repository's own code (``trust_remote_code`` stays off: a class it
cannot build without it ignores nothing).

The class is the one sentence-transformers loads (``AutoModel`` for the checkpoint's config),
built on the ``meta`` device (no memory, no weights), once per config. A stored tensor is
*unloaded* when the class does not save it and it is one of the class's non-persistent
buffers (by name, or as the same buffer under a prefix or at an old place) or matches one of
its ignore patterns. Input checks compare models without these (:mod:`boom_merge.merge.checks`),
and merged outputs never contain them (:mod:`boom_merge.merge.mergekit_compat`): an output then
holds what a model trained today holds.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRule:
    """What one model class saves, keeps only in memory, and ignores on load."""

    class_name: str
    saved: frozenset[str]
    buffers: tuple[str, ...]
    ignore: re.Pattern[str] | None

    def unloaded(self, name: str) -> bool:
        """True when ``name`` is stored but the class neither saves nor loads it."""
        if name in self.saved:
            return False
        if any(name == buffer or name.endswith("." + buffer) for buffer in self.buffers):
            return True
        return bool(self.ignore is not None and self.ignore.search(name))


@functools.lru_cache(maxsize=32)
def _rule(config_json: str) -> LoadRule | None:
    """The rule of the class ``config_json`` builds; None when it cannot be built without remote code."""
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        settings = json.loads(config_json)
        config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        with torch.device("meta"):
            model = AutoModel.from_config(config, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - an unknown or remote-code class: every tensor is compared
        logger.debug("no model class for this config (%s): every stored tensor counts", error)
        return None
    saved = frozenset(model.state_dict())
    buffers = tuple(sorted({name for name, _ in model.named_buffers()} - saved))
    patterns = sorted(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    ignore = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    return LoadRule(type(model).__name__, saved, buffers, ignore)


def load_rule(config: Any) -> LoadRule | None:
    """The rule for a transformers config object (or a model dir holding ``config.json``)."""
    if isinstance(config, (str, Path)):
        file = Path(config) / "config.json"
        try:
            text = json.dumps(json.loads(file.read_text(encoding="utf-8")), sort_keys=True)
        except (OSError, UnicodeDecodeError, ValueError):
            return None  # the config checks name this file; nothing is ignored here
        return _rule(text)
    to_json = getattr(config, "to_json_string", None)
    return _rule(to_json(use_diff=False)) if callable(to_json) else None


def unloaded_tensors(model_dir: str | Path, names: Iterable[str]) -> frozenset[str]:
    """The tensors among ``names`` (stored in ``model_dir``) that its model class neither saves nor loads."""
    rule = load_rule(model_dir)
    if rule is None:
        return frozenset()
    found = frozenset(name for name in names if rule.unloaded(name))
    if found:
        logger.info("%s: not compared (%s neither saves nor loads them): %s",
                    model_dir, rule.class_name, ", ".join(sorted(found)))
    return found
