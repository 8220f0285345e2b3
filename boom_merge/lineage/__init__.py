"""Provenance: the one owner of ``boom_member.json`` and ``boom_lineage.json``.

Owns: nothing of its own; it names the lineage package's public interface, re-exported from
:mod:`.records` (file names, the typed records, reading and validating them, writing
``boom_member.json``), :mod:`.writing` (writing ``boom_lineage.json`` and ``boom_members/``) and
:mod:`.questions` (questions answered from the records, the one lineage walker, the one model hash).

What a model is made from is written, read and validated here and nowhere else:

- ``boom_member.json`` (:class:`MemberManifest`): a trained member or update model, its base
  (as given, plus the Hub id and commit it derives from), seed, sample ratio, datasets with
  their sizes, training arguments. Training builds the dict (``training/manifest.py``);
- ``boom_lineage.json`` (:class:`Lineage`): a merge or incremental update, its inputs with
  roles, weights, training datasets and Hub ids, and a copy of each input's member manifest
  under ``boom_members/``, so the model stays self-describing after its members are deleted;
  or a model made from one other without training (:data:`SOURCE_KINDS`: a re-saved ``copy``, an
  embedding ``base`` from ``boom-merge base``), its ``source`` naming that model.

The package may not import the merge pipeline, training, evaluation or the card (it uses
:mod:`boom_merge.model_refs` to resolve Hub ids).
"""

from __future__ import annotations

from boom_merge.lineage.questions import full_data_index, hub_bases, hub_repo, model_sha256, training_datasets, walk
from boom_merge.lineage.records import (
    FORMAT_VERSION,
    LINEAGE_FILE,
    MAX_DEPTH,
    MEMBER_FILE,
    MEMBERS_DIR,
    SOURCE_KINDS,
    InputRecord,
    Lineage,
    MemberManifest,
    copied_manifests,
    location,
    now,
    read_lineage,
    read_member_manifest,
    read_record,
    write_member_manifest,
)
from boom_merge.lineage.writing import incremental_lineage, input_record, write_lineage, write_source

__all__ = [
    "FORMAT_VERSION", "LINEAGE_FILE", "MAX_DEPTH", "MEMBERS_DIR", "MEMBER_FILE", "SOURCE_KINDS", "InputRecord", "Lineage",
    "MemberManifest", "copied_manifests", "full_data_index", "hub_bases", "hub_repo", "incremental_lineage",
    "input_record", "location", "model_sha256", "now", "read_lineage", "read_member_manifest", "read_record",
    "training_datasets", "walk", "write_lineage", "write_member_manifest", "write_source",
]
