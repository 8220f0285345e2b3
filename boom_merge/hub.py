"""Publish a merged or member model on the Hugging Face Hub with a generated card.

Owns: publishing to the Hub (the upload plan, the token, the commit).

The upload is one commit of the model directory's files (recipe, manifests and
lineage included) plus ``README.md`` built by :mod:`boom_merge.card.build`, titled with the repo id
(a trained member keeps the card sentence-transformers wrote, extended). The card is built
in memory, so the local model is never modified.

Local paths do not travel: in the uploaded copies of the provenance files (recipe, lineage,
member manifests), of every other text file (reports such as ``update_weight/candidates.json``,
adapter records) and of the card, an absolute path of this machine is written as a Hub id and
commit when it is a Hub cache snapshot, else as its shortest trailing part that tells it apart
from the other local paths of the upload (``/home/me/runs/bag/member-0-r40`` -> ``member-0-r40``),
so the uploaded recipe runs with plain ``mergekit-yaml`` next to copies of its inputs, and no home
directory or mount point is published; a file that still names one after the rewrite (a binary
file) is left out. The local files stay as they are. The token comes from the argument, ``HF_TOKEN`` or
the saved login (``hf auth login``) and is never printed or logged: it is scrubbed from
error messages too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from boom_merge.card.build import CARD_FILE, RECIPE_FILES, build_model_card
from boom_merge.errors import BoomError
from boom_merge.lineage import LINEAGE_FILE, MEMBER_FILE, MEMBERS_DIR

logger = logging.getLogger(__name__)

_MODEL_MARKERS = ("modules.json", "config.json")


@dataclass(frozen=True)
class PushPlan:
    """What a push uploads: ``files`` are paths in the repo (sorted, card included).

    ``portable`` holds the uploaded bytes of the files whose local paths were rewritten (see the
    module docstring), ``left_out`` the files not uploaded because they name a local path that
    cannot be rewritten; every other file is uploaded as it is on disk.
    """

    repo_id: str
    model_dir: Path
    files: tuple[str, ...]
    card: str
    private: bool = False
    revision: str | None = None
    commit_url: str | None = None
    portable: dict[str, bytes] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()


def upload_files(model_dir: Path) -> list[str]:
    """Files of a model directory to upload, relative, sorted; hidden paths and the old card skipped."""
    files = []
    for path in model_dir.rglob("*"):
        relative = path.relative_to(model_dir)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files.append(relative.as_posix())
    return sorted(name for name in files if name != CARD_FILE)


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BoomError(f"invalid --repo-id {repo_id!r}: {str(error).splitlines()[0]}") from None
    if repo_id.count("/") != 1:
        raise BoomError(f"invalid --repo-id {repo_id!r}: expected USER/NAME")


def plan_push(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    results_dir: str | Path | None = None,
    include_capped: bool = False,
) -> PushPlan:
    """Check the model (a dir or Hub id) and repo id, build the card, list the files to upload.

    ``results_dir`` (``boom-merge eval --out``) puts scores in the card; capped ones go into
    ``model-index`` only with ``include_capped``.
    """
    from boom_merge.model_refs import check_model, resolve_model

    _check_repo_id(repo_id)
    model_dir = resolve_model(model_dir).path
    if not any((model_dir / marker).is_file() for marker in _MODEL_MARKERS):
        raise BoomError("not a model directory (no modules.json or config.json)", path=model_dir)
    check_model(model_dir)  # never publish NaN weights, a truncated file or a model without its tokenizer
    card = build_model_card(model_dir, results_dir=results_dir, title=repo_id, include_capped=include_capped)
    portable = portable_upload(model_dir, upload_files(model_dir), card=str(card))
    files = tuple(sorted({*upload_files(model_dir), CARD_FILE} - set(portable.left_out)))
    card_text = portable.rewritten.get(CARD_FILE, str(card).encode("utf-8")).decode("utf-8")
    return PushPlan(repo_id, model_dir, files, card_text, private, revision, portable=portable.rewritten,
                    left_out=portable.left_out)


def _is_provenance(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name in (*RECIPE_FILES, LINEAGE_FILE, MEMBER_FILE) or (
        len(parts) == 2 and parts[0] == MEMBERS_DIR and name.endswith(".json"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _load(name: str, text: str) -> Any:
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def portable_names(paths: Iterable[str]) -> dict[str, str]:
    """Absolute local paths -> what the upload writes instead (see the module docstring)."""
    from boom_merge.model_refs import cache_identity

    names: dict[str, str] = {}
    local = []
    for path in dict.fromkeys(paths):
        hub_id, revision = cache_identity(Path(path))
        if hub_id is not None:
            names[path] = f"{hub_id}@{revision}"
        else:
            local.append(PurePosixPath(path))
    for path in local:
        suffix = path.parts[1:] or (".",)  # "/" alone: nothing to name
        for depth in range(1, len(path.parts)):
            suffix = path.parts[-depth:]
            if all(other == path or other.parts[-depth:] != suffix for other in local):
                break
        names[str(path)] = PurePosixPath(*suffix).as_posix()
    return names


_STRUCTURED = (".json", ".yml", ".yaml")
_WEIGHTS = (".safetensors",)
_SCAN_LIMIT = 64 * 2**20  # bytes of another binary file searched for a local path (a plot, an archive)


def _local_roots() -> str:
    """A regex of this machine's top-level dirs (``/home``, ``/tmp``, ...): where a local path starts."""
    try:
        roots = sorted(entry.name for entry in Path("/").iterdir() if entry.is_dir())
    except OSError:
        roots = []
    return "|".join(re.escape(root) for root in roots) or r"(?!)"


def _embedded_paths(text: str, roots: str) -> list[str]:
    """Absolute paths of this machine inside a text (``/ROOT/...``, at least two parts deep)."""
    pattern = rf"(?<![\w:/.~-])/(?:{roots})/[^\s'\"`,;|()<>\[\]{{}}*]*[^\s'\"`,;|()<>\[\]{{}}*.:]"
    return re.findall(pattern, text)


def _rewrite_text(text: str, names: dict[str, str]) -> str:
    """``text`` with each local path (a whole path, not a prefix of a longer one) replaced."""
    for path in sorted(names, key=len, reverse=True):
        if path in text:
            pattern = rf"(?<![\w./~-]){re.escape(path)}(?![\w./-])"
            text = re.sub(pattern, lambda _, new=names[path]: new, text)
    return text


def _rewrite(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return names.get(value) or _rewrite_text(value, names)
    if isinstance(value, dict):
        return {_rewrite(key, names): _rewrite(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, names) for item in value]
    return value


@dataclass(frozen=True)
class _Read:
    """One uploaded file as read for the path scan: its text and parsed data, or (``text`` None)
    the bytes of a binary file searched."""

    text: str | None
    data: Any = None
    parsed: bool = False


def _read_for_scan(file: Path, name: str) -> _Read:
    if name.endswith(_WEIGHTS):  # only the header can name a path; the tensors are not scanned
        with file.open("rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else 0
            raw = handle.read(min(length, _SCAN_LIMIT))
        return _Read(None, raw)
    if file.stat().st_size > _SCAN_LIMIT and not _is_provenance(name):
        return _Read(None, b"")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Read(None, raw)
    if name.endswith(_STRUCTURED):
        try:
            return _Read(text, _load(name, text), True)
        except (ValueError, yaml.YAMLError):
            if _is_provenance(name):
                raise BoomError("not valid JSON/YAML; nothing was uploaded", path=file) from None
    return _Read(text)


def _local_paths(name: str, read: _Read, roots: str) -> list[str]:
    """The local paths one text file names (see :func:`portable_upload`)."""
    if read.text is None:
        return []
    whole = [s for s in _strings(read.data) if s.startswith("/")] if read.parsed and _is_provenance(name) else []
    return whole + _embedded_paths(read.text, roots)


@dataclass(frozen=True)
class Portable:
    """What a push sends instead of the local files that name local paths."""

    rewritten: dict[str, bytes]
    left_out: tuple[str, ...]


def portable_upload(model_dir: Path, files: Iterable[str], *, card: str | None = None) -> Portable:
    """The files among ``files`` that name a local path, rewritten (see the module docstring), or
    left out where no rewrite can be trusted (a binary file that holds one).

    Found: every string of a provenance file that starts with ``/``, and in any text file
    (JSON and YAML values included) a path under one of this machine's top-level dirs. ``card``,
    the card built in memory, is scanned and rewritten as ``README.md``.
    """
    roots = _local_roots()
    reads = {name: _read_for_scan(model_dir / name, name) for name in files if (model_dir / name).is_file()}
    if card is not None:
        reads[CARD_FILE] = _Read(card)
    names = portable_names(path for name, read in reads.items() for path in _local_paths(name, read, roots))
    rewritten, left_out = {}, []
    for name, read in reads.items():
        if read.text is None:
            if any(path.encode() in read.data for path in names):
                left_out.append(name)
            continue
        if not any(path in read.text for path in names):
            continue
        if read.parsed and name.endswith(".json"):
            new = json.dumps(_rewrite(read.data, names), indent=2, ensure_ascii=False) + "\n"
        elif read.parsed:
            new = _rewrite_text(read.text, names)
            if _load(name, new) != _rewrite(read.data, names):  # a path quoted in a way the text match missed
                header = "".join(line for line in read.text.splitlines(keepends=True) if line.startswith("#"))
                new = header + yaml.safe_dump(_rewrite(read.data, names), sort_keys=False, allow_unicode=True)
        else:
            new = _rewrite_text(read.text, names)
        again = _Read(new, _load(name, new) if read.parsed else None, read.parsed)
        if _local_paths(name, again, roots):  # never upload what the rewrite missed
            left_out.append(name)
            continue
        rewritten[name] = new.encode("utf-8")
    for name in left_out:
        logger.warning("%s names a local path that cannot be rewritten: not uploaded", name)
    return Portable(rewritten, tuple(left_out))


def _reason(error: BaseException, token: str | None) -> str:
    """One line: the error's first line and the Hub's own message, with the token masked."""
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else "no details"
    server_message = getattr(error, "server_message", None)
    if server_message:
        reason += f" - {' '.join(server_message.split())}"
    return reason.replace(token, "***") if token else reason


def upload(plan: PushPlan, *, token: str | None = None) -> PushPlan:
    """Create the repo (and branch) if needed and upload the plan's files in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    secret = token or get_token()
    if not secret:
        raise BoomError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded")
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=plan.portable.get(name) or str(plan.model_dir / name))
        for name in plan.files
        if name != CARD_FILE
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=plan.card.encode("utf-8")))
    api = HfApi(token=token)
    # HfHubHTTPError's bases are the HTTP client's error class and OSError: together they
    # cover HTTP status errors, refused connections, timeouts and HF_HUB_OFFLINE.
    network_errors = (OSError, *HfHubHTTPError.__bases__)
    try:
        api.create_repo(plan.repo_id, private=plan.private or None, exist_ok=True)  # None: the Hub's default
        if plan.revision:
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        info = api.create_commit(
            plan.repo_id,
            operations=operations,
            commit_message=f"Upload {plan.model_dir.name} with boom-merge",
            revision=plan.revision,
        )
    except network_errors as error:
        reason = _reason(error, secret)
        raise BoomError(
            f"push to {plan.repo_id} failed ({type(error).__name__}: {reason}); local model unchanged"
        ) from None
    logger.info("pushed %d files to %s", len(plan.files), plan.repo_id)
    return replace(plan, commit_url=info.commit_url)


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    results_dir: str | Path | None = None,
    include_capped: bool = False,
) -> PushPlan:
    """Publish ``model_dir`` as ``repo_id``; with ``dry_run`` only plan (nothing is uploaded)."""
    plan = plan_push(model_dir, repo_id, private=private, revision=revision, results_dir=results_dir,
                     include_capped=include_capped)
    return plan if dry_run else upload(plan, token=token)
