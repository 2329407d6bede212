"""The answer scores of the predictions after training (trainers.common.text_scores): exact match, token F1 and
ROUGE-L, on English and Chinese text."""

from __future__ import annotations

import pytest

from trainers.common.text_scores import (
    answer_scores, exact_match, lcs_length, mean_answer_scores, normalize_answer, overlap_f1, rouge_l, tokens,
)


def test_tokens_are_words_and_single_cjk_characters():
    assert tokens("The Cafe's 2 menus!") == ["the", "cafe", "s", "2", "menus"]
    assert tokens("巴黎是法国的首都。") == ["巴", "黎", "是", "法", "国", "的", "首", "都"]
    assert tokens("GPU显存80GB") == ["gpu", "显", "存", "80gb"]
    assert tokens("カタカナ한국") == ["カ", "タ", "カ", "ナ", "한", "국"]
    assert tokens("  ,.;  ") == []


def test_exact_match_is_squad_normalised():
    assert normalize_answer("The  Paris!") == "paris"
    assert exact_match("Paris.", "the paris")
    assert not exact_match("Paris is it", "Paris")
    assert exact_match("巴黎。", "巴黎")
    assert not exact_match("巴黎", "里昂")


def test_token_f1():
    assert overlap_f1("the cat sat", "the cat sat") == 1.0
    # candidate {red, apple}, reference {a, red, fruit}: 1 common -> P 1/2, R 1/3, F1 0.4
    assert overlap_f1("red apple", "a red fruit") == pytest.approx(0.4)
    assert overlap_f1("", "anything") == 0.0 and overlap_f1("x", "") == 0.0
    assert overlap_f1("blue", "red") == 0.0


def test_token_f1_scores_chinese_by_character():
    # 法国首都 vs 法国的首都是巴黎: 4 common characters; P 4/4, R 4/8 -> F1 2/3. Word-level tokenization would see one
    # token on each side and score 0.
    assert overlap_f1("法国首都", "法国的首都是巴黎") == pytest.approx(2 / 3)
    assert overlap_f1("巴黎", "巴黎") == 1.0


def test_rouge_l_is_the_lcs_f_measure():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length([], ["a"]) == 0
    # LCS of "police killed the gunman" / "police kill the gunman" = police, the, gunman: 3/4 both ways.
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)
    # Order matters for ROUGE-L, not for token F1.
    assert overlap_f1("b a", "a b") == 1.0 and rouge_l("b a", "a b") == pytest.approx(0.5)
    assert rouge_l("", "a") == 0.0


def test_rouge_l_on_chinese():
    # The same five characters in another order: the longest common subsequence is 巴黎 (or 首都), 2 of 5 -> 0.4;
    # token F1 (a bag of characters) calls them identical.
    assert lcs_length(tokens("巴黎是首都"), tokens("首都是巴黎")) == 2
    assert rouge_l("巴黎是首都", "首都是巴黎") == pytest.approx(0.4)
    assert overlap_f1("巴黎是首都", "首都是巴黎") == 1.0
    assert rouge_l("法国的首都是巴黎", "法国的首都是巴黎。") == 1.0


def test_answer_scores_and_their_means():
    one = answer_scores("The apple is red.", "the apple is red")
    assert one == {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0}
    two = answer_scores("The apple is green.", "The apple is red.")
    assert two == {"exact_match": 0.0, "token_f1": 0.75, "rouge_l": 0.75}
    assert mean_answer_scores([one, two]) == {"exact_match": 0.5, "token_f1": 0.875, "rouge_l": 0.875}
    assert mean_answer_scores([]) == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
