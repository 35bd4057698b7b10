"""Scorers for extractive QA (F1 / EM) and summaries (ROUGE) in every script of the grid."""

from __future__ import annotations

import pytest

from cft_helpers.evaluation.scoring import exact_match, f1, normalize, rouge, tokens

IDENTICAL_AND_DISJOINT = [
    ("th", "แมวดำ", "ฝนตกหนัก"),
    ("ja", "猫がマットの上に座った", "明日は雨です"),
    ("zh", "猫坐在垫子上", "明天下雨"),
    ("ar", "جلس القط على الحصيرة", "ستمطر غدا"),
    ("ru", "Кошка сидит на ковре", "Завтра будет дождь"),
    ("hi", "बिल्ली चटाई पर बैठी", "कल बारिश होगी"),
    ("en", "The cat sat on the mat", "Rain is expected tomorrow"),
]


@pytest.mark.parametrize("lang, text, other", IDENTICAL_AND_DISJOINT)
def test_identical_scores_one_and_disjoint_zero(lang, text, other):
    assert f1(text, text, lang) == 1.0 and exact_match(text, text, lang) == 1.0
    assert f1(other, text, lang) == 0.0 and exact_match(other, text, lang) == 0.0
    r = rouge(text, text, lang)
    assert r == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge(other, text, lang) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_score_default_tokenizer_is_the_trap_we_avoid():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score("جلس القط", "جلس القط")["rougeL"].fmeasure
    assert default == 0.0 and rouge("جلس القط", "جلس القط", "ar")["rougeL"] == 1.0


def test_hand_checked_partial_overlaps():
    # en: articles and punctuation dropped; {cat, sat} vs {cat, sat, down}: P 1, R 2/3 -> F1 0.8
    assert f1("The cat sat.", "cat sat down", "en") == pytest.approx(0.8)
    assert exact_match("The Cat, sat!", "cat sat", "en") == 1.0
    # th by character: "แมวดี" (5 chars) vs "แมว" (3 chars): P 3/5, R 1 -> F1 0.75
    assert f1("แมวดี", "แมว", "th") == pytest.approx(0.75)
    # ja by character, punctuation dropped: "東京です。" -> 東京です (4) vs 東京 (2): P 1/2, R 1 -> 2/3
    assert f1("東京です。", "東京", "ja") == pytest.approx(2 / 3)
    # ar by word: 2 of 3 predicted words in the 2-word reference -> P 2/3, R 1 -> 0.8
    assert f1("في مدينة القاهرة", "مدينة القاهرة", "ar") == pytest.approx(0.8)
    # best of several references
    assert f1("Paris", ["Lyon", "Paris"], "fr") == 1.0
    # ROUGE-1 on en words: pred "a b c d" vs ref "a b": P 2/4, R 1 -> F 2/3
    assert rouge("red green blue pink", "red green", "en")["rouge1"] == pytest.approx(2 / 3)


def test_a_wrong_answer_scores_lower():
    ref = "38"
    assert f1("38", ref, "de") > f1("The answer is 38", ref, "de") > f1("83", ref, "de") == 0.0


def test_normalisation_and_tokens():
    assert normalize("«Bonjour», dit-il !", "fr") == "bonjour dit il"
    assert tokens("東京 です", "ja") == ["東", "京", "で", "す"]
    assert tokens("Hello, world", "en") == ["hello", "world"]
    with pytest.raises(ValueError):
        f1("x", [], "en")
