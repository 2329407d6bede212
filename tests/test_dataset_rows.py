"""An upload's rows checked as they stream in (trainers.common.row_stream.RowStream), against the trainers' own
loader (trainers.common.jsonl.load_rows) on the same bytes: same rows, same refusals, whatever the chunking. In-process
on real files; plus one subprocess showing the validator imports neither torch nor gRPC."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.dpo_data import dpo_rows
from tests.helpers.embedding_data import embedding_rows
from tests.helpers.kbalign_data import DOCUMENTS
from tests.helpers.tiny_models import sft_rows
from trainers import registry
from trainers.common import jsonl
from trainers.common.jsonl import load_rows
from trainers.common.row_stream import RowStream
from trainers.errors import ConfigError, DataError
from trainers.kbalign.kb import load_kb

TYPES = ("sft", "dpo", "embedding", "kbalign")
CHAT = {"messages": [{"role": "user", "content": "What colour is the sky?"},
                     {"role": "assistant", "content": "The sky is blue."}]}


def good_rows(type_name: str, n: int = 12) -> list:
    if type_name == "sft":
        return [CHAT if i % 3 == 2 else row for i, row in enumerate(sft_rows(n))]
    if type_name == "dpo":
        return dpo_rows(n)
    if type_name == "embedding":
        return embedding_rows(n)
    return [DOCUMENTS[i % len(DOCUMENTS)] if i % 2 else DOCUMENTS[i % len(DOCUMENTS)]["text"] for i in range(n)]


# A bad row for line 7 of each type, and the problem it must be reported with.
BAD_ROW = {
    "sft": ({"query": "q?", "chosen": {}}, "chosen.text: Field required"),
    "dpo": ({"query": "q?", "chosen": {"text": "a"}, "rejected": {"text": " a "}},
            "rejected.text: is identical to chosen.text; a preference pair needs two different answers"),
    "embedding": ({"query": "q?", "pos": []}, "pos: List should have at least 1 item after validation, not 0"),
    "kbalign": ({"title": "no text"}, "text: Field required"),
}
# The type's own counters for good_rows(type, 12).
TYPE_STATS = {
    "sft": {"rag_rows": 8, "chat_rows": 4},
    "dpo": {"pairs": 12, "rows_with_passages": 9},
    "kbalign": {"text_rows": 12, "chat_rows": 0},
}


def lines(*items) -> bytes:
    """Rows as JSONL lines; bytes are written as they are (a broken line)."""
    out = b""
    for item in items:
        out += (item if isinstance(item, bytes) else json.dumps(item).encode("utf-8")) + b"\n"
    return out


def streamed(type_name: str, data: bytes, name: str = "train.jsonl", chunks: int | list[int] | None = None, **kw):
    """Feeds `data` to a fresh stream in chunks of the given size(s) (default: all at once) and finishes it."""
    stream = RowStream.for_type(type_name, name=name, **kw)
    sizes = [len(data) or 1] if chunks is None else ([chunks] if isinstance(chunks, int) else chunks)
    position, index = 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        stream.feed(data[position:position + size])
        position, index = position + size, index + 1
    return stream.finish()


def loaded(type_name: str, data: bytes, tmp_path: Path, name: str = "train.jsonl"):
    """What the trainer's loader makes of the same bytes: (rows, type stats) or the DataError."""
    (tmp_path / name).write_bytes(data)
    checker = registry.get(type_name).row_parser()
    try:
        rows, report = load_rows(name, checker, field="file", workspace=tmp_path)
    except DataError as exc:
        return exc
    return report.rows, dict(checker.stats)


def outcome(type_name: str, data: bytes, name: str = "train.jsonl", **kw):
    """The stream's answer in load_rows' terms, so the two compare."""
    try:
        report = streamed(type_name, data, name, **kw)
    except DataError as exc:
        return exc
    counters = {k: v for k, v in report.stats.items() if k not in {"rows", "bytes", "mean_row_bytes", "max_row_bytes"}}
    return report.rows, counters


def same(a, b) -> bool:
    if isinstance(a, DataError) and isinstance(b, DataError):
        return (a.field, a.message, a.problems, a.rows) == (b.field, b.message, b.problems, b.rows)
    return a == b


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("BUGAGARIC_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("BUGAGARIC_DATA_ROOTS", raising=False)
    monkeypatch.delenv("BUGAGARIC_MAX_ROW_BYTES", raising=False)


# --- the registry ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", TYPES)
def test_every_type_names_its_inputs_and_row_parser(type_name):
    task_type = registry.get(type_name)
    assert task_type.input_fields and set(task_type.input_fields) <= set(task_type.config_model.model_fields)
    assert callable(task_type.row_parser) and task_type.row_parser() is not task_type.row_parser()
    assert "output_dir" not in task_type.default_config  # each task gets a directory of its own
    task_type.parse_config(task_type.default_config)


def test_input_fields_of_the_builtin_types():
    assert {name: registry.get(name).input_fields for name in TYPES} == {
        "sft": ("train_data_path", "eval_data_path", "init_from"), "dpo": ("train_data_path", "eval_data_path", "init_from"),
        "embedding": ("train_data", "train_data_path", "eval_data_path"),
        "kbalign": ("input_path", "eval_data_path", "general_data_path", "init_from")}


def test_a_type_without_uploads_is_refused():
    task_type = registry.TaskType("plain", "d", registry.get("sft").config_model, "x", lambda c, w: None, {}, {})
    with pytest.raises(ConfigError) as info:
        RowStream.for_type(task_type, name="a.jsonl")
    assert info.value.field == "type" and "plain" in info.value.message


# --- good uploads ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", TYPES)
def test_a_good_file_passes_with_its_rows_preview_and_stats(type_name, tmp_path):
    rows = good_rows(type_name)
    data = lines(*rows) + b"\n   \n"  # blank lines are numbered but are not rows
    report = streamed(type_name, data, chunks=1000)
    assert (report.name, report.rows, report.size, report.format) == ("train.jsonl", 12, len(data), "jsonl")
    assert report.preview == rows[:5]
    row_bytes = [len(json.dumps(r).encode()) for r in rows]
    assert report.stats["rows"] == 12 and report.stats["bytes"] == len(data)
    assert report.stats["max_row_bytes"] == max(row_bytes)
    assert report.stats["mean_row_bytes"] == round(sum(row_bytes) / 12, 1)
    for key, value in TYPE_STATS.get(type_name, {}).items():
        assert report.stats[key] == value, key
    assert same(loaded(type_name, data, tmp_path), outcome(type_name, data))


def test_embedding_counts_positives_and_negatives():
    report = streamed("embedding", lines(*good_rows("embedding")))
    assert report.stats["rows_without_negatives"] == 1 and report.stats["positives"] == 14


def test_the_preview_is_bounded_in_rows_and_bytes():
    data = lines(*good_rows("sft"))
    assert streamed("sft", data, preview_rows=2).preview == good_rows("sft")[:2]
    first = len(json.dumps(good_rows("sft")[0]))
    assert streamed("sft", data, preview_max_bytes=first).preview == good_rows("sft")[:1]
    assert streamed("sft", data, preview_rows=0).preview == []


def test_a_bom_and_crlf_line_ends_are_accepted(tmp_path):
    data = b"\xef\xbb\xbf" + lines(*good_rows("sft", 3)).replace(b"\n", b"\r\n")
    assert streamed("sft", data, chunks=1).rows == 3
    assert same(loaded("sft", data, tmp_path), outcome("sft", data))


def test_each_stream_gets_a_fresh_kbalign_parser():
    # The first row decides a KBAlign file's kind: a chat file after a text file is fine on its own.
    assert streamed("kbalign", lines(*good_rows("kbalign", 3))).stats["text_rows"] == 3
    assert streamed("kbalign", lines(CHAT, CHAT)).stats == {
        "rows": 2, "bytes": len(lines(CHAT, CHAT)), "mean_row_bytes": len(json.dumps(CHAT)),
        "max_row_bytes": len(json.dumps(CHAT)), "text_rows": 0, "chat_rows": 2}


# --- bad uploads ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", TYPES)
def test_a_bad_line_7_is_refused_naming_the_line_and_field(type_name, tmp_path):
    bad, problem = BAD_ROW[type_name]
    rows = good_rows(type_name, 10)
    data = lines(*rows[:6], bad, *rows[6:])
    with pytest.raises(DataError) as info:
        streamed(type_name, data, chunks=64)
    err = info.value
    assert err.field == "file"
    assert err.message == f"file: train.jsonl line 7: {problem}"
    assert [p.line for p in err.problems] == [7] and err.rows == 11
    assert same(loaded(type_name, data, tmp_path), err)


def test_kbalign_refuses_a_file_mixing_kinds():
    with pytest.raises(DataError, match=r"line 7: mixes chat rows"):
        streamed("kbalign", lines(*good_rows("kbalign", 6), CHAT))


def test_invalid_utf8_and_invalid_json_name_their_lines(tmp_path):
    rows = good_rows("sft", 6)
    data = lines(rows[0], rows[1], b'{"query": "caf\xe9?"}', rows[2], b"{not json", rows[3], b"[1, 2", rows[4])
    with pytest.raises(DataError) as info:
        streamed("sft", data, chunks=7)
    err = info.value
    assert err.message == ("file: train.jsonl line 3: not valid UTF-8 (byte 14: invalid continuation byte) "
                           "(3 bad lines in all)")
    assert [(p.line, p.message.split(" (")[0]) for p in err.problems] == [
        (3, "not valid UTF-8"), (5, "not valid JSON"), (7, "not valid JSON")]
    assert same(loaded("sft", data, tmp_path), err)


def test_problems_are_capped_at_20_and_all_counted():
    with pytest.raises(DataError) as info:
        streamed("sft", lines(*[b"nope"] * 30), chunks=3)
    assert len(info.value.problems) == 20 and "30 bad lines in all" in info.value.message


def test_an_empty_upload_is_refused():
    for data in (b"", b"\n \n"):
        with pytest.raises(DataError, match=r"^file: train.jsonl is empty \(no rows\)$"):
            streamed("sft", data)


# --- chunk boundaries -----------------------------------------------------------------------------------------------

def mixed_file(type_name: str) -> bytes:
    """Good rows, blank lines, a bad row, broken UTF-8 and JSON, multi-byte characters and no final newline."""
    rows = good_rows(type_name, 8)
    bad, _ = BAD_ROW[type_name]
    return (b"\xef\xbb\xbf" + lines(rows[0], rows[1]) + b"\n" + lines(bad, b'"\xff"', rows[2], b"{", rows[3])
            + "\n".join(json.dumps(r, ensure_ascii=False) for r in [*rows[4:], "caf\u00e9 \u4e2d\u6587"]).encode())


@pytest.mark.parametrize("type_name", TYPES)
def test_byte_by_byte_gives_what_load_rows_gives(type_name, tmp_path):
    good = lines(*good_rows(type_name, 8))
    for data in (good, good.rstrip(b"\n"), mixed_file(type_name)):
        expected = loaded(type_name, data, tmp_path)
        assert same(outcome(type_name, data, chunks=1), expected)
        rng = random.Random(len(data))
        assert same(outcome(type_name, data, chunks=[rng.randint(1, 90) for _ in range(50)]), expected)


# --- the row limit --------------------------------------------------------------------------------------------------

def test_an_over_long_row_is_refused_and_never_buffered(tmp_path, monkeypatch):
    monkeypatch.setenv("BUGAGARIC_MAX_ROW_BYTES", "300")
    row = good_rows("sft", 1)[0]
    long_row = {**row, "query": "x" * 1000}
    data = lines(row, row, long_row, row)
    stream = RowStream.for_type("sft", name="train.jsonl")
    for start in range(0, len(data), 40):
        stream.feed(data[start:start + 40])
        assert stream.buffered <= 300
    with pytest.raises(DataError) as info:
        stream.finish()
    assert info.value.message == ("file: train.jsonl line 3: longer than 300 bytes, the limit of one row "
                                  "(BUGAGARIC_MAX_ROW_BYTES)")
    assert [p.line for p in info.value.problems] == [3]
    assert same(loaded("sft", data, tmp_path), info.value)
    # In one chunk, at the very end, or the last line without a newline: the same answer.
    for variant in (data, lines(row, row, long_row), lines(row, row, long_row).rstrip(b"\n")):
        expected = loaded("sft", variant, tmp_path)
        assert isinstance(expected, DataError)
        assert same(outcome("sft", variant), expected) and same(outcome("sft", variant, chunks=1), expected)


def test_a_row_of_exactly_the_limit_passes(tmp_path, monkeypatch):
    row = good_rows("sft", 1)[0]
    size = len(json.dumps(row))
    for limit, passes in ((size, True), (size - 1, False)):
        monkeypatch.setenv("BUGAGARIC_MAX_ROW_BYTES", str(limit))
        for data in (lines(row, row), lines(row, row).rstrip(b"\n")):
            expected = loaded("sft", data, tmp_path)
            assert (not isinstance(expected, DataError)) is passes
            assert same(outcome("sft", data, chunks=1), expected) and same(outcome("sft", data), expected)


# --- JSON lists -----------------------------------------------------------------------------------------------------

def test_a_json_list_upload_works_for_kbalign(tmp_path):
    texts = [doc["text"] for doc in DOCUMENTS]
    data = json.dumps(texts).encode()
    report = streamed("kbalign", data, name="kb.json", chunks=5)
    assert (report.rows, report.format, report.preview) == (len(texts), "json", texts[:5])
    assert report.stats["text_rows"] == len(texts)
    assert same(outcome("kbalign", data, "kb.json", chunks=1), loaded("kbalign", data, tmp_path, "kb.json"))
    kb = load_kb("kb.json", 1000, 100, tmp_path)  # the trainer reads the same file the same way
    assert (kb.kind, kb.documents) == ("json", len(texts))


def test_a_bad_json_list_names_the_row_or_the_file(tmp_path):
    data = json.dumps(["one text", "two", 42, {"text": " "}]).encode()
    with pytest.raises(DataError) as info:
        streamed("kbalign", data, name="kb.json", chunks=3)
    assert info.value.message.startswith('file: kb.json row 3: row must be a JSON object with a "text"')
    assert "(2 bad rows in all)" in info.value.message
    assert same(loaded("kbalign", data, tmp_path, "kb.json"), info.value)
    for broken, words in ((b'["a", "b"', "is not valid JSON"), (b'{"text": "a"}', "must hold a JSON list"),
                          (b'["caf\xe9"]', "is not valid UTF-8")):
        with pytest.raises(DataError, match=words):
            streamed("kbalign", broken, name="kb.json", chunks=2)


def test_a_json_list_over_its_limit_is_refused_while_it_streams(monkeypatch):
    monkeypatch.setattr(jsonl, "JSON_LIST_MAX_BYTES", 100)
    stream = RowStream.for_type("kbalign", name="kb.json")
    stream.feed(b"[" + b'"a",' * 20)
    with pytest.raises(DataError, match="use JSONL"):
        stream.feed(b'"a",' * 10)


# --- datasets as the trainers see them --------------------------------------------------------------------------

def test_a_fetched_dataset_is_read_by_its_ref(tmp_path, monkeypatch):
    # The agent's cache lies in the platform's state directory, which no path may name: the ref reaches it.
    cached = tmp_path / "var" / "agent" / "cache" / "kb.jsonl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(lines(*good_rows("kbalign", 4), {"title": "x"}))
    monkeypatch.setenv("BUGAGARIC_INPUT_FILES", json.dumps({"dataset:d1": str(cached)}))
    with pytest.raises(DataError, match=r"^input_path: dataset:d1 line 5: text: Field required$"):
        load_kb("dataset:d1", 1000, 100, tmp_path)
    cached.write_bytes(lines(*good_rows("kbalign", 4)))
    assert load_kb("dataset:d1", 1000, 100, tmp_path).documents == 4


def test_the_validator_imports_no_torch_and_no_grpc():
    code = ("import sys; from trainers.common.row_stream import RowStream; s = RowStream.for_type('kbalign', "
            "name='a.jsonl'); s.feed(b'{\"text\": \"x\"}\\n'); assert s.finish().rows == 1; "
            "heavy = [m for m in ('torch', 'transformers', 'grpc', 'sentence_transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
