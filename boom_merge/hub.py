"""Publish a merged or member model on the Hugging Face Hub with a generated card.

Owns: publishing to the Hub (the upload plan, the token, the commit).

The upload is one commit of the model directory's files (recipe, manifests and
lineage included) plus ``README.md`` built by :mod:`boom_merge.card`, titled with the repo id
(a trained member keeps the card sentence-transformers wrote, extended). The card is built
in memory, so the local model is never modified. The token comes from the argument, ``HF_TOKEN`` or
the saved login (``hf auth login``) and is never printed or logged: it is scrubbed from
error messages too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from boom_merge.card import CARD_FILE, build_model_card
from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

_MODEL_MARKERS = ("modules.json", "config.json")


@dataclass(frozen=True)
class PushPlan:
    """What a push uploads: ``files`` are paths in the repo (sorted, card included)."""

    repo_id: str
    model_dir: Path
    files: tuple[str, ...]
    card: str
    private: bool = False
    revision: str | None = None
    commit_url: str | None = None


def model_files(model_dir: Path) -> list[str]:
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
    from boom_merge.models import check_model, resolve_model

    _check_repo_id(repo_id)
    model_dir = resolve_model(model_dir).path
    if not any((model_dir / marker).is_file() for marker in _MODEL_MARKERS):
        raise BoomError("not a model directory (no modules.json or config.json)", path=model_dir)
    check_model(model_dir)  # never publish NaN weights, a truncated file or a model without its tokenizer
    card = build_model_card(model_dir, results_dir=results_dir, title=repo_id, include_capped=include_capped)
    files = tuple(sorted([*model_files(model_dir), CARD_FILE]))
    return PushPlan(repo_id, model_dir, files, str(card), private, revision)


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
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(plan.model_dir / name))
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
