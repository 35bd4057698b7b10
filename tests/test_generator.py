"""The built-in dataset generator: deterministic, 12 languages, the paper's similar/dissimilar
structure, and held-out rows that never overlap training rows."""

from __future__ import annotations

import string
from collections import Counter

import pytest

from cft_helpers.data.generator import (
    FAMILY_SCHEMA,
    TASKS,
    generate,
    render_in_language,
    split_of,
    tasks_of,
)
from cft_helpers.data.lexicon import EN, LANGUAGES
from cft_helpers.params import MULTIALPACA_LANGS

MULTI = list(MULTIALPACA_LANGS)


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def test_every_language_has_every_template_with_the_same_placeholders():
    assert set(LANGUAGES) == {"en", *MULTIALPACA_LANGS, "zh", "hi", "el", "ro", "tr"}
    for lang, lex in LANGUAGES.items():
        assert set(lex) == set(EN), lang
        for key, value in EN.items():
            if isinstance(value, str):
                assert _fields(lex[key]) == _fields(value), (lang, key)
            else:
                assert len(lex[key]) == len(value), (lang, key)
        assert len(set(lex["days"])) == 7 and len({w for pair in lex["opposites"] for w in pair}) == 16, lang


def test_same_arguments_give_identical_rows_and_another_seed_differs():
    a = generate("general", MULTI, n=50, seed=3, stream=1)
    b = generate("general", MULTI, n=50, seed=3, stream=1)
    c = generate("general", MULTI, n=50, seed=4, stream=1)
    assert a == b
    assert a != c


def test_languages_come_in_equal_proportions_and_tasks_are_balanced():
    rows = generate("general", MULTI, n=66, seed=0)
    assert Counter(r["lang"] for r in rows) == {lang: 6 for lang in MULTI}
    tasks = Counter(r["meta"]["task"] for r in rows)
    assert set(tasks) == {t.name for t in tasks_of("general")}
    assert max(tasks.values()) - min(tasks.values()) <= 1


def test_rows_are_in_the_source_schema_of_their_family():
    general = generate("general", ["en"], n=5)
    reasoning = generate("reasoning", ["en"], n=5)
    assert FAMILY_SCHEMA == {"general": "alpaca", "reasoning": "orca"}
    assert all({"instruction", "input", "output"} <= set(r) for r in general)
    assert all({"system_prompt", "question", "response"} <= set(r) for r in reasoning)


def test_similar_pair_shares_tasks_and_dissimilar_pair_shares_none():
    alpaca = {r["meta"]["task"] for r in generate("general", ["en"], n=60)}
    multialpaca = {r["meta"]["task"] for r in generate("general", MULTI, n=66, stream=1)}
    instruct = {r["meta"]["task"] for r in generate("reasoning", ["en"], n=60)}
    assert alpaca == multialpaca
    assert not alpaca & instruct


def test_answers_are_verifiable_from_the_instance():
    """A worked example per task: the answer follows from the arguments and is in the response."""
    for row in generate("general", ["en", "fr", "th"], n=60) + generate("reasoning", ["en", "ja"], n=60):
        task, args, answer = row["meta"]["task"], row["meta"]["args"], row["meta"]["answer"]
        response = row.get("output") or row.get("response")
        # (a stated instruction may have put the response in capital or lower case letters)
        assert answer.lower() in response.lower(), row
        if task == "sum":
            assert answer == str(args[0] + args[1])
        elif task == "product":
            assert answer == str(args[0] * args[1])
        elif task == "largest":
            assert answer == str(max(args))
        elif task == "box_total":
            assert answer == str(args[0] + args[1])  # box C is a distractor
        elif task == "box_diff":
            assert answer == str(abs(args[0] - args[1]))
        elif task == "box_lookup":
            assert answer == str(args[args[-1]])


def test_worked_example_english_sum():
    row = render_in_language({"task": "sum", "args": [17, 25], "variant": 0, "family": "general"}, "en")
    assert row["instruction"] == "Calculate the sum of the two numbers."
    assert row["input"] == "17 and 25"
    assert row["output"] == "The sum of 17 and 25 is 42."
    assert row["meta"]["answer"] == "42"


def test_multilingual_rows_render_to_their_english_counterpart():
    for row in generate("general", MULTI, n=22, stream=1):
        en = render_in_language(row["meta"], "en")
        assert en["meta"]["key"] == row["meta"]["key"]
        if row["meta"]["task"] in ("sum", "product", "largest", "sort"):
            assert en["meta"]["answer"].replace(", ", "") == row["meta"]["answer"].replace("、", "").replace("، ", "").replace(", ", "")


@pytest.mark.parametrize("family", ["general", "reasoning"])
def test_heldout_instances_never_appear_in_training_in_any_language(family):
    langs = sorted(LANGUAGES)
    train = {r["meta"]["key"] for seed in range(3) for stream in range(2)
             for r in generate(family, langs, n=240, split="train", seed=seed, stream=stream)}
    held = {r["meta"]["key"] for seed in range(3)
            for r in generate(family, langs, n=120, split="heldout", seed=seed)}
    assert held and train
    assert not train & held
    assert all(split_of(k) == "heldout" for k in held)


def test_bad_arguments_are_rejected_with_valid_values():
    with pytest.raises(ValueError, match="'th'"):
        generate("general", ["xx"], n=1)
    with pytest.raises(ValueError, match="general"):
        generate("poetry", ["en"], n=1)
    with pytest.raises(ValueError, match="heldout"):
        generate("general", ["en"], n=1, split="test")
    assert set(TASKS) >= {"sum", "box_total"}


def test_every_language_template_is_identified_as_that_language():
    """A template pasted into the wrong language entry would slip past the key checks."""
    from cft_helpers.evaluation.fidelity import detect_language

    for lang, lex in LANGUAGES.items():
        text = " ".join(lex["reviews_positive"] + lex["reviews_negative"] + [lex["read"], lex["system"][0]])
        assert detect_language(text)[0] == lang, lang


def test_benchmark_stand_ins_work_in_the_papers_other_languages():
    from cft_helpers.evaluation.offline_tasks import qa_facts_rows, qa_lookup_rows, summary_rows

    for lang in ("zh", "hi", "el", "ro", "tr"):
        for row in qa_lookup_rows(lang, 4, 0) + qa_facts_rows(lang, 4, 0):
            text, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
            assert row["context"][start:start + len(text)] == text, (lang, row["id"])
        assert all(r["summary"] and r["summary"] in r["text"] for r in summary_rows(lang, 4, 0))
