"""Model cards for merged and member models (one builder, used by merge and push).

The card is a Hugging Face ``README.md``: YAML metadata the Hub understands
(``library_name``, ``pipeline_tag``, ``base_model`` with ``base_model_relation``,
licence, MTEB scores as ``model-index``) and a body that says how the model was made:
merge method and recipe, members with their sample ratios, seeds and data, incremental
lineage, and the licences of the datasets used.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import metadata_load

from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, MEMBER_FILE, MEMBERS_DIR

logger = logging.getLogger(__name__)

CORPUS_MANIFEST = "manifest.json"
RECIPE_FILES = ("boom_recipe.yml", "mergekit_config.yml")
TAGS = [
    "sentence-transformers",
    "sentence-similarity",
    "feature-extraction",
    "boom-merge",
    "mergekit",
    "merge",
]
_HF_CACHE_DIR = re.compile(r"^models--([^/]+?)--([^/]+)$")


@dataclass(frozen=True)
class Member:
    """One bag member as recorded in its ``boom_member.json``."""

    name: str
    manifest: dict[str, Any]


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning unreadable or malformed files into a BoomError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BoomError(f"cannot read JSON: {error}", path=path) from None
    if not isinstance(data, dict):
        raise BoomError("expected a JSON object", path=path)
    return data


def hub_id(model: str) -> str:
    """The ``base_model`` entry for an input: a Hub id as given, else a readable name.

    Local paths inside a Hugging Face cache (``models--ORG--NAME/snapshots/...``) map
    back to ``ORG/NAME``; any other local path becomes its directory name.
    """
    path = Path(model)
    if not path.exists():
        return model
    for part in reversed(path.resolve().parts):
        match = _HF_CACHE_DIR.match(part)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    return path.resolve().name


def read_members(model_dir: Path) -> list[Member]:
    """Member manifests found in ``model_dir``: its own and those under ``boom_members/``.

    ``boom_members/NAME.json`` and ``boom_members/NAME/boom_member.json`` are both
    accepted; the member is named after the file (or folder).
    """
    members = []
    if (model_dir / MEMBER_FILE).is_file():
        members.append(Member(model_dir.name, read_json(model_dir / MEMBER_FILE)))
    copies = model_dir / MEMBERS_DIR
    if copies.is_dir():
        for path in sorted(copies.rglob("*.json")):
            name = path.parent.name if path.name == MEMBER_FILE else path.stem
            members.append(Member(name, read_json(path)))
    return members


def read_recipe(model_dir: Path) -> str | None:
    """The merge recipe saved with the model (``boom_recipe.yml`` first), if any."""
    for name in RECIPE_FILES:
        if (model_dir / name).is_file():
            return (model_dir / name).read_text(encoding="utf-8")
    return None


def recipe_inputs(recipe_yaml: str, *, source: Path | None = None) -> tuple[list[str], str | None]:
    """The input models and merge method of a mergekit recipe."""
    try:
        recipe = yaml.safe_load(recipe_yaml)
    except yaml.YAMLError as error:
        raise BoomError(f"invalid recipe YAML: {error}".replace("\n", " "), path=source) from None
    if not isinstance(recipe, dict):
        raise BoomError("recipe is not a YAML mapping", path=source)
    inputs = [entry["model"] if isinstance(entry, dict) else entry for entry in recipe.get("models") or []]
    base = recipe.get("base_model")
    if base and base not in inputs:
        inputs.insert(0, base)
    return [str(model) for model in inputs], recipe.get("merge_method")


def model_licence(model: str) -> str | None:
    """The ``license`` in a local model's README metadata, following a member to its base."""
    path = Path(model)
    if not path.is_dir():
        return None
    if (path / "README.md").is_file():
        licence = metadata_load(path / "README.md") or {}
        if licence.get("license"):
            return str(licence["license"])
    if (path / MEMBER_FILE).is_file():
        base = read_json(path / MEMBER_FILE).get("base_model")
        if base and Path(str(base)).resolve() != path.resolve():
            return model_licence(str(base))
    return None


def common_licence(inputs: Iterable[str]) -> str | None:
    """The licence shared by all inputs, or None if any is unknown or they differ."""
    licences = {model_licence(model) for model in inputs}
    return licences.pop() if len(licences) == 1 else None


def _corpus_licences(data: str) -> dict[str, str]:
    """Source -> licence from a built corpus's ``manifest.json`` (in the data folder or above it)."""
    for folder in (Path(data), Path(data).parent):
        if (folder / CORPUS_MANIFEST).is_file():
            sources = read_json(folder / CORPUS_MANIFEST).get("sources") or {}
            return {name: str(s["licence"]) for name, s in sources.items() if isinstance(s, dict) and s.get("licence")}
    return {}


def dataset_licences(members: Sequence[Member]) -> dict[str, str]:
    """Training dataset -> licence: a manifest entry's ``licence``, else the corpus manifest's.

    Members record their data folder as ``data``; update models as ``new_data.path`` and
    ``history.path``, with datasets named ``new/NAME`` and ``history/NAME``.
    """
    licences: dict[str, str] = {}
    for member in members:
        manifest = member.manifest
        folders = [manifest.get("data"), *((manifest.get(key) or {}).get("path") for key in ("new_data", "history"))]
        corpus: dict[str, str] = {}
        for folder in filter(None, folders):
            corpus |= _corpus_licences(str(folder))
        for name, entry in (manifest.get("datasets") or {}).items():
            source = name.rsplit("/", 1)[-1]
            licence = (entry.get("licence") if isinstance(entry, dict) else None) or corpus.get(source)
            if licence:
                licences[source] = str(licence)
    return licences


# MTEB task type (as the name's suffix of local tasks such as BoomFoldocRetrieval) -> HF task type
_HF_TASK_TYPES = {
    "Retrieval": "text-retrieval",
    "Reranking": "text-ranking",
    "STS": "sentence-similarity",
    "PairClassification": "text-classification",
    "Classification": "text-classification",
    "Clustering": "text-classification",
    "BitextMining": "translation",
}


def _task_metadata(task_result: Any) -> tuple[str, str, str]:
    """(HF task type, metric name, dataset type) of an MTEB task result.

    Tasks outside mteb's registry (ours, built from local corpora) get the task type
    from their name's suffix and the metric whose value equals the main score.
    """
    import mteb

    try:
        meta = mteb.get_task(task_result.task_name).metadata
    except KeyError:
        name = task_result.task_name
        task_type = next((hf for suffix, hf in _HF_TASK_TYPES.items() if name.endswith(suffix)), "other")
        return task_type, _main_metric(task_result), name
    return meta._hf_task_type()[0], meta.main_score, meta.dataset["path"]


def _main_metric(task_result: Any) -> str:
    """The score key equal to ``main_score`` in every split and subset, else ``main_score``.

    Ties (normalised embeddings make cosine and euclidean Spearman equal) go to ``cosine_*``.
    """
    candidates: set[str] | None = None
    for split_scores in task_result.scores.values():
        for scores in split_scores:
            equal = {k for k, v in scores.items() if k != "main_score" and v == scores["main_score"]}
            candidates = equal if candidates is None else candidates & equal
    cosine = {name for name in candidates or () if name.startswith("cosine_")}
    for found in (candidates, cosine):
        if found and len(found) == 1:
            return found.pop()
    return "main_score"


def _result_files(results_dir: Path, model_dir: Path | None) -> list[Path]:
    """MTEB result files of one model under ``results_dir`` (a ResultCache or ``eval --out``).

    Result files sit in one folder per model and revision. When there are several,
    ``summary.json``'s ``model_paths`` (written by ``boom-merge eval``) names the label of
    ``model_dir``, matched against each folder's ``model_meta.json`` name.
    """
    folders: dict[Path, list[Path]] = {}
    for path in sorted(results_dir.rglob("*.json")):
        if path.name != "model_meta.json" and {"task_name", "scores"} <= read_json(path).keys():
            folders.setdefault(path.parent, []).append(path)
    if len(folders) <= 1:
        return next(iter(folders.values()), [])
    summary = results_dir / "summary.json"
    paths = read_json(summary).get("model_paths", {}) if summary.is_file() else {}
    labels = [label for label, path in paths.items() if model_dir and Path(path).resolve() == model_dir.resolve()]
    for folder, files in folders.items():
        meta = folder / "model_meta.json"
        name = str(read_json(meta).get("name", "")) if meta.is_file() else ""
        if labels and name.rsplit("/", 1)[-1] == labels[0]:
            return files
    found = ", ".join(sorted(str(folder.relative_to(results_dir)) for folder in folders))
    raise BoomError(
        f"results of several models ({found}) and none is this model's; pass its own folder", path=results_dir
    )


def mteb_eval_results(results_dir: Path, model_dir: Path | None = None) -> list[EvalResult]:
    """EvalResults (main score per task, split and subset) of ``model_dir`` from saved MTEB results.

    Result files (JSON with ``task_name`` and ``scores``) are read with mteb's own
    ``TaskResult`` loader.
    """
    from mteb import TaskResult

    if not results_dir.is_dir():
        raise BoomError("MTEB results directory not found", path=results_dir)
    results = []
    for path in _result_files(results_dir, model_dir):
        try:
            task_result = TaskResult.from_disk(path)
        except (ValueError, KeyError, TypeError) as error:  # mteb's loader raises all three
            raise BoomError(f"not a valid MTEB result: {str(error).splitlines()[0]}", path=path) from None
        results.extend(_task_eval_results(task_result))
    if not results:
        raise BoomError("no MTEB result files (TaskName.json) found", path=results_dir)
    return results


def _task_eval_results(task_result: Any) -> list[EvalResult]:
    """One EvalResult per split and subset of one MTEB ``TaskResult``."""
    task_type, metric, dataset_type = _task_metadata(task_result)
    return [
        EvalResult(
            task_type=task_type,
            task_name=task_result.task_name,
            dataset_type=dataset_type,
            dataset_name=f"MTEB {task_result.task_name} ({scores.get('hf_subset', 'default')})",
            dataset_config=scores.get("hf_subset", "default"),
            dataset_split=split,
            dataset_revision=task_result.dataset_revision,
            metric_type=metric,
            metric_name=metric,
            metric_value=float(scores["main_score"]),
            source_name="MTEB",
            source_url="https://github.com/embeddings-benchmark/mteb",
        )
        for split, split_scores in task_result.scores.items()
        for scores in split_scores
    ]


def _members_section(members: Sequence[Member]) -> str:
    rows = [
        "| member | kind | sample ratio | seed | datasets (sampled / available) |",
        "|---|---|---|---|---|",
    ]
    for member in members:
        m = member.manifest
        data = ", ".join(
            f"{name}: {entry.get('sampled', '?')} / {entry.get('available', '?')}"
            if isinstance(entry, dict)
            else name
            for name, entry in (m.get("datasets") or {}).items()
        )
        rows.append(
            f"| {member.name} | {m.get('kind', 'member')} | {m.get('sample_ratio', '?')} "
            f"| {m.get('seed', '?')} | {data} |"
        )
    return "## Members\n\n" + "\n".join(rows) + "\n"


def _lineage_section(lineage: dict[str, Any]) -> str:
    """``boom_lineage.json``: the inputs, and for incremental updates the chain of updates."""
    lines = ["## Lineage\n"]
    if lineage.get("inputs"):
        lines += ["| input | role | weight | training datasets |", "|---|---|---|---|"]
        lines += [
            f"| {record.get('path', '?')} | {record.get('role', '?')} | {record.get('weight', '')} "
            f"| {', '.join(record.get('datasets') or [])} |"
            for record in lineage["inputs"]
        ]
        lines.append("")
    generation: dict[str, Any] | None = lineage
    while generation and generation.get("kind") == "incremental":
        old, update = generation.get("old", {}), generation.get("update", {})
        lines.append(
            f"- incremental update created {generation.get('created', '?')}: "
            f"{generation.get('interpolation', '?')} interpolation, update weight {generation.get('update_weight', '?')}; "
            f"old `{old.get('path', '?')}` (sha256 `{old.get('sha256', '?')}`), "
            f"update `{update.get('path', '?')}` (sha256 `{update.get('sha256', '?')}`)"
        )
        generation = generation.get("old_lineage")
    if generation is not lineage and generation:
        lines.append(f"- first model: a {generation.get('kind', '?')} ({generation.get('method', '?')}), "
                     f"created {generation.get('created', '?')}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _body(
    model_id: str,
    *,
    inputs: Sequence[str],
    relation: str,
    method: str | None,
    recipe_yaml: str | None,
    members: Sequence[Member],
    lineage: dict[str, Any] | None,
    licences: dict[str, str],
    eval_results: Sequence[EvalResult],
) -> str:
    what = (
        f"a merge of {len(inputs)} models with the `{method or 'unknown'}` method"
        if relation == "merge"
        else f"a fine-tuned bag member of `{inputs[0]}`"
    )
    parts = [
        f"# {Path(model_id).name}\n\n"
        f"A [sentence-transformers](https://www.sbert.net) embedding model: {what}, built with "
        "[boom-merge](https://arxiv.org/abs/2602.05787) (BOOM: bagging-based robust model "
        "merging) and [mergekit](https://github.com/arcee-ai/mergekit).\n",
        "## Usage\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\n"
        f'model = SentenceTransformer("{model_id}")\n'
        'embeddings = model.encode(["An example sentence.", "Another one."])\n'
        "print(model.similarity(embeddings, embeddings))\n```\n",
        "## Inputs\n\n" + "".join(f"- `{model}`\n" for model in inputs),
    ]
    if relation == "merge":
        parts.append(f"## Merge\n\nMethod: `{method or 'unknown'}`\n")
    if recipe_yaml:
        parts.append(f"### Recipe\n\n```yaml\n{recipe_yaml.rstrip()}\n```\n")
    if members:
        parts.append(_members_section(members))
    if lineage:
        parts.append(_lineage_section(lineage))
    if licences:
        parts.append(
            "## Dataset licences\n\n" + "".join(f"- {name}: {lic}\n" for name, lic in sorted(licences.items()))
        )
    if eval_results:
        parts.append(
            "## Evaluation (MTEB)\n\n| task | split | subset | metric | value |\n|---|---|---|---|---|\n"
            + "".join(
                f"| {r.task_name} | {r.dataset_split} | {r.dataset_config} | {r.metric_type} | {r.metric_value:.4f} |\n"
                for r in eval_results
            )
        )
    return "\n".join(parts)


def build_model_card(
    model_dir: str | Path,
    *,
    inputs: Sequence[str] | None = None,
    recipe_yaml: str | None = None,
    method: str | None = None,
    results_dir: str | Path | None = None,
    model_id: str | None = None,
) -> ModelCard:
    """Build the card of the model in ``model_dir`` from its saved manifests.

    ``inputs``, ``recipe_yaml`` and ``method`` default to what the model directory
    records (recipe file, or ``boom_member.json``'s base model for a trained member).
    ``model_id`` is the name used in the usage snippet (the Hub repo id when pushing).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BoomError("model directory not found", path=model_dir)
    members = read_members(model_dir)
    own = read_json(model_dir / MEMBER_FILE) if (model_dir / MEMBER_FILE).is_file() else None
    lineage = read_json(model_dir / LINEAGE_FILE) if (model_dir / LINEAGE_FILE).is_file() else None
    if recipe_yaml is None:
        recipe_yaml = read_recipe(model_dir)
    if recipe_yaml is not None:
        recipe_models, recipe_method = recipe_inputs(recipe_yaml, source=model_dir)
        inputs = inputs or recipe_models
        method = method or recipe_method
    elif not inputs and own is not None and own.get("base_model"):
        inputs = [str(own["base_model"])]
    if not inputs:
        raise BoomError("cannot tell the model's inputs: no recipe or boom_member.json", path=model_dir)
    relation = "finetune" if own is not None and recipe_yaml is None else "merge"
    eval_results = mteb_eval_results(Path(results_dir), model_dir) if results_dir is not None else []
    model_id = model_id or model_dir.name
    data = ModelCardData(
        base_model=[hub_id(model) for model in inputs],
        base_model_relation=relation,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=list(TAGS),
        license=common_licence(inputs),
        model_name=model_id if eval_results else None,
        eval_results=eval_results or None,
    )
    body = _body(
        model_id,
        inputs=inputs,
        relation=relation,
        method=method,
        recipe_yaml=recipe_yaml,
        members=members,
        lineage=lineage,
        licences=dataset_licences(members),
        eval_results=eval_results,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(
    model_dir: str | Path,
    *,
    inputs: Sequence[str],
    recipe_yaml: str | None = None,
    method: str | None = None,
    results_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Write the card as ``model_dir/README.md`` (replacing mergekit's) and return its path.

    ``title``: the model's name in the card (the final output name; default the dir name).
    """
    card = build_model_card(
        model_dir,
        inputs=inputs,
        recipe_yaml=recipe_yaml,
        method=method,
        results_dir=results_dir,
        model_id=title,
    )
    path = Path(model_dir) / "README.md"
    path.write_text(str(card), encoding="utf-8")
    logger.info("wrote model card %s", path)
    return path
