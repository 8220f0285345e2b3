"""Training data by name and by convention: parquet, csv/tsv, jsonl columns, datasets dirs and ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from boom_merge.data.loading import Example, load_training_data, scan_training_data
from boom_merge.errors import BoomError

ROWS = {
    "anchor": ["What does a thermometer measure?", "capital of France"],
    "positive": ["A thermometer measures temperature.", "Paris is the capital of France."],
    "negative_1": ["A barometer measures air pressure.", "Berlin is the capital of Germany."],
    "negative_2": ["A hygrometer measures humidity.", None],
}
EXPECTED = [
    Example(
        id=0, query=ROWS["anchor"][0], pos=(ROWS["positive"][0],), neg=(ROWS["negative_1"][0], ROWS["negative_2"][0])
    ),
    Example(id=1, query=ROWS["anchor"][1], pos=(ROWS["positive"][1],), neg=(ROWS["negative_1"][1],)),
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _renamed(names: list[str]) -> list[dict]:
    """ROWS as row dicts, the four columns renamed to ``names``."""
    columns = list(ROWS)
    return [{new: ROWS[old][i] for old, new in zip(columns, names, strict=True)} for i in range(2)]


def _jsonl_ids(examples: list[Example]) -> list[Example]:
    # jsonl ids are 1-based line numbers; tables count rows from 0
    return [Example(id=e.id + 1, query=e.query, pos=e.pos, neg=e.neg) for e in examples]


def test_parquet_with_anchor_positive_negatives(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(ROWS), tmp_path / "thermo.parquet")
    assert load_training_data(tmp_path / "thermo.parquet") == {"thermo": EXPECTED}


@pytest.mark.parametrize(
    "names",
    [
        ["anchor", "positive", "negative_1", "negative_2"],
        ["query", "answer", "negative", "negative_2"],
        ["sentence1", "sentence2", "sentence3", "sentence4"],
        ["question", "context", "wrong", "also_wrong"],  # by position
    ],
)
def test_jsonl_conventions(tmp_path: Path, names: list[str]) -> None:
    rows = _renamed(names)
    del rows[1][names[3]]  # a missing negative column is no negative
    _jsonl(tmp_path / "qa.jsonl", rows)
    assert load_training_data(tmp_path) == {"qa": _jsonl_ids(EXPECTED)}


def test_named_columns_win_over_position_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    rows = [{"id": 7, "positive": "Yes.", "anchor": "Is it?", "negative": ["No.", "Maybe."], "source": "x"}]
    _jsonl(tmp_path / "a.jsonl", rows)
    assert load_training_data(tmp_path / "a.jsonl") == {
        "a": [Example(id=1, query="Is it?", pos=("Yes.",), neg=("No.", "Maybe."))]
    }


def test_csv_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "faq.csv").write_text(
        'query,answer,negative\n"Why, exactly?","Because, that\'s why.",\nHow?,Like this.,Not like that.\n',
        encoding="utf-8",
    )
    (tmp_path / "pos.tsv").write_text("q\td\tn1\tn2\nWho?\tMe.\tYou.\tThem.\n", encoding="utf-8")
    data = load_training_data(tmp_path)
    assert data == {
        "faq": [
            Example(id=0, query="Why, exactly?", pos=("Because, that's why.",)),
            Example(id=1, query="How?", pos=("Like this.",), neg=("Not like that.",)),
        ],
        "pos": [Example(id=0, query="Who?", pos=("Me.",), neg=("You.", "Them."))],
    }


def test_save_to_disk_dirs_and_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    table = Dataset.from_dict(ROWS)
    DatasetDict({"train": table, "dev": table.select([1])}).save_to_disk(str(tmp_path / "dd"))
    both = load_training_data(tmp_path / "dd")
    assert both["train"] == EXPECTED and [e.query for e in both["dev"]] == [ROWS["anchor"][1]]
    assert load_training_data(tmp_path / "dd", split="train") == {"train": EXPECTED}
    with pytest.raises(BoomError, match="no split 'test'; splits: train, dev"):
        load_training_data(tmp_path / "dd", split="test")
    table.save_to_disk(str(tmp_path / "single"))
    assert load_training_data(tmp_path / "single") == {"single": EXPECTED}


def _cache_hub_dataset(cache: Path, repo: str, config: str, rows: dict[str, list]) -> None:
    """Leave ``repo`` in a datasets cache as ``load_dataset(repo, config)`` does after a download.

    The packaged parquet builder (the one the Hub's parquet datasets use) prepares the
    table into CACHE/NAME/CONFIG/0.0.0/COMMIT/, which is renamed to the Hub repo's cache
    dir ``org___name``: the layout that ``load_dataset`` reads when offline.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    source = cache.parent / f"{config}.parquet"
    pq.write_table(pa.table(rows), source)
    name = repo.split("/")[1]
    builder = Parquet(
        cache_dir=str(cache), dataset_name=name, config_name=config, config_id=config,
        hash="0123456789abcdef0123456789abcdef01234567", data_files={"train": str(source)},
    )  # fmt: skip
    builder.download_and_prepare()
    target = cache / repo.replace("/", "___")
    target.mkdir(exist_ok=True)
    shutil.move(str(cache / name / config), str(target / config))


def test_datasets_id_resolved_offline_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    cache = tmp_path / "hf-datasets"
    _cache_hub_dataset(cache, "acme/pairs", "default", ROWS)
    _cache_hub_dataset(cache, "acme/multi", "short", {"anchor": ["Who?"], "positive": ["Me."]})
    _cache_hub_dataset(cache, "acme/multi", "long", ROWS)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no local acme/pairs
    assert datasets.config.HF_HUB_OFFLINE
    assert load_training_data("acme/pairs") == {"acme/pairs": EXPECTED}
    assert load_training_data(["acme/multi"], config="short", split="train") == {
        "acme/multi:short": [Example(id=0, query="Who?", pos=("Me.",))]
    }
    for spec, reason in [("acme/multi", "configurations in the cache"), ("acme/absent", "acme/absent")]:
        with pytest.raises(BoomError) as error:
            load_training_data(spec)
        message = str(error.value)
        assert message.startswith(f"{spec}: not a local file or directory") and reason in message
        assert "\n" not in message


def test_several_sources_together_and_name_clashes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a").mkdir()
    _jsonl(tmp_path / "a" / "one.jsonl", [{"query": "q", "pos": ["p"]}])
    pq.write_table(pa.table(ROWS), tmp_path / "two.parquet")
    data = load_training_data([tmp_path / "a", str(tmp_path / "two.parquet")])
    assert list(data) == ["one", "two"] and data["two"] == EXPECTED
    _jsonl(tmp_path / "one.jsonl", [{"query": "q", "pos": ["p"]}])
    with pytest.raises(BoomError, match="dataset 'one' is given twice"):
        load_training_data([tmp_path / "a", tmp_path / "one.jsonl"])
    _jsonl(tmp_path / "a" / "one.csv", [])
    with pytest.raises(BoomError, match="two files give dataset 'one'"):
        load_training_data(tmp_path / "a")
    with pytest.raises(BoomError, match="--data-config 'x' applies to a Hugging Face dataset id"):
        load_training_data(tmp_path / "two.parquet", config="x")


def test_jsonl_that_is_not_utf8(tmp_path: Path) -> None:
    good = json.dumps({"query": "q", "pos": ["p"]}).encode()
    file = tmp_path / "latin.jsonl"
    file.write_bytes(good + b"\n" + '{"query": "caf\xe9", "pos": ["p"]}\n'.encode("latin-1") + good + b"\n")
    with pytest.raises(BoomError) as error:
        load_training_data(tmp_path)
    assert str(error.value) == (
        f"{file}: line 2: not UTF-8 text (byte 0xe9 at column 15) (use --on-bad-line skip to skip bad lines)"
    )
    assert [e.id for e in load_training_data(tmp_path, on_bad_line="skip")["latin"]] == [1, 3]
    csv_file = tmp_path / "bad.csv"
    csv_file.write_bytes(b"anchor,positive\nok,fine\n\xff\xfe,x\n")
    with pytest.raises(BoomError, match=r"bad.csv: line 3: not UTF-8 text \(byte 0xff at column 1\)$"):
        load_training_data(csv_file)


def test_directory_named_like_a_data_file(tmp_path: Path) -> None:
    _jsonl(tmp_path / "good.jsonl", [{"query": "q", "pos": ["p"]}])
    (tmp_path / "x.jsonl").mkdir()
    for given in (tmp_path, tmp_path / "x.jsonl"):
        with pytest.raises(BoomError) as error:
            load_training_data(given)
        assert str(error.value) == f"{tmp_path / 'x.jsonl'}: is a directory, not a .jsonl file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text\nhello\n", r"needs \(anchor, positive\[, negative...\]\) columns, .*; columns found: text$"),
        (
            "sentence1,sentence2,score\na,b,0.5\n",
            "column 'score' holds scores or labels: .*; columns found: sentence1, sentence2, score$",
        ),
        ("", None),  # empty: no dataset
    ],
)
def test_unusable_columns_are_named(tmp_path: Path, content: str, message: str | None) -> None:
    file = tmp_path / "data.csv"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(BoomError, match=message or "every dataset is empty") as error:
        load_training_data(file)
    assert str(error.value).startswith(str(file)) and "\n" not in str(error.value)


def test_unusable_jsonl_and_parquet_columns_are_named(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _jsonl(tmp_path / "one.jsonl", [{"text": "only one column"}])
    with pytest.raises(BoomError, match="one.jsonl: needs .*; columns found: text$"):
        load_training_data(tmp_path / "one.jsonl")
    pq.write_table(pa.table({"anchor": ["a"], "positive": [3]}), tmp_path / "typed.parquet")
    typed = (
        r"typed.parquet: column 'positive' does not hold text; "
        r"columns found: anchor \(string\), positive \(int64\)$"
    )
    with pytest.raises(BoomError, match=typed):
        load_training_data(tmp_path / "typed.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BoomError, match="junk.parquet: not a readable parquet file"):
        load_training_data(tmp_path / "junk.parquet")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BoomError, match="notes.txt: unknown training data format '.txt'"):
        load_training_data(tmp_path / "notes.txt")


def test_missing_text_names_the_column(tmp_path: Path) -> None:
    _jsonl(tmp_path / "gap.jsonl", [{"anchor": "a", "positive": "b"}, {"anchor": "a", "positive": ""}])
    with pytest.raises(BoomError, match="gap.jsonl: line 2: column 'positive' must hold a non-empty text"):
        scan_training_data(tmp_path)
    assert len(scan_training_data(tmp_path, on_bad_line="skip")["gap"].examples) == 1


@pytest.mark.parametrize("case", ["not-utf8", "dir-named-jsonl", "unusable-columns"])
def test_cli_reading_errors_are_one_line(tmp_path: Path, case: str) -> None:
    from click.testing import CliRunner

    from boom_merge.cli import main

    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "good.jsonl", [{"query": "q", "pos": ["p"]}])
    bad = data / "x.jsonl"
    if case == "not-utf8":
        bad.write_bytes(b'{"query": "\xff", "pos": ["p"]}\n')
    elif case == "dir-named-jsonl":
        bad.mkdir()
    else:
        _jsonl(bad, [{"text": "t", "label": 1}])
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--base", "unused", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {bad}: ")
    assert not (tmp_path / "out").exists()


def test_cli_takes_files_and_datasets_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from boom_merge.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scored.csv").write_text("sentence1,sentence2,label\na,b,1\n", encoding="utf-8")
    runner = CliRunner()
    for data, expected in [
        ("scored.csv", "scored.csv: column 'label' holds scores or labels"),  # a file, not a directory
        ("acme/absent", "acme/absent: not a local file or directory, and the Hugging Face dataset cannot be loaded"),
    ]:
        for command in (["train", "--data", data], ["train-update", "--new-data", data, "--history-data", data]):
            result = runner.invoke(main, [*command, "--base", "unused", "-o", str(tmp_path / "out")])
            assert result.exit_code == 1 and "Traceback" not in result.output, result.output
            assert result.output.strip().splitlines()[-1].startswith(f"Error: {expected}")
    assert not (tmp_path / "out").exists()


def test_cli_several_data_and_the_config_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from boom_merge.cli import main

    _jsonl(tmp_path / "good.jsonl", [{"query": "q", "pos": ["p"]}])
    (tmp_path / "bad.csv").write_text("only\nx\n", encoding="utf-8")
    runner = CliRunner()
    out = ["--base", "unused", "-o", str(tmp_path / "out")]
    two = ["--data", str(tmp_path / "good.jsonl"), "--data", str(tmp_path / "bad.csv")]
    several = runner.invoke(main, ["train", *two, *out])
    assert several.exit_code == 1
    assert several.output.strip().splitlines()[-1].startswith(f"Error: {tmp_path / 'bad.csv'}: ")
    update = ["train-update", "--new-data", str(tmp_path), "--history-data", str(tmp_path)]
    for command in (["train", "--data", str(tmp_path)], update):
        result = runner.invoke(main, [*command, "--data-config", "triplet", *out])
        assert result.exit_code == 1 and "--data-config 'triplet' applies to a Hugging Face dataset id" in result.output
    assert not (tmp_path / "out").exists()


def test_train_on_a_file_and_a_cached_datasets_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bert_base: Path
) -> None:
    import datasets
    from click.testing import CliRunner

    from boom_merge.cli import main

    cache = tmp_path / "hf-datasets"
    _cache_hub_dataset(cache, "acme/multi", "short", {"anchor": ["Who?", "Why?"], "positive": ["Me.", "Because."]})
    _cache_hub_dataset(cache, "acme/multi", "long", ROWS)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "local.jsonl", [{"query": f"q{i}", "pos": [f"p{i}"]} for i in range(4)])
    args = ["train", "--data", "local.jsonl", "--data", "acme/multi", "--data-config", "short"]
    args += ["--base", str(tiny_bert_base), "--ratios", "100", "--batch-size", "2", "--max-steps", "1", "-o", "members"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((tmp_path / "members").glob("member-*/boom_member.json")).read_text())
    assert manifest["data"] == f"{tmp_path / 'local.jsonl'}, acme/multi"
    sampled = {name: entry["sampled"] for name, entry in manifest["datasets"].items()}
    assert sampled == {"local": 4, "acme/multi:short": 2}
    (tmp_path / "more").mkdir()
    _jsonl(tmp_path / "more" / "extra.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "r", "pos": ["s"]}])
    inside = args[:-1] + ["more/members"]  # OUT inside the second --data: refused like one inside the first
    inside[2:3] = ["local.jsonl", "--data", "more"]
    refused = CliRunner().invoke(main, inside)
    assert refused.exit_code == 1 and "lies inside the input" in refused.output
    assert not (tmp_path / "more" / "members").exists()


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_ragged_rows_are_one_error_naming_file_and_line(tmp_path: Path, suffix: str, sep: str) -> None:
    """An unquoted delimiter inside a text shifts the columns: refused, never silently truncated."""
    file = tmp_path / f"faq{suffix}"
    body = f"query{sep}positive\nwhat is a lake{sep}still water\n\"a quoted\nrow\"{sep}fine\n"
    file.write_text(body + f"what is a river{sep} really{sep}a river is moving water\n", encoding="utf-8")
    with pytest.raises(BoomError) as error:
        load_training_data(file)
    assert str(error.value).startswith(f"{file}: line 5: 3 fields, the header has 2")
    file.write_text(body + "just one field\n", encoding="utf-8")
    with pytest.raises(BoomError, match=r"line 5: 1 fields, the header has 2"):
        load_training_data(file)
    file.write_text(body + "\n", encoding="utf-8")  # a blank line is no row
    assert [e.query for e in load_training_data(file)["faq"]] == ["what is a lake", "a quoted\nrow"]
