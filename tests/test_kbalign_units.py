"""KBAlign's pieces one by one: reading the model's annotation replies and the "does not contain the answer"
rejection, even chunk sampling, the half-RAG / half-closed-book prompt mix, critiques (verdict check, redaction of the
reference answer, error-type fallback), the learning-rate schedule across rounds, general-data mixing, EM/F1, the
shard split of multi-device runs (and a real two-process gloo run of the stage loop), and the resumable stage state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainers.kbalign.critique import (
    build_critique, check_verdict, error_type_from_overlap, leaks_reference, parse_error_type, parse_verdict, redact,
)
from trainers.kbalign.distributed import Ranks, shard, step_windows
from trainers.kbalign.kb import Chunk, sample_evenly
from trainers.kbalign.mixing import general_counts, general_rows_per_round
from trainers.kbalign.pairs import Pair, choose_rag, split_parts
from trainers.kbalign.parsing import QAFilter, parse_answer, parse_qa_pairs, parse_questions, says_no_answer
from trainers.kbalign.prompts import (
    ERROR_NONE, ERROR_NOT_DIRECT, ERROR_PARTIAL, ERROR_UNRELATED, ERROR_WRONG, VERIFY_REQUEST,
)
from trainers.kbalign.scoring import exact_match, mean_scores, normalize_answer, overlap_f1

REPO = Path(__file__).resolve().parent.parent


# --- short-range annotation: several pairs per reply, and the rejection of "the passage does not say" ------------

def test_several_pairs_per_reply_in_every_form():
    reply = ("Question: Where do the zuvi live?\nAnswer: The zuvi live in Neka.\n"
             "Question: What do the zuvi eat?\nAnswer: Rice.\nQuestion: What colour do they wear?")
    assert parse_qa_pairs(reply) == [("Where do the zuvi live?", "The zuvi live in Neka."),
                                     ("What do the zuvi eat?", "Rice."), ("What colour do they wear?", None)]
    assert parse_qa_pairs("Question: Q1: Who came?\nA1: Ann.\nQ2: When?\nA2: In May.") == [
        ("Who came?", "Ann."), ("When?", "In May.")]
    assert parse_qa_pairs("Question: 1. Who came? Answer: Ann. 2. Question: Why? Answer: To help.") == [
        ("Who came?", "Ann. 2."), ("Why?", "To help.")]
    assert parse_qa_pairs("Question: 天空是什么颜色？\n答案：蓝色。\n问题：草是什么颜色？\n答案：绿色。") == [
        ("天空是什么颜色？", "蓝色。"), ("草是什么颜色？", "绿色。")]
    # No answer labels at all: the reference code's reading, lines alternately question and answer.
    assert parse_qa_pairs("Question: Who came?\nAnn.\nWhy?\nTo help.") == [("Who came?", "Ann."), ("Why?", "To help.")]
    assert parse_qa_pairs("Question:") == []
    assert parse_questions("Question: Why? How come?\n2. What now?\n- Who") == ["Why?", "How come?", "What now?", "Who"]
    assert parse_answer(" Blue.\nQuestion: next?") == "Blue."


@pytest.mark.parametrize(("text", "says"), [
    ("The passage does not mention his age.", True),
    ("This is not mentioned in the text.", True),
    ("None", True),
    ("There is no information about it.", True),
    ("Unspecified", True),
    ("文中未提及他的年龄。", True),
    ("没有相关信息", True),
    ("材料中没有提到", True),
    ("Nonetheless, the bridge opened in 1932.", False),
    ("The zuvi live in Neka.", False),
    ("他出生于1932年。", False),
])
def test_answers_saying_the_chunk_lacks_the_answer_are_recognised(text, says):
    assert says_no_answer(text) is says


@pytest.mark.parametrize(("question", "answer", "reason"), [
    ("Where do the zuvi live?", "The zuvi live in Neka.", None),
    ("Where do the zuvi live?", "The passage does not say.", "says the passage does not answer it"),
    ("Where do the zuvi live?", "未提及。", "says the passage does not answer it"),
    ("Where?", "Neka.", "question too short"),  # 1 word < 4
    ("Where do the zuvi live", "Neka.", "question has no '?'"),
    ("Where do the zuvi live?", "Neka?", "answer has a '?'"),
    ("Where do the zuvi live?", "", "no answer"),
    ("Where do the zuvi live?", " ".join(["word"] * 71), "answer too long"),
    ("Where " + "really " * 30 + "do they live?", "Neka.", "question too long"),
    ("天空是什么颜色？", "蓝色。", None),  # a Chinese character counts as a word
])
def test_the_reference_filters(question, answer, reason):
    assert QAFilter().reject_reason(question, answer) == reason


def test_filters_can_be_relaxed():
    relaxed = QAFilter(require_question_mark=False, min_question_words=1, reject_no_answer=False)
    assert relaxed.reject_reason("Where", "Not mentioned?") is None
    assert "reject_no_answer=False" in relaxed.describe()


def test_max_chunks_samples_evenly_across_the_knowledge_base():
    assert sample_evenly(5, 10) == [0, 1, 2, 3, 4]
    picked = sample_evenly(1000, 10)
    assert picked == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    picked = sample_evenly(10, 4)
    assert len(picked) == len(set(picked)) == 4 and picked[0] == 0 and picked[-1] >= 7


# --- the rounds' parts and their training prompts ----------------------------------------------------------------

def test_the_pairs_are_dealt_round_robin_into_the_rounds_with_every_grain_in_each():
    pairs = [Pair("short", f"s{i}", "a") for i in range(7)] + [Pair("long", f"l{i}", "a") for i in range(3)]
    parts = split_parts(pairs, 3, seed=1)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(p.question for part in parts for p in part) == sorted(p.question for p in pairs)
    assert all({p.grain for p in part} == {"short", "long"} for part in parts)
    assert [len(p) for p in split_parts(pairs[:1], 2, seed=1)] == [1]


def test_about_half_of_the_training_prompts_carry_retrieved_passages_seeded():
    mix = choose_rag(1000, 0.5, seed=7)
    assert sum(mix) == 500 and mix == choose_rag(1000, 0.5, seed=7) and mix != choose_rag(1000, 0.5, seed=8)
    assert 200 < sum(mix[:500]) < 300  # spread out, not the first half
    assert sum(choose_rag(9, 0.5, seed=1)) in (4, 5) and not any(choose_rag(4, 0.0, 1)) and all(choose_rag(4, 1.0, 1))


def test_rag_and_closed_book_records_through_the_shared_prompt_fitter(tiny_llama_dir):
    from trainers.common.model_loading import load_tokenizer
    from trainers.kbalign.records import RecordBuilder

    tokenizer = load_tokenizer(str(tiny_llama_dir))
    chunks = [Chunk(f"c{i}", f"The {w} is red. " * 30, "kb") for i, w in enumerate(["apple", "sky", "snow"])]
    builder = RecordBuilder(tokenizer, 128, 16, chunks)
    rag = Pair("short", "What colour is the apple?", "The apple is red.", rag=True, retrieved=[0, 1, 2])
    fitted, record = builder.qa(rag)
    prompt = record["prompt"][0]["content"]
    assert prompt.startswith("Passages:\n[1] ") and prompt.endswith("Question: What colour is the apple?")
    assert fitted.fits and fitted.trimmed and fitted.tokens <= 128 and fitted.passages_kept < 3
    assert record["completion"] == [{"role": "assistant", "content": "The apple is red."}]
    closed = Pair("short", "What colour is the apple?", "The apple is red.", rag=False, retrieved=[0, 1, 2])
    assert builder.qa(closed)[1]["prompt"] == [{"role": "user", "content": "What colour is the apple?"}]


def test_a_verification_record_never_shows_the_reference_answer(tiny_llama_dir):
    from trainers.common.model_loading import load_tokenizer
    from trainers.kbalign.records import RecordBuilder

    chunks = [Chunk("c0", "The apple grows on trees.", "kb")]
    builder = RecordBuilder(load_tokenizer(str(tiny_llama_dir)), 512, 16, chunks)
    pair = Pair("short", "What colour is the apple?", "The apple is crimson.", retrieved=[0])
    critique = build_critique("The student response is wrong because the apple is crimson.", pair.question,
                              "The apple is green.", pair.answer, 0.5)
    assert critique.critique_source == "template" and "crimson" not in critique.text
    _, record = builder.verification(pair, [0], "The apple is green.", critique.text)
    turns = record["prompt"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == "The apple is green." and turns[2]["content"] == VERIFY_REQUEST
    assert "crimson" not in json.dumps(record)
    assert "The apple grows on trees." in turns[0]["content"]  # the retrieved passage is there


# --- critiques -----------------------------------------------------------------------------------------------------

def test_critique_verdicts_are_parsed_and_checked():
    assert parse_verdict("The student response is correct because it says so.") is True
    assert parse_verdict("The student response is incorrect because") is False
    assert parse_verdict("The student response is not correct because") is False
    assert parse_verdict("The student response is partially right because") is False
    assert parse_verdict("The student response is 正确的，因为") is True
    assert parse_verdict("ka lo mi") is None
    assert parse_error_type("... ERROR TYPE: provides only part of the info") == ERROR_PARTIAL
    assert parse_error_type("no label here") is None
    # The model's verdict stands in between; an exact match or a draft sharing nothing overrules it.
    assert check_verdict(True, "The zuvi live in Tova.", "The zuvi live in Neka.", 0.9) == (True, "model", 0.8)
    assert check_verdict(False, "Neka", "neka.", 0.5) == (True, "overruled", 1.0)
    assert check_verdict(True, "Tova", "Neka", 0.5) == (False, "overruled", 0.0)
    assert check_verdict(None, "The zuvi live in Tova.", "The zuvi live in Neka.", 0.9) == (False, "overlap", 0.8)
    assert check_verdict(None, "The zuvi live in Tova.", "The zuvi live in Neka.", 0.5)[0] is True


def test_a_critique_that_states_the_reference_answer_is_redacted_or_replaced():
    question, reference = "Where do the zuvi live?", "Neka"
    kept = build_critique("The student response is wrong because it names a place the passages do not give for "
                          "the zuvi. The right place is Neka. ERROR TYPE: provides totally wrong information",
                          question, "Tova", reference, 0.5)
    assert kept.critique_source == "model_redacted" and "Neka" not in kept.text and not kept.correct
    assert kept.text.startswith("The student response is wrong because it names a place")
    assert kept.error_type == ERROR_WRONG
    replaced = build_critique("The student response is wrong because the zuvi live in Neka. ERROR TYPE: provides "
                              "totally wrong information", question, "Tova", reference, 0.5)
    assert replaced.critique_source == "template" and replaced.note == "leaked the reference answer"
    assert "Neka" not in replaced.text and replaced.text.startswith("The student response is wrong because")
    # Repeating what the draft already said reveals nothing: a correct draft's critique may name it.
    same = build_critique("The student response is correct because the zuvi live in Neka. ERROR TYPE: none",
                          question, "The zuvi live in Neka.", "The zuvi live in Neka.", 0.5)
    assert same.critique_source == "model" and same.correct
    assert leaks_reference("They live in Neka.", "Neka", question, "Tova")
    assert not leaks_reference("They live in Neka.", "Neka", question, "In Neka")
    assert redact("A. It is Neka. B.", "Neka", question, "Tova") == ("A. B.", 1)


def test_critiques_fall_back_to_a_template_with_an_error_type_from_the_overlap():
    question = "Where do the zuvi live and what do they eat?"
    reference = "The zuvi live in Neka and eat rice."
    assert error_type_from_overlap(True, question, "anything", reference) == ERROR_NONE
    assert error_type_from_overlap(False, question, "", reference) == ERROR_NOT_DIRECT
    assert error_type_from_overlap(False, question, "Where do the zuvi live?", reference) == ERROR_NOT_DIRECT
    assert error_type_from_overlap(False, question, "The zuvi live in Neka.", reference) == ERROR_PARTIAL
    assert error_type_from_overlap(False, question, "The zuvi live in Tova.", reference) == ERROR_WRONG
    assert error_type_from_overlap(False, question, "Bananas are yellow.", reference) == ERROR_UNRELATED
    babble = build_critique("The student response is ka lo mi", question, "The zuvi live in Neka.", reference, 0.9)
    assert (babble.critique_source, babble.note, babble.correct) == ("template", "malformed", False)
    assert babble.verdict_source == "overlap" and babble.error_type == ERROR_PARTIAL
    assert babble.text == ("The student response is wrong because it gives only part of the information the question "
                           "asks for. ERROR TYPE: provides only part of the information.")


# --- one learning-rate schedule across rounds ----------------------------------------------------------------------

def test_the_learning_rate_schedule_spans_the_rounds_without_a_second_warm_up():
    import torch

    from trainers.kbalign.schedule import CrossRoundSchedule

    schedule = CrossRoundSchedule("linear", warmup_steps=4, total_steps=20)
    factors = [schedule.factor(step) for step in range(20)]
    assert factors[:5] == [0.0, 0.25, 0.5, 0.75, 1.0] and factors[4:] == sorted(factors[4:], reverse=True)

    def lrs(offset: int, steps: int) -> list[float]:
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=0.1)
        scheduler = schedule.for_round(optimizer, offset)
        out = []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    round_1, round_2 = lrs(0, 10), lrs(10, 10)
    assert round_1[4] == pytest.approx(0.1) and round_1[0] == 0.0  # the one warm-up, in round 1
    assert round_2[0] == pytest.approx(0.1 * factors[10])  # round 2 goes on where round 1 stopped
    assert round_2[0] < max(round_1)
    assert round_2 == sorted(round_2, reverse=True) and round_2[0] < round_1[-1]
    assert CrossRoundSchedule("cosine", 0, 10).factor(5) == pytest.approx(0.5)


def test_planned_steps_count_every_rank():
    from types import SimpleNamespace

    from trainers.kbalign.schedule import StepPlan, planned_steps

    args = SimpleNamespace(max_steps=-1, per_device_train_batch_size=4, world_size=2, gradient_accumulation_steps=1,
                           num_train_epochs=2)
    assert planned_steps(17, args) == 6  # ceil(17 / 8) batches x 2 epochs
    assert planned_steps(17, SimpleNamespace(**{**vars(args), "max_steps": 5})) == 5
    plan = StepPlan([10, 10, 10], {1: 8})
    assert plan.total == 28 and plan.offset(2) == 8 and plan.offset(3) == 18


# --- general-domain mixing -----------------------------------------------------------------------------------------

def test_general_rows_are_mixed_in_at_the_ratio_and_differ_between_rounds():
    assert general_counts([40, 81, 0], 0.25) == [10, 20, 0]
    rounds = general_rows_per_round(30, [10, 20, 0], seed=3)
    assert [len(r) for r in rounds] == [10, 20, 0]
    assert len(set(rounds[0]) | set(rounds[1])) == 30  # walked on, not the same rows again
    assert general_rows_per_round(4, [10], seed=3)[0].count(0) >= 2  # fewer rows than wanted: reused
    assert general_rows_per_round(0, [5, 5], seed=3) == [[], []]
    assert rounds == general_rows_per_round(30, [10, 20, 0], seed=3)


# --- KB-QA metrics ---------------------------------------------------------------------------------------------------

def test_exact_match_and_token_f1():
    assert normalize_answer("The  Zuvi live in NEKA!") == "zuvi live in neka"
    assert exact_match("the zuvi live in Neka.", "The Zuvi live in neka") and not exact_match("Neka", "Tova")
    assert overlap_f1("The zuvi live in Tova.", "The zuvi live in Neka.") == pytest.approx(0.8)
    assert overlap_f1("", "Neka") == 0.0 and overlap_f1("蓝色", "蓝色的") == pytest.approx(0.8)
    assert mean_scores([("Neka", "neka."), ("Tova", "Neka")]) == {"exact_match": 0.5, "f1": 0.5}
    assert mean_scores([]) == {"exact_match": 0.0, "f1": 0.0}


# --- multi-device: the shard split ---------------------------------------------------------------------------------

def test_each_step_is_shared_round_robin_and_ends_at_a_common_item():
    windows = step_windows(0, 11, world_size=2, batch_size=3)
    assert windows == [range(0, 6), range(6, 11)]
    assert [shard(list(w), 0, 2) for w in windows] == [[0, 2, 4], [6, 8, 10]]
    assert [shard(list(w), 1, 2) for w in windows] == [[1, 3, 5], [7, 9]]
    assert step_windows(6, 11, 1, 3) == [range(6, 9), range(9, 11)]  # a resumed stage, any world size
    single = Ranks()
    assert (single.world_size, single.is_main, single.distributed) == (1, True, False)
    assert single.gather([1, 2]) == [1, 2] and single.from_main("x") == "x" and single.any(False) is False


_TWO_RANKS = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch.distributed as dist
    sys.path.insert(0, {repo!r})
    dist.init_process_group("gloo")
    from trainers.common.metrics import MetricsEmitter
    from trainers.kbalign.distributed import Ranks
    from trainers.kbalign.runtime import Runtime
    from trainers.kbalign.state import StageState

    class Config:
        generation_batch_size = 2

    ranks = Ranks()
    out = Path({out!r})
    rt = Runtime(Config(), out, MetricsEmitter(), ranks, StageState(out, writer=ranks.is_main))
    committed = []
    rt.run_items("annotate_short", 7, lambda items: [f"rank{{ranks.rank}}:{{i}}" for i in items], committed.extend)
    print(json.dumps({{"rank": ranks.rank, "committed": committed, "clusters": ranks.from_main([ranks.rank])}}))
    dist.destroy_process_group()
""")


def test_two_gloo_ranks_share_a_stage_and_hold_the_same_results(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(_TWO_RANKS.format(repo=str(REPO), out=str(tmp_path / "out")))
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    procs = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["committed"] == results[1]["committed"]  # every rank holds every result, in item order
    assert [item for item, _ in results[0]["committed"]] == list(range(7))
    assert {value.split(":")[0] for _, value in results[0]["committed"]} == {"rank0", "rank1"}  # both worked
    assert results[0]["clusters"] == results[1]["clusters"] == [0]  # rank 0's value everywhere
    state = json.loads((tmp_path / "out/stages/state.json").read_text())  # written by rank 0
    assert state["progress"]["annotate_short"] == 7


# --- the resumable stage state -------------------------------------------------------------------------------------

def test_stage_state_snapshots_and_item_logs_resume_where_the_state_says(tmp_path):
    from trainers.errors import ConfigError
    from trainers.kbalign.state import ItemLog, StageState

    state = StageState(tmp_path)
    state.set_progress("annotate_short", 4)
    snapshot = state.snapshot("annotate_short@4")
    state.finish("annotate_short", {"kept": 3})
    resumed = StageState.start(tmp_path, str(snapshot))
    assert resumed.progress("annotate_short") == 4 and not resumed.finished("annotate_short")
    assert StageState.start(tmp_path, str(tmp_path / "stages")).finished("annotate_short")  # the current state
    round_dir = state.round_snapshot(2)
    (round_dir / "checkpoint-3").mkdir()
    from_trainer = StageState.start(tmp_path, str(round_dir / "checkpoint-3"))
    assert from_trainer.trainer_checkpoint == (2, str(round_dir / "checkpoint-3"))
    with pytest.raises(ConfigError) as info:
        StageState.start(tmp_path, str(tmp_path))
    assert info.value.field == "checkpoint"

    log = ItemLog(tmp_path / "short.jsonl")
    assert log.resume(0) == []
    log.append([{"item": i, "x": i} for i in range(6)])
    before = (tmp_path / "short.jsonl").stat().st_mtime_ns
    assert [r["item"] for r in log.resume(6)] == list(range(6))
    assert (tmp_path / "short.jsonl").stat().st_mtime_ns == before  # nothing beyond the state: untouched
    assert [r["item"] for r in log.resume(4)] == [0, 1, 2, 3]  # an older snapshot: cut back
    assert len((tmp_path / "short.jsonl").read_text().splitlines()) == 4
