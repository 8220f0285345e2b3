"""``boom-merge push`` against a local fake Hub: the real huggingface_hub client, real HTTP.

The fake server implements the endpoints one commit needs (create repo, create branch,
YAML validation, preupload, commit) and records what it receives, so the tests check
the exact files and bytes that would reach the Hub and that the token never shows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from huggingface_hub.repocard import metadata_load

from tests.tiny_models import make_tiny_bert_st

TOKEN = "hf_boomFAKEtoken0123456789abcdef"
REPO = "someone/tiny-boom"


class FakeHub(ThreadingHTTPServer):
    """Records requests; ``fail`` makes every POST answer 500 with the caller's token echoed."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.files: dict[str, bytes] = {}
        self.fail = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _lower(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, _lower(self.headers), b""))
        self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(("POST", self.path, _lower(self.headers), body))
        if self.server.fail:
            return self._reply(500, {"error": f"internal error for {self.headers.get('Authorization')}"})
        if self.path == "/api/repos/create":
            return self._reply(200, {"url": f"{self.server.url}/{REPO}", "name": REPO})
        if self.path == "/api/validate-yaml" or "/branch/" in self.path:
            return self._reply(200, {})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if "/commit/" in self.path:
            for line in body.splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    self.server.files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            return self._reply(200, {"commitUrl": f"{self.server.url}/{REPO}/commit/{'a' * 40}", "commitOid": "a" * 40})
        self._reply(404, {"error": "not found"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory, tiny_bert_base: Path, minilm_path: str) -> Path:
    """A trained-member-like model: tiny ST model, its manifest, an old card and a hidden file."""
    path = make_tiny_bert_st(tmp_path_factory.mktemp("hub") / "member-3", seed=3, perturb_from=tiny_bert_base)
    manifest = {
        "kind": "member",
        "member_index": 3,
        "sample_ratio": 0.6,
        "seed": 42,
        "base_model": minilm_path,  # trained from the Hub model, here a local copy of it
        "base_model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "datasets": {"wordnet": {"available": 500, "sampled": 300, "ids_sha256": "ef" * 32, "licence": "WordNet"}},
    }
    (path / "boom_member.json").write_text(json.dumps(manifest))
    (path / ".cache").mkdir()
    (path / ".cache" / "lock").write_text("local only")
    return path


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _expected_files(root: Path) -> set[str]:
    """Independent listing: every non-hidden file, with README.md (replaced by the card)."""
    files = {"README.md"}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        files.update((rel / f).as_posix() for f in filenames if not f.startswith("."))
    return files


def _push(
    *args: str, endpoint: str, offline: str = "0", home: Path, token: str = TOKEN
) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")},
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": offline,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **({"HF_TOKEN": token} if token else {}),
    }
    return subprocess.run(
        [sys.executable, "-c", "from boom_merge.cli import main; main()", "-v", "push", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_push_uploads_exact_files_and_card(hub: FakeHub, member: Path, tmp_path: Path, minilm_path: str) -> None:
    before = _checksums(member)
    result = _push(str(member), "--repo-id", REPO, "--private", "--revision", "dev", endpoint=hub.url, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr

    assert set(hub.files) == _expected_files(member)
    for name, data in hub.files.items():
        if name not in ("README.md", "boom_member.json"):
            assert data == (member / name).read_bytes(), name
    # the manifest travels without this machine's paths: the local base is named by its directory
    local, uploaded = json.loads((member / "boom_member.json").read_text()), json.loads(hub.files["boom_member.json"])
    assert uploaded == {**local, "base_model": Path(minilm_path).name}
    card = tmp_path / "README.md"
    card.write_bytes(hub.files["README.md"])
    meta = metadata_load(card)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["base_model_relation"] == "finetune"
    assert "merge" not in meta["tags"] and "boom-member" in meta["tags"]
    assert meta["license"] == "apache-2.0"
    text = card.read_text()
    assert f'SentenceTransformer("{REPO}")' in text and f"# {REPO}" in text.splitlines()
    assert "| member-3 | member | 0.6 | 42 |" in text
    own = (member / "README.md").read_text()  # the card sentence-transformers wrote: kept, extended
    for section in ("## Model Details", "### Full Model Architecture", "### Framework Versions"):
        assert section in own and section in text

    posts = {path: (headers, body) for method, path, headers, body in hub.requests if method == "POST"}
    assert json.loads(posts["/api/repos/create"][1])["visibility"] == "private"
    assert f"/api/models/{REPO}/branch/dev" in posts
    assert f"/api/models/{REPO}/commit/dev" in posts
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for h, _ in posts.values())
    assert _checksums(member) == before


def test_dry_run_lists_files_and_card_and_sends_nothing(hub: FakeHub, member: Path, tmp_path: Path) -> None:
    result = _push(str(member), "--repo-id", REPO, "--dry-run", endpoint=hub.url, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    listed, _, card = result.stdout.partition("\n--- README.md ---\n")
    *listing, rewritten = listed.strip().splitlines()
    assert rewritten == "local paths written as names or Hub ids in the uploaded boom_member.json"
    files = {line.strip() for line in listing[1:] if line.strip()}
    assert files == _expected_files(member)
    assert f"would upload {len(files)} files to {REPO}:" in listed
    (tmp_path / "card.md").write_text(card)
    assert metadata_load(tmp_path / "card.md")["pipeline_tag"] == "sentence-similarity"
    assert TOKEN not in result.stdout + result.stderr


def test_server_error_is_one_line_without_token(hub: FakeHub, member: Path, tmp_path: Path) -> None:
    hub.fail = True
    before = _checksums(member)
    result = _push(str(member), "--repo-id", REPO, endpoint=hub.url, home=tmp_path)
    assert result.returncode == 1
    assert hub.requests, "the client never reached the fake Hub"
    assert TOKEN not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"push to {REPO} failed" in errors[0] and "***" in errors[0]
    assert "Traceback" not in result.stderr
    assert _checksums(member) == before


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("offline", ["0", "1"])
def test_unreachable_hub_is_a_clear_error(member: Path, tmp_path: Path, offline: str) -> None:
    before = _checksums(member)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = _push(str(member), "--repo-id", REPO, endpoint=endpoint, offline=offline, home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: push to {REPO} failed")
    assert "Traceback" not in result.stderr and TOKEN not in result.stdout + result.stderr
    assert _checksums(member) == before


@pytest.mark.parametrize(
    ("repo_id", "message"), [("no-namespace", "expected USER/NAME"), ("bad//name", "invalid --repo-id")]
)
def test_bad_repo_id(member: Path, tmp_path: Path, repo_id: str, message: str) -> None:
    result = _push(str(member), "--repo-id", repo_id, endpoint="http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 1 and message in result.stderr


def test_not_a_model_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    result = _push(empty, "--repo-id", REPO, "--dry-run", endpoint="http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 1
    assert "not a model directory" in result.stderr and empty in result.stderr


def test_a_copy_of_a_hub_model_is_refused_for_what_it_is(tmp_path: Path, minilm_path: str) -> None:
    """The quickstart's base is a copy of the Hub's MiniLM (lineage kind ``copy``): one line saying so,
    not that its lineage is missing; nothing sent, nothing changed."""
    import shutil

    from boom_merge.lineage.writing import write_source

    copy = tmp_path / "base"
    shutil.copytree(minilm_path, copy)
    write_source(copy, hub_id="sentence-transformers/all-MiniLM-L6-v2", revision="c9745ed", source=minilm_path)
    before = _checksums(copy)
    result = _push(str(copy), "--repo-id", REPO, "--dry-run", endpoint="http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: {copy / 'boom_lineage.json'}: a copy of sentence-transformers/all-MiniLM-L6-v2 (kind copy): it has "
        "nothing of boom-merge's to describe; publish a model trained or merged from it"]
    assert _checksums(copy) == before


@pytest.mark.parametrize("defect", ["nan", "no-tokenizer"])
def test_broken_model_is_refused_before_planning(member: Path, tmp_path: Path, defect: str) -> None:
    import shutil

    import safetensors.torch

    broken = Path(shutil.copytree(member, tmp_path / "broken"))
    if defect == "nan":
        tensors = safetensors.torch.load_file(broken / "model.safetensors")
        name = sorted(tensors)[0]
        tensors[name].view(-1)[0] = float("nan")
        safetensors.torch.save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
        needle = f"{broken / 'model.safetensors'}: tensor '{name}' contains NaN or Inf values"
    else:
        for file in broken.glob("*"):
            if file.name.startswith("tokenizer") or file.name in {"vocab.txt", "special_tokens_map.json"}:
                file.unlink()
        needle = f"{broken}: no tokenizer files"
    result = _push(str(broken), "--repo-id", REPO, "--dry-run", endpoint="http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].split("Error: ", 1)[1].startswith(needle), result.stderr
    assert REPO not in result.stdout  # no file list or card printed


def test_missing_token_is_refused_before_any_request(hub: FakeHub, member: Path, tmp_path: Path) -> None:
    result = _push(str(member), "--repo-id", REPO, endpoint=hub.url, home=tmp_path, token="")
    assert result.returncode == 1 and "no Hugging Face token" in result.stderr
    assert hub.requests == []


@pytest.mark.parametrize("flag", [[], ["--include-capped"]])
def test_results_and_include_capped(member: Path, tmp_path: Path, flag: list[str]) -> None:
    """``--results`` puts evaluation's scores in model-index; capped ones only with ``--include-capped``."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    task = {"name": "BoomWordnetRetrieval", "source": "wordnet", "type": "Retrieval", "hf_task_type": "text-retrieval",
            "main_score": "ndcg_at_10", "split": "test", "dataset": {"path": "boom-merge/wordnet", "revision": "r1"}}
    tasks = [task | {"caps": None}, task | {"name": "BoomFoldocRetrieval", "source": "foldoc",
                                            "dataset": {"path": "boom-merge/foldoc", "revision": "r1"},
                                            "caps": {"max_queries": 5, "max_corpus": 50}}]
    scores = {"member-3": {"BoomWordnetRetrieval": 0.5, "BoomFoldocRetrieval": 0.25}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text(json.dumps({"tasks": tasks, "scores": scores}))
    result = _push(str(member), "--repo-id", REPO, "--dry-run", "--results", str(tmp_path / "eval"), *flag,
                   endpoint="http://127.0.0.1:9", home=tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / "card.md").write_text(result.stdout.partition("\n--- README.md ---\n")[2])
    name, evals = model_index_to_eval_results(metadata_load(tmp_path / "card.md")["model-index"])
    assert name == REPO
    expected = {"BoomWordnetRetrieval": 0.5, **({"BoomFoldocRetrieval": 0.25} if flag else {})}
    assert {e.task_name: e.metric_value for e in evals} == expected
    assert {e.metric_type for e in evals} == {"ndcg_at_10"}
    assert "capped: max_queries=5, max_corpus=50" in (tmp_path / "card.md").read_text()


def test_portable_names() -> None:
    from boom_merge.hub import portable_names

    names = portable_names(["/home/me/runs/seed-0/member-0", "/home/me/runs/seed-1/member-0", "/data/old3",
                            "/data", "/cache/models--acme--tiny-bert/snapshots/" + "c" * 40, "/data", "/"])
    assert names == {"/home/me/runs/seed-0/member-0": "seed-0/member-0",
                     "/home/me/runs/seed-1/member-0": "seed-1/member-0",
                     "/data/old3": "old3", "/data": "data", "/": ".",
                     "/cache/models--acme--tiny-bert/snapshots/" + "c" * 40: "acme/tiny-bert@" + "c" * 40}


def test_pushed_recipe_runs_next_to_copies_of_its_inputs(
    hub: FakeHub, tiny_bag: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """No local path reaches the Hub, and the uploaded recipe reproduces the merge with plain mergekit-yaml."""
    import shutil

    from safetensors.torch import load_file

    from boom_merge.merge.pipeline import merge_recipe
    from boom_merge.merge.recipe_writing import write_recipe

    base, members = tiny_bag
    recipe = write_recipe(members[:2], tmp_path / "recipe.yml", base=base)
    merged = merge_recipe(recipe, tmp_path / "merged")
    before = _checksums(merged)
    result = _push(str(merged), "--repo-id", REPO, endpoint=hub.url, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert _checksums(merged) == before
    for name, data in hub.files.items():
        assert str(base.parent).encode() not in data and str(tmp_path).encode() not in data, name
    uploaded = yaml.safe_load(hub.files["boom_recipe.yml"])
    assert [m["model"] for m in uploaded["models"]] == ["member-0", "member-1"] and uploaded["base_model"] == "base"
    assert hub.files["boom_recipe.yml"].decode().startswith("# Written by `boom-merge recipe`")
    lineage = json.loads(hub.files["boom_lineage.json"])
    assert [i["path"] for i in lineage["inputs"]] == ["member-0", "member-1", "base"]

    elsewhere = tmp_path / "elsewhere"  # a user who downloaded the repo and its inputs
    (elsewhere / "pushed").mkdir(parents=True)
    (elsewhere / "pushed" / "boom_recipe.yml").write_bytes(hub.files["boom_recipe.yml"])
    for model in (*members[:2], base):
        shutil.copytree(model, elsewhere / model.name)
    run = subprocess.run(["mergekit-yaml", "pushed/boom_recipe.yml", "again"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    ours, theirs = load_file(merged / "model.safetensors"), load_file(elsewhere / "again" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_unreadable_provenance_is_one_line_and_nothing_is_sent(hub: FakeHub, member: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(member, broken)
    (broken / "boom_recipe.yml").write_text("models: [{model: /x/member-0\n")  # unclosed flow sequence
    before = _checksums(broken)
    result = _push(str(broken), "--repo-id", REPO, endpoint=hub.url, home=tmp_path)
    assert result.returncode != 0 and hub.requests == []
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "boom_recipe.yml" in errors[0] and "Traceback" not in result.stderr
    assert _checksums(broken) == before


def test_provenance_yaml_is_rewritten_in_place_or_re_dumped(tmp_path: Path) -> None:
    """Paths are replaced in the recipe's text (comments kept); a path the text match cannot see
    (a YAML escape) falls back to a re-dump that keeps the header comments and loses no path. (The
    paths are under a root this machine lacks, so only the provenance rule finds them.)"""
    from boom_merge.hub import portable_upload

    plain = ("# Written by `boom-merge recipe`\nmerge_method: boom\nbase_model: /no-such-root/me/runs/base  # the base\n"
             "models:\n  - model: /no-such-root/me/runs/member-0\n  - model: '/no-such-root/me/runs/member-1'\n")
    escaped = plain.replace("'/no-such-root/me/runs/member-1'", '"/no-such-root/me/runs/member\\x2d1"')
    expected = {"merge_method": "boom", "base_model": "base",
                "models": [{"model": "member-0"}, {"model": "member-1"}]}
    for text, in_place in ((plain, True), (escaped, False)):
        (tmp_path / "boom_recipe.yml").write_text(text)
        new = portable_upload(tmp_path, ["boom_recipe.yml"]).rewritten["boom_recipe.yml"].decode()
        assert yaml.safe_load(new) == expected and "/no-such-root/me" not in new
        assert new.startswith("# Written by `boom-merge recipe`\n")
        assert ("# the base" in new) == in_place  # in place keeps every comment; the re-dump only the header


def _uploaded_bytes(hub: FakeHub) -> dict[str, bytes]:
    assert hub.files, "nothing was uploaded"
    return dict(hub.files)


def test_no_local_path_travels_from_auto_update_or_adapter_outputs(
    hub: FakeHub, tiny_bag: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22.4: every uploaded byte of an `--update-weight auto` output (its update_weight/ report
    included) is free of this test's temp dirs, and so is a query adapter's record; --dry-run names
    the rewritten files."""
    import numpy as np

    from boom_merge.incremental import update_weight
    from boom_merge.incremental.adapter import Adapter, save_adapter_model
    from boom_merge.hub import portable_upload, upload_files
    from boom_merge.tune.scoring import DevTasks
    from boom_merge.tune.select import Scores

    base, (old, update, *_) = tiny_bag
    corpus = tmp_path / "corpus"
    (corpus / "dev").mkdir(parents=True)
    (corpus / "manifest.json").write_text("{}")
    monkeypatch.setattr(update_weight, "dev_sources", lambda *a: DevTasks(("old",), ("new",)))

    def scorer(model: Path) -> Scores:
        return Scores(0.8, 0.6, {"old": 0.8, "new": 0.6})

    auto = update_weight.auto_update_weight(old, update, tmp_path / "new", corpus=corpus, grid=[0.5], scorer=scorer)
    candidates = (auto.result.path / "update_weight" / "candidates.json").read_text()
    assert str(old) in candidates and str(corpus) in candidates  # what the fix must keep off the Hub
    adapter = save_adapter_model(auto.result.path, Adapter(np.eye(16), None, "orthogonal"), tmp_path / "adapter",
                                 info={"old_model": str(old), "corpus": str(corpus)})
    local = [str(tmp_path), str(base.parent), str(old.parent), str(Path(tmp_path).resolve())]
    for model in (auto.result.path,):
        before = _checksums(model)
        dry = _push(str(model), "--repo-id", REPO, "--dry-run", endpoint="http://127.0.0.1:9", home=tmp_path / "h")
        assert dry.returncode == 0, dry.stderr
        rewritten = next(line for line in dry.stdout.splitlines() if line.startswith("local paths written"))
        hub.files.clear()
        result = _push(str(model), "--repo-id", REPO, endpoint=hub.url, home=tmp_path / "home")
        assert result.returncode == 0, result.stderr
        assert _checksums(model) == before
        for name, data in _uploaded_bytes(hub).items():
            for path in local:
                assert path.encode() not in data, (name, path)
            assert b'"/tmp/' not in data and b" /tmp/" not in data, name
        assert "update_weight/candidates.json" in rewritten and "boom_lineage.json" in rewritten
        data = json.loads(hub.files["update_weight/candidates.json"])
        assert [row["weight"] for row in data["candidates"]] == [0.0, 0.5]
    # an adapter has no card of its own (push refuses it), but its record is held to the same rule
    portable = portable_upload(adapter, upload_files(adapter))
    record = json.loads(portable.rewritten["boom_adapter.json"])
    assert record["old_model"] == old.name and record["corpus"] == "corpus" and record["new_model"] == "new"
    assert portable.left_out == () and not [p for p in local if p in json.dumps(record)]


def test_a_binary_file_naming_a_local_path_is_left_out(hub: FakeHub, member: Path, tmp_path: Path) -> None:
    """Issue 22.4: what cannot be rewritten does not travel, and --dry-run says so."""
    import shutil

    model = Path(shutil.copytree(member, tmp_path / "model"))
    (model / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + f"tEXtSource\x00{tmp_path}/runs/x".encode() + b"\x00\xff")
    (model / "notes.md").write_text(f"trained in {tmp_path / 'runs' / 'x'} on 2 CPUs\n")
    dry = _push(str(model), "--repo-id", REPO, "--dry-run", endpoint="http://127.0.0.1:9", home=tmp_path / "h")
    assert dry.returncode == 0, dry.stderr
    assert "left out (they name a local path that cannot be rewritten): plot.png" in dry.stdout
    assert "  plot.png\n" not in dry.stdout and "  notes.md\n" in dry.stdout
    result = _push(str(model), "--repo-id", REPO, endpoint=hub.url, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "plot.png" not in hub.files and hub.files["notes.md"] == b"trained in x on 2 CPUs\n"
    assert not [name for name, data in hub.files.items() if str(tmp_path).encode() in data]
