"""Model cards for merged, incremental, member and embedding-base models (one builder, used by merge and push).

Owns: rendering and writing the model card (``README.md``) of merged, incremental, pushed,
member and embedding-base (``boom-merge base``) models; no other boom-merge module builds one. It never writes anything but ``README.md``
and never computes a fact it can read: provenance comes from :mod:`boom_merge.lineage`, scores
from :mod:`boom_merge.card.scores`, dataset licences from the corpus manifest
(:mod:`boom_merge.evaluation.corpus`).

A card is what a sentence-transformers card is (``SentenceTransformerModelCardData`` rendered
with sentence-transformers' own template: model details with architecture, max length,
dimension and similarity function; training datasets with sizes and loss; hyperparameters;
framework versions; citations, BOOM's among them), followed by BOOM's sections
(:mod:`boom_merge.card.body`). A trained member keeps the card sentence-transformers' trainer
wrote for it, extended with BOOM's sections. The facts come from the provenance records
(:mod:`boom_merge.lineage`: kind, Hub bases, members, datasets) and from what evaluation wrote
(:mod:`boom_merge.card.scores`); this module re-derives none of them. The title and usage name
are the given ``title`` (the repo id on push, the final output name on merge), never a
temporary dir's name.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from textwrap import indent
from typing import Any

from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

from boom_merge.card.body import BOOM_CITATION, END, START, boom_sections
from boom_merge.card.scores import Score, eval_results, read_scores
from boom_merge.errors import BoomError
from boom_merge.lineage import (
    LINEAGE_FILE,
    Lineage,
    MemberManifest,
    copied_manifests,
    hub_bases,
    hub_repo,
    read_lineage,
    read_member_manifest,
    walk,
)

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
RECIPE_FILES = ("boom_recipe.yml", "mergekit_config.yml")
BASE_TAGS = ("sentence-transformers", "sentence-similarity", "feature-extraction", "boom-merge")
KIND_TAGS = {
    "merge": ("mergekit", "merge"),
    "incremental": ("mergekit", "merge", "boom-incremental"),
    "member": ("boom-member",),
    "update": ("boom-update",),
    "base": ("boom-base",),
}
RELATIONS = {"merge": "merge", "incremental": "merge", "member": "finetune", "update": "finetune", "base": "finetune"}
"""The Hub's ``base_model_relation``; an embedding base keeps its LM's weights (the Hub's own reading: finetune)."""
_SNIPPET = re.compile(r'(SentenceTransformer\(")[^"]*("\))')


@dataclass(frozen=True)
class Facts:
    """What the provenance records say about one model dir."""

    kind: str  # merge | incremental | member | update | base
    method: str | None
    bases: list[str]  # Hub ids, nearest first, in the merge's order
    base_revision: str | None
    inputs: list[str]
    members: list[tuple[str, MemberManifest]]
    manifest: MemberManifest | None
    lineage: Lineage | None
    recipe_yaml: str | None

    @property
    def relation(self) -> str:
        return RELATIONS[self.kind]


def read_recipe(model_dir: Path) -> str | None:
    """The merge recipe saved with the model (``boom_recipe.yml`` first), if any."""
    for name in RECIPE_FILES:
        if (model_dir / name).is_file():
            return (model_dir / name).read_text(encoding="utf-8")
    return None


def model_facts(
    model_dir: Path, *, inputs: Sequence[str] | None = None, recipe_yaml: str | None = None, method: str | None = None
) -> Facts:
    """The card's facts from ``model_dir``'s records; ``inputs``/``recipe_yaml``/``method`` as the merge knows them."""
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    recipe_yaml = recipe_yaml if recipe_yaml is not None else read_recipe(model_dir)
    if lineage is not None and lineage.kind in ("merge", "incremental"):
        kind, method = lineage.kind, method or lineage.method
        inputs = list(inputs or [r.path or r.hub_id or "?" for r in lineage.inputs])
    elif lineage is not None and lineage.kind == "base" and lineage.source is not None:
        kind, inputs = "base", [str(lineage.source.get("hub_id") or lineage.source.get("name") or "?")]
    elif manifest is not None:
        kind, inputs = manifest.kind if manifest.kind in RELATIONS else "member", [manifest.base_model or "?"]
    elif lineage is not None and lineage.kind == "copy":
        source = lineage.source or {}
        raise BoomError(f"a copy of {source.get('hub_id') or source.get('name') or 'another model'} (kind copy): "
                        "it has nothing of boom-merge's to describe; publish a model trained or merged from it",
                        path=model_dir / LINEAGE_FILE)
    elif recipe_yaml is not None or inputs:
        kind = "incremental" if method == "boom_incremental" else "merge"
        inputs = list(inputs or [])
    else:
        raise BoomError("cannot tell what the model is made from: no boom_lineage.json, boom_member.json or recipe",
                        path=model_dir)  # fmt: skip
    revision = manifest.base_model_revision if manifest is not None else None
    return Facts(kind, method, hub_bases(model_dir), revision, inputs, copied_manifests(model_dir), manifest,
                 lineage, recipe_yaml)  # fmt: skip


# --- licences ---------------------------------------------------------------------------


def _readme_licence(readme: Path | None) -> str | None:
    if readme is None or not readme.is_file():
        return None
    licence = (metadata_load(readme) or {}).get("license")
    return str(licence) if licence else None


def _spec_licences(spec: str | None, recurse: Callable[[Path], set[str | None]]) -> set[str | None]:
    """Licences of a model named in a record: a local dir's README (or what it derives from), a cached Hub card."""
    if not spec:
        return {None}
    path = Path(spec)
    if path.is_dir():
        own = _readme_licence(path / CARD_FILE)
        return {own} if own else recurse(path)
    repo = hub_repo(spec)
    if repo is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, CARD_FILE)
        return {_readme_licence(Path(cached)) if isinstance(cached, str) else None}
    return {None}


def _record_licences(model_dir: Path, recurse: Callable[[Path], set[str | None]]) -> set[str | None]:
    manifest, lineage = read_member_manifest(model_dir), read_lineage(model_dir)
    if manifest is not None:
        return _spec_licences(manifest.base_model or manifest.base_model_id, recurse)
    if lineage is not None and lineage.source is not None:
        return _spec_licences(lineage.source.get("hub_id"), recurse)
    if lineage is None or not lineage.inputs:
        return {None}
    found: set[str | None] = set()
    for record in lineage.inputs:
        exists = record.path and Path(record.path).is_dir()
        copy = read_member_manifest(model_dir / record.manifest) if record.manifest and not exists else None
        if copy is not None:
            found |= _spec_licences(copy.base_model or copy.base_model_id, recurse)
        else:
            found |= _spec_licences(record.path if exists else record.hub_id, recurse)
    return found


def model_licence(model_dir: str | Path) -> str | None:
    """The licence the model's origins share (their READMEs' ``license``), None if unknown or mixed."""
    licences = walk(model_dir, _record_licences, too_deep={None})
    return next(iter(licences)) if len(licences) == 1 else None


def dataset_licences(members: Sequence[tuple[str, MemberManifest]]) -> dict[str, str]:
    """Training dataset -> licence: the manifest entry's ``licence``, else the corpus manifest's sources."""
    from boom_merge.evaluation.corpus import read_sources

    licences: dict[str, str] = {}
    for _, manifest in members:
        corpus: dict[str, str] = {}
        for folder in map(Path, manifest.data_dirs()):
            root = next((f for f in (folder, folder.parent) if (f / "manifest.json").is_file()), None)
            if root is not None:
                corpus |= {name: s.licence for name, s in read_sources(root).items() if s.licence}
        parts = manifest.parts() or {"": {"datasets": manifest.datasets}}
        for part in parts.values():
            for name, entry in (part.get("datasets") or {}).items():
                licence = (entry.get("licence") if isinstance(entry, dict) else None) or corpus.get(name)
                if licence:
                    licences[name] = str(licence)
    return licences


# --- sentence-transformers' card ----------------------------------------------------------


def _training_config(members: Sequence[tuple[str, MemberManifest]]) -> Any | None:
    """The members' shared ``TrainConfig`` (None when they differ or it cannot be rebuilt)."""
    from boom_merge.training.config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    configs = {json.dumps({k: v for k, v in m.training_args.items() if k in known}, sort_keys=True) for _, m in members}
    if len(configs) != 1:
        return None
    try:
        return TrainConfig(**json.loads(configs.pop()))
    except (BoomError, TypeError, ValueError):
        return None


def _set_training(data: Any, model: Any, facts: Facts) -> None:
    """Datasets with sizes and loss, hyperparameters and citations, from the member manifests."""
    from sentence_transformers.util import fullname

    from boom_merge.training.trainer import build_loss

    config = _training_config(facts.members) if facts.members else None
    loss = None
    if config is not None:
        from boom_merge.training.config import TrainConfig

        loss = build_loss(model, config)
        args = asdict(config)
        data.all_hyperparameters = args
        data.non_default_hyperparameters = {k: v for k, v in args.items() if v != asdict(TrainConfig())[k]}
        loss_info: dict[str, Any] = {"fullname": fullname(loss)}
        if hasattr(loss, "get_config_dict"):
            loss_info["config_code"] = indent(f"```json\n{json.dumps(loss.get_config_dict(), indent=4, default=str)}\n```", "  ")
        columns = ["anchor", "positive", *(f"negative_{j}" for j in range(1, config.group_size))]
        sizes: dict[str, int] = {}
        for _, manifest in facts.members:
            for name, entry in manifest.datasets.items():
                size = entry.get("available", entry.get("sampled"))
                if isinstance(size, int):
                    sizes[name] = max(size, sizes.get(name, 0))
        data.train_datasets = [
            {"name": name, "size": size, "columns": columns, "loss": loss_info} for name, size in sorted(sizes.items())
        ]
    data.set_losses([loss] if loss is not None else [])
    data.citations["BOOM"] = BOOM_CITATION


def _weightless(model_dir: Path) -> Any:
    """``model_dir`` as a sentence-transformers model whose weights are never read (all on ``meta``).

    A card needs the model's structure (modules and their settings, the transformer's class,
    dimension, length, similarity), not its weights: a merge's output of several GiB is not read
    back for it. Built with sentence-transformers' own loader, the transformer from its config
    (``from_config``) and weighted modules (``Dense``) left unloaded; a module that is neither
    loads as usual.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Module, Transformer
    from sentence_transformers.base.modules.transformer import TRANSFORMER_TASK_TO_AUTO_MODEL

    def from_config(self: Any, name: str, task: str, config: Any, *args: Any, **kwargs: Any) -> Any:
        return TRANSFORMER_TASK_TO_AUTO_MODEL[task].from_config(config)

    def unloaded(cls: Any, *args: Any, model: Any = None, **kwargs: Any) -> Any:
        return model

    def module_class(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = SentenceTransformer._load_module_class_from_ref(self, *args, **kwargs)
        if isinstance(found, type) and issubclass(found, Transformer):
            return type(found.__name__, (found,), {"_load_model": from_config})
        if isinstance(found, type) and issubclass(found, Module):
            return type(found.__name__, (found,), {"load_torch_weights": classmethod(unloaded)})
        return found

    # the same class name: the card names the model's class
    skeleton = type(SentenceTransformer.__name__, (SentenceTransformer,), {"_load_module_class_from_ref": module_class})
    with torch.device("meta"):
        return skeleton(str(model_dir), device="meta", local_files_only=True)


def _st_card(model_dir: Path, facts: Facts, title: str) -> str:
    """The card sentence-transformers renders for this model (its template and card data), weights unread."""
    from sentence_transformers.base.model_card import generate_model_card

    try:
        model = _weightless(model_dir)
    except Exception as error:  # noqa: BLE001 - a model that does not load gets no card
        raise BoomError(f"cannot load as a sentence-transformers model ({type(error).__name__}: {error})",
                        path=model_dir) from None  # fmt: skip
    data = model.model_card_data
    data.local_files_only, data.generate_widget_examples = True, False
    data.model_id = data.model_name = title
    data.tags = [*BASE_TAGS, *KIND_TAGS[facts.kind]]
    if facts.relation == "finetune" and facts.bases:
        data.base_model, data.base_model_revision = facts.bases[0], facts.base_revision
    _set_training(data, model, facts)
    return generate_model_card(model)


def _trainer_card(model_dir: Path, facts: Facts, title: str) -> str | None:
    """A trained member's own card (written by sentence-transformers), retitled; None if it has none."""
    readme = model_dir / CARD_FILE
    if facts.relation != "finetune" or not readme.is_file():
        return None
    if (metadata_load(readme) or {}).get("library_name") != "sentence-transformers":
        return None
    text = readme.read_text(encoding="utf-8")
    end = text.find("\n---\n", 3) + 5 if text.startswith("---") else 0  # the title is the body's first heading
    text = text[:end] + re.sub(r"^# .*$", lambda _: f"# {title}", text[end:], count=1, flags=re.M)
    if BOOM_CITATION not in text and "### BibTeX\n" in text:
        text = text.replace("### BibTeX\n", f"### BibTeX\n\n#### BOOM\n```bibtex\n{BOOM_CITATION}\n```\n", 1)
    return text


def _with_boom(text: str, sections: str) -> str:
    """``text`` with BOOM's sections replaced (rebuilt cards), or inserted before the citations."""
    if START in text and END in text:
        head, _, rest = text.partition(START)
        return head + sections.rstrip("\n") + rest.partition(END)[2]
    where = text.find("\n## Citation")
    return text + "\n" + sections if where < 0 else text[: where + 1] + sections + "\n" + text[where + 1 :]


def _set_metadata(card: ModelCard, facts: Facts, title: str, licence: str | None, results: list[Any]) -> None:
    data = card.data
    own = set(KIND_TAGS[facts.kind])
    others = {tag for tags in KIND_TAGS.values() for tag in tags} - own
    data.tags = list(dict.fromkeys([*BASE_TAGS, *own, *(t for t in data.tags or [] if t not in others)]))
    data.library_name, data.pipeline_tag = "sentence-transformers", "sentence-similarity"
    if facts.bases:
        data.base_model = facts.bases[0] if facts.relation == "finetune" and len(facts.bases) == 1 else facts.bases
    else:
        data.base_model = None
    data.base_model_relation = facts.relation if facts.bases else None
    data.license = licence or data.license
    if results:
        data.model_name = title
        data.eval_results = [*(data.eval_results or []), *results]


def build_model_card(
    model_dir: str | Path,
    *,
    title: str | None = None,
    results_dir: str | Path | None = None,
    include_capped: bool = False,
    inputs: Sequence[str] | None = None,
    recipe_yaml: str | None = None,
    method: str | None = None,
) -> ModelCard:
    """Build the card of the model in ``model_dir`` from its records.

    ``title`` names the model in the heading and usage snippet (default: the dir's name). ``results_dir`` is an ``eval --out`` folder: its
    scores go into the body, and uncapped ones (all with ``include_capped``) into
    ``model-index``. ``inputs``, ``recipe_yaml`` and ``method`` default to what the dir records.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BoomError("model directory not found", path=model_dir)
    facts = model_facts(model_dir, inputs=inputs, recipe_yaml=recipe_yaml, method=method)
    title = title or model_dir.resolve().name
    scores: list[Score] = read_scores(results_dir, model_dir) if results_dir is not None else []
    text = _trainer_card(model_dir, facts, title)
    if text is None:
        text = _st_card(model_dir, facts, title) if (model_dir / "modules.json").is_file() else f"---\n---\n\n# {title}\n"
    text = _SNIPPET.sub(lambda m: f"{m.group(1)}{title}{m.group(2)}", text)
    sections = boom_sections(
        kind=facts.kind, method=facts.method, n_inputs=len(facts.inputs), bases=facts.bases, members=facts.members,
        recipe_yaml=facts.recipe_yaml, lineage=facts.lineage, licences=dataset_licences(facts.members), scores=scores,
    )  # fmt: skip
    card = ModelCard(_with_boom(text, sections))
    _set_metadata(card, facts, title, model_licence(model_dir), eval_results(scores, include_capped=include_capped))
    return card


def write_model_card(
    model_dir: str | Path,
    *,
    title: str | None = None,
    inputs: Sequence[str] | None = None,
    recipe_yaml: str | None = None,
    method: str | None = None,
    results_dir: str | Path | None = None,
    include_capped: bool = False,
) -> Path:
    """Write the card as ``model_dir/README.md`` (replacing mergekit's) and return its path."""
    card = build_model_card(
        model_dir, title=title, inputs=inputs, recipe_yaml=recipe_yaml, method=method,
        results_dir=results_dir, include_capped=include_capped,
    )  # fmt: skip
    path = Path(model_dir) / CARD_FILE
    path.write_text(str(card), encoding="utf-8")
    logger.info("wrote model card %s", path)
    return path
