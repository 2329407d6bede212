"""Fitting RAG rows into max_length (trainers.common.prompt_fit): passages are trimmed or dropped, never the question
or the answer; a row that cannot fit is counted by line, and is fatal under truncation "error". Real tokenizer of the
tiny Llama built on the spot."""

from __future__ import annotations

import pytest

from trainers.common.prompt_fit import FitTally, PromptFitter
from trainers.common.workflow import Rows, fit_rows
from trainers.errors import DataError

ANSWER = [{"role": "assistant", "content": "The apple is red."}]
QUESTION = "What colour is the apple?"


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from trainers.common.model_loading import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


def test_a_row_that_fits_is_kept_as_it_is(tokenizer):
    from trainers.sft.data import fit_record
    from trainers.sft.spec import parse_row

    row = parse_row({"query": "What colour is the sky?", "retrieval_result": "The sky is blue.",
                     "chosen": {"text": "Blue."}})
    fitted, record = fit_record(row, PromptFitter(tokenizer, 256))
    assert fitted.fits and not fitted.trimmed and fitted.tokens == fitted.given_tokens
    assert record == {
        "prompt": [{"role": "user", "content": "Passages:\n[1] The sky is blue.\n\nQuestion: What colour is the sky?"}],
        "completion": [{"role": "assistant", "content": "Blue."}],
    }


def test_long_passages_are_trimmed_in_order_and_the_question_and_answer_kept(tokenizer):
    fitter = PromptFitter(tokenizer, 96)
    passages = ["The apple is red. " * 12, "The sky is blue. " * 12, "The snow is white. " * 12]
    fitted = fitter.fit(QUESTION, passages, [ANSWER])
    assert fitted.fits and fitted.trimmed and fitted.given_tokens > 200
    assert fitted.tokens <= 96 == fitter.max_length
    assert fitted.tokens == fitter.count(fitted.prompt + ANSWER)  # measured as trl will tokenize it
    text = fitted.prompt[0]["content"]
    assert text.startswith("Passages:\n[1] The apple is red.") and text.endswith(f"Question: {QUESTION}")
    assert "snow" not in text  # later passages go first; the best-ranked one is kept (cut to what is left)
    assert 1 <= fitted.passages_kept < 3


def test_a_row_too_long_without_passages_cannot_fit(tokenizer):
    fitter = PromptFitter(tokenizer, 32)
    fitted = fitter.fit(QUESTION * 6, ["The apple is red."], [ANSWER])
    assert not fitted.fits and fitted.prompt == [{"role": "user", "content": QUESTION * 6}]
    chat = fitter.measure([{"role": "user", "content": QUESTION * 6}], [ANSWER])
    assert not chat.fits and fitter.measure([{"role": "user", "content": QUESTION}], [ANSWER]).fits


def test_the_tally_names_the_lines_and_error_mode_is_fatal(tokenizer):
    fitter = PromptFitter(tokenizer, 40)
    queries = [QUESTION, QUESTION * 6, QUESTION, QUESTION * 8]
    rows = Rows(queries, [2, 5, 7, 9], "train_data_path", "data/train.jsonl")

    def fit_one(query):
        fitted = fitter.fit(query, ["The apple is red. " * 20], [ANSWER])
        return fitted, {"prompt": fitted.prompt}

    records, tally = fit_rows(rows, fit_one, 40)
    assert len(records) == 2 and tally.report() == {
        "rows_trained": 2, "rows_trimmed": 2, "rows_dropped": 2, "rows_dropped_lines": [5, 9]}
    assert tally.report("eval_rows")["eval_rows_kept"] == 2
    assert tally.message().startswith("train_data_path: data/train.jsonl lines 5, 9: the question and answer alone")
    with pytest.raises(DataError) as info:
        fit_rows(rows, fit_one, 40, truncation="error")
    assert info.value.field == "train_data_path" and [p.line for p in info.value.problems] == [5, 9]
    assert "(truncation: error)" in info.value.message and "max_length (40 tokens)" in info.value.message


def test_many_dropped_lines_are_counted_in_full_and_named_in_part():
    tally = FitTally("train_data_path", "big.jsonl", 16)
    from trainers.common.prompt_fit import Fitted

    for line in range(1, 31):
        tally.add(line, Fitted([], 99, 99, 0, 0, 0, False))
    assert tally.dropped == 30 and tally.report()["rows_dropped_lines"] == list(range(1, 21))
    assert "and 10 more" in tally.message()
