"""Provenance: the one owner of ``boom_member.json`` and ``boom_lineage.json``; what a model is made from
is written, read and validated here and nowhere else.

Owns: nothing of its own; it names the package's public interface, re-exported from :mod:`.records`
(the file names; the typed records :class:`MemberManifest` and :class:`Lineage`, read and validated;
writing ``boom_member.json``), :mod:`.writing` (writing ``boom_lineage.json`` with ``boom_members/``, and
the record of a model made from one other without training, :data:`SOURCE_KINDS`), :mod:`.questions`
(questions answered from the records through the one lineage walker) and :mod:`.model_hash` (the one model
hash, cached). The package may
not import the merge pipeline, training, evaluation or the card (it resolves Hub ids with
:mod:`boom_merge.model_refs`).
"""

from __future__ import annotations

from boom_merge.lineage.model_hash import model_sha256
from boom_merge.lineage.questions import full_data_index, hub_bases, hub_repo, training_datasets, walk
from boom_merge.lineage.records import (FORMAT_VERSION, LINEAGE_FILE, MAX_DEPTH, MEMBER_FILE, MEMBERS_DIR, SOURCE_KINDS,
                                        InputRecord, Lineage, MemberManifest, copied_manifests, location, now,
                                        read_lineage, read_member_manifest, read_record, write_member_manifest)
from boom_merge.lineage.writing import incremental_lineage, input_record, model_record, write_lineage, write_source

__all__ = ["FORMAT_VERSION", "LINEAGE_FILE", "MAX_DEPTH", "MEMBERS_DIR", "MEMBER_FILE", "SOURCE_KINDS", "InputRecord",
           "Lineage", "MemberManifest", "copied_manifests", "full_data_index", "hub_bases", "hub_repo",
           "incremental_lineage", "input_record", "location", "model_record", "model_sha256", "now", "read_lineage",
           "read_member_manifest", "read_record", "training_datasets", "walk", "write_lineage", "write_member_manifest",
           "write_source"]
