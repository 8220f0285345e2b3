"""BOOM's own sections of a model card, as Markdown: what the model is made from and how.

Owns: the Markdown of BOOM's card sections and the BOOM citation. It never reads or writes
files: :mod:`boom_merge.card.build` hands it the records and scores.

Members with their sample ratios, seeds and sampled data; the merge recipe; the lineage
(inputs with roles, weights, Hub ids, and the chain of incremental updates); dataset
licences; the BOOM citation. Pure functions of the provenance records (:mod:`boom_merge.lineage`)
and of evaluation scores (:mod:`boom_merge.card.scores`); they read no files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

from boom_merge.card.scores import Score, scores_table
from boom_merge.lineage import InputRecord, Lineage, MemberManifest

#: markers around BOOM's sections, so that rebuilding a card replaces them instead of adding more
START, END = "<!-- boom-merge: start -->", "<!-- boom-merge: end -->"

BOOM_CITATION = """@misc{boom2026,
    title = {BOOM: Bagging-based rObust mOdel Merging},
    year = {2026},
    eprint = {2602.05787},
    archivePrefix = {arXiv},
    url = {https://arxiv.org/abs/2602.05787},
}"""


# an absolute local path as a YAML value (``model: /x/y``, ``- /x/y``, quoted or not)
_YAML_PATH = re.compile(r"""((?::|^\s*-)\s+)(?:"((?:/|~/)[^"]*)"|'((?:/|~/)[^']*)'|((?:/|~/)[^\s#,}\]]*))""", re.M)


def shown_path(path: str | None) -> str:
    """A model as the card (which push uploads) names it: a local dir by its name, never its absolute path;
    a Hub id or relative spelling as recorded."""
    if not path:
        return "?"
    if os.path.isabs(path) or path.startswith("~"):
        return os.path.basename(os.path.normpath(path)) or path
    return path


def _datasets_cell(manifest: MemberManifest) -> str:
    return ", ".join(
        f"{name}: {entry.get('sampled', '?')} / {entry.get('available', '?')}" if entry else name
        for name, entry in manifest.datasets.items()
    )


def members_section(members: Sequence[tuple[str, MemberManifest]]) -> str:
    rows = ["| member | kind | sample ratio | seed | datasets (sampled / available) |", "|---|---|---|---|---|"]
    rows += [
        f"| {name} | {m.kind} | {'?' if m.sample_ratio is None else m.sample_ratio} | "
        f"{'?' if m.seed is None else m.seed} | {_datasets_cell(m)} |"
        for name, m in members
    ]
    return "### Members\n\n" + "\n".join(rows) + "\n"


def _yaml_name(path: str) -> str:
    name = shown_path(path)
    return name if re.fullmatch(r"[\w.-]+", name) else json.dumps(name)


def recipe_section(recipe_yaml: str) -> str:
    shown = _YAML_PATH.sub(lambda m: m.group(1) + _yaml_name(next(g for g in m.groups()[1:] if g)), recipe_yaml)
    return f"### Recipe\n\n```yaml\n{shown.rstrip()}\n```\n"


def _hub_cell(record: InputRecord) -> str:
    if record.hub_id:
        return f"{record.hub_id}@{record.revision[:12]}" if record.revision else record.hub_id
    return f"from {', '.join(record.hub_bases)}" if record.hub_bases else ""


def lineage_section(lineage: Lineage) -> str:
    """The inputs, and for incremental updates the chain of updates back to the first model."""
    lines = ["### Lineage\n"]
    if lineage.inputs:
        lines += ["| input | role | weight | Hub id (or its Hub bases) | training datasets |", "|---|---|---|---|---|"]
        lines += [
            f"| {shown_path(r.path)} | {r.role} | {'' if r.weight is None else r.weight} | {_hub_cell(r)} "
            f"| {', '.join(r.datasets or ())} |"
            for r in lineage.inputs
        ]
        lines.append("")
    generations = lineage.generations()
    for generation in generations:
        if generation.kind != "incremental":
            break
        old, update = generation.data.get("old") or {}, generation.data.get("update") or {}
        weight = generation.data.get("update_weight", "?")
        base = shown_path((generation.data.get("update_base") or {}).get("path"))
        how = (f"{generation.data.get('interpolation', '?')} interpolation, update weight {weight}"
               if generation.data.get("mode", "interpolate") != "add"
               else f"add mode, OLD + {weight}·(UPDATE − BASE), base `{base}`")
        lines.append(
            f"- incremental update created {generation.created or '?'}: {how}; "
            f"old `{shown_path(old.get('path'))}` (sha256 `{old.get('sha256', '?')}`), "
            f"update `{shown_path(update.get('path'))}` (sha256 `{update.get('sha256', '?')}`)"
        )
    first = generations[-1]
    if len(generations) > 1 and first.kind != "incremental":
        lines.append(f"- first model: a {first.kind} ({first.method or '?'}), created {first.created or '?'}")
    return "\n".join(lines) + "\n"


def base_section(lineage: Lineage) -> str:
    """What ``boom-merge base`` made the model from (Hub id, else file or dir name) and with which settings."""
    source, settings = lineage.source or {}, lineage.data.get("settings") or {}
    revision = f"@{source['revision'][:12]}" if source.get("hub_id") and source.get("revision") else ""
    name = source.get("hub_id") or shown_path(source.get("name") or source.get("path"))
    lines = ["### Embedding base (`boom-merge base`)\n", f"- made from: `{name}{revision}`"]
    for key in ("architecture", "pooling", "normalize", "bidirectional", "max_seq_length", "pad_token", "padding_side"):
        if key in settings:
            lines.append(f"- {key.replace('_', ' ')}: `{settings[key]}`")
    lines += [f"- {prompt} prompt: `{json.dumps(text)[1:-1]}`" for prompt, text in (settings.get("prompts") or {}).items()]
    return "\n".join(lines) + "\n"


def licences_section(licences: Mapping[str, str]) -> str:
    return "### Dataset licences\n\n" + "".join(f"- {name}: {lic}\n" for name, lic in sorted(licences.items()))


def summary_line(kind: str, method: str | None, n_inputs: int, bases: Sequence[str]) -> str:
    """One sentence: what this model is."""
    derived = f" derived from {', '.join(f'`{b}`' for b in bases)}" if bases else ""
    made_from = f"`{bases[0]}`" if bases else "a local model (below)"
    if kind == "merge":
        what = f"a merge of {n_inputs} models with mergekit's `{method or 'unknown'}` method{derived}"
    elif kind == "incremental":
        what = f"an incremental BOOM update (`{method or 'boom_incremental'}`) of an existing model{derived}"
    elif kind == "base":
        what = f"an embedding base (a plain language model with pooling, not trained) made from {made_from}"
    elif kind == "update":
        what = f"an update model (new data plus a sample of the old) fine-tuned{derived.replace(' derived', '')}"
    else:
        what = f"a BOOM bag member fine-tuned{derived.replace(' derived', '')}"
    return (
        f"This model is {what}, built with boom-merge (BOOM: Bagging-based rObust mOdel Merging, "
        "[arXiv 2602.05787](https://arxiv.org/abs/2602.05787)) and [mergekit](https://github.com/arcee-ai/mergekit).\n"
    )


def boom_sections(
    *,
    kind: str,
    method: str | None,
    n_inputs: int,
    bases: Sequence[str],
    members: Sequence[tuple[str, MemberManifest]],
    recipe_yaml: str | None,
    lineage: Lineage | None,
    licences: Mapping[str, str],
    scores: Sequence[Score],
) -> str:
    """BOOM's part of the card, between the :data:`START` / :data:`END` markers."""
    parts = ["## BOOM\n", summary_line(kind, method, n_inputs, bases)]
    if members:
        parts.append(members_section(members))
    if recipe_yaml:
        parts.append(recipe_section(recipe_yaml))
    if lineage is not None and lineage.source is None:
        parts.append(lineage_section(lineage))
    if kind == "base" and lineage is not None:
        parts.append(base_section(lineage))
    if licences:
        parts.append(licences_section(licences))
    if scores:
        parts.append("### Evaluation (MTEB, `boom-merge eval`)\n\n" + scores_table(scores))
    return f"{START}\n" + "\n".join(parts) + f"\n{END}\n"
