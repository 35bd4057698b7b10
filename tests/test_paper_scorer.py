"""``scorer: paper`` for MLQA, XQuAD and XLSum: the paper's scorers on hand-worked examples (the
expected numbers written out, not the scorer checked against itself), the parameter, the suite
hash, and one offline suite scored by them end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest

from cft_helpers.evaluation.scoring import (f1, mlqa_exact_match, mlqa_f1, mlqa_tokens, qa_scores, rouge,
                                            rouge_default, squad_exact_match, squad_f1, squad_tokens,
                                            summary_scores)
from cft_helpers.params import ParamsError, load_params

from conftest import write_params

# --------------------------------------------------------------------------- MLQA


def test_mlqa_zh_mixed_segmentation_keeps_latin_words_and_numbers_whole():
    # each CJK character is a token; "2024" and "Python" (lower-cased) stay whole
    assert mlqa_tokens("我们在2024年用Python", "zh") == ["我", "们", "在", "2024", "年", "用", "python"]
    assert mlqa_tokens("在2024年使用Python。", "zh") == ["在", "2024", "年", "使", "用", "python"]  # 。 removed
    # 7 predicted, 6 gold tokens, 5 shared (在 2024 年 用 python): P 5/7, R 5/6 -> F1 = 10/13
    assert mlqa_f1("我们在2024年用Python", "在2024年使用Python。", "zh") == pytest.approx(10 / 13)
    # script_aware counts characters: 15 vs 14, 13 shared (在 2 0 2 4 年 用 p y t h o n) -> 26/29
    assert f1("我们在2024年用Python", "在2024年使用Python。", "zh") == pytest.approx(26 / 29)
    assert mlqa_exact_match("在 2024 年使用 Python", "在2024年使用Python", "zh") == 1.0  # spaces don't count


@pytest.mark.parametrize("lang, pred, gold, script_aware", [
    ("es", "el gato negro", "gato negro", 0.8),   # script_aware: {el, gato, negro} vs {gato, negro}: P 2/3, R 1
    ("es", "Los perros", "perros", 2 / 3),        # P 1/2, R 1
    ("de", "der Hund", "Hund", 2 / 3),
    ("de", "einem Haus", "Haus", 2 / 3),
    ("vi", "cái bàn", "bàn", 2 / 3),
    ("vi", "những con mèo", "con mèo", 0.8),
    ("ar", "الكتاب", "كتاب", 0.0),              # script_aware: two different words
    ("ar", "مدينة القاهرة", "مدينة قاهرة", 0.5),  # script_aware: 1 of 2 words shared
])
def test_mlqa_removes_each_languages_articles(lang, pred, gold, script_aware):
    assert mlqa_f1(pred, gold, lang) == 1.0 and mlqa_exact_match(pred, gold, lang) == 1.0
    assert f1(pred, gold, lang) == pytest.approx(script_aware)


def test_mlqa_articles_are_per_language_and_punctuation_of_every_script_goes():
    # Spanish articles are words in English: "el gato" vs "gato" in en: P 1/2, R 1 -> 2/3
    assert mlqa_f1("el gato", "gato", "en") == pytest.approx(2 / 3)
    assert mlqa_f1("the cat", "cat", "en") == 1.0
    # Hindi has no articles: "एक किताब" (a book) vs "किताब": P 1/2, R 1 -> 2/3
    assert mlqa_f1("एक किताब", "किताब", "hi") == pytest.approx(2 / 3)
    # ال only as a word's prefix: "بالكتاب" keeps it; Unicode punctuation (« » ،) removed
    assert mlqa_tokens("«بالكتاب»، الولد", "ar") == ["بالكتاب", "ولد"]
    # best of several gold answers, as the official script
    assert mlqa_f1("Berlin", ["München", "Berlin"], "de") == 1.0
    with pytest.raises(ValueError, match="no language 'th'"):
        mlqa_f1("x", "x", "th")


# --------------------------------------------------------------------------- XQuAD


def test_xquad_whitespace_rule_makes_thai_near_exact_match():
    gold = "วันจันทร์"                 # Monday: 9 characters, no spaces
    assert squad_tokens("วันจันทร์นี้") == ["วันจันทร์นี้"]  # "this Monday": one token
    assert squad_f1("วันจันทร์นี้", gold) == 0.0 and squad_exact_match("วันจันทร์นี้", gold) == 0.0
    assert squad_f1("วันจันทร์", gold) == 1.0 and squad_exact_match("วันจันทร์", gold) == 1.0
    # script_aware by character: 12 predicted, 9 gold, all 9 shared: P 3/4, R 1 -> 6/7
    assert f1("วันจันทร์นี้", gold, "th") == pytest.approx(6 / 7)
    # through the dispatcher, as the task hooks call it
    assert qa_scores("วันจันทร์นี้", [gold], "th", "paper", "xquad") == {"f1": 0.0, "exact_match": 0.0}
    assert qa_scores("วันจันทร์นี้", [gold], "th")["f1"] == pytest.approx(6 / 7)


def test_xquad_removes_ascii_punctuation_and_english_articles_in_every_language():
    assert squad_tokens("The «Bonjour»!") == ["«bonjour»"]       # « » are not ASCII: they stay
    assert squad_f1("北京。", "北京") == 0.0                        # 。 is not ASCII punctuation
    assert squad_f1("北京.", "北京") == 1.0
    assert squad_f1("el gato", "gato") == pytest.approx(2 / 3)     # Spanish articles are not removed
    assert squad_f1("a Haus", "Haus") == 1.0                       # an English article is, in German too
    assert squad_f1("", "") == 1.0 and squad_f1("", "x") == 0.0     # SQuAD's empty-answer rule


# --------------------------------------------------------------------------- XLSum


@pytest.mark.parametrize("lang, text", [("ar", "الجو مشمس اليوم في القاهرة"),
                                        ("hi", "आज दिल्ली में धूप खिली है")])
def test_xlsum_paper_scorer_gives_zero_on_arabic_and_hindi(lang, text):
    # rouge_score's default tokenizer keeps only [a-z0-9]: an identical summary scores 0
    assert rouge_default(text, text) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert summary_scores(text, text, lang, "paper", "xlsum")["rougeL"] == 0.0
    assert rouge(text, text, lang)["rougeL"] == 1.0 and summary_scores(text, text, lang)["rougeL"] == 1.0
    # the digits are all it sees: "35" vs "40" -> 0, "35" vs "35" -> 1 whatever the words
    assert rouge_default(f"{text} 35", f"{text} 40")["rouge1"] == 0.0
    assert rouge_default(f"{text} 35", f"عنوان 35")["rouge1"] == 1.0


def test_xlsum_both_scorers_agree_on_english_without_articles():
    pred, ref = "Prices rose 5 percent in March", "prices rose in March"
    # unigrams: 6 predicted, 4 reference, 4 shared: P 2/3, R 1 -> 0.8
    # bigrams: 5 predicted, 3 reference, 2 shared (prices rose, in march): P 2/5, R 2/3 -> 0.5
    # LCS: prices rose in march (4): same as ROUGE-1, 0.8
    expected = {"rouge1": 0.8, "rouge2": 0.5, "rougeL": 0.8}
    assert rouge_default(pred, ref) == pytest.approx(expected)
    assert rouge(pred, ref, "en") == pytest.approx(expected)
    # they part on articles: the default tokenizer keeps "the" (P 2/3, R 1 -> 0.8), script_aware drops it
    assert rouge_default("The cat sat", "cat sat")["rouge1"] == pytest.approx(0.8)
    assert rouge("The cat sat", "cat sat", "en")["rouge1"] == 1.0


def test_dispatch_refuses_a_paper_scorer_that_does_not_exist():
    with pytest.raises(ValueError, match="choices"):
        qa_scores("a", ["a"], "en", "fancy", "xquad")
    with pytest.raises(ValueError, match="not 'mmlu'"):
        qa_scores("a", ["a"], "en", "paper", "mmlu")
    with pytest.raises(ValueError, match="not 'mlqa'"):
        summary_scores("a", "a", "en", "paper", "mlqa")


# --------------------------------------------------------------------------- params and suite hash

PAPER = ("evaluation.benchmarks.mlqa.scorer=paper; evaluation.benchmarks.xquad.scorer=paper; "
         "evaluation.benchmarks.xlsum.scorer=paper")


def test_scorer_parameter(tmp_path, model_cache):
    from cft_helpers.evaluation.harness import benchmark_table, suite_hash

    path = write_params(tmp_path, model_cache)
    default = load_params(path)
    assert {b.scorer for b in default.evaluation.benchmarks.values()} == {"script_aware"}
    p = load_params(path, overrides=PAPER)
    assert [p.evaluation.benchmarks[b].scorer for b in ("mlqa", "xquad", "xlsum")] == ["paper"] * 3
    assert suite_hash(p) != suite_hash(default)
    table = benchmark_table(p)
    assert table.loc["xquad", "scorer"] == "paper" and table.loc["mmlu", "scorer"] == "lm_eval"
    assert benchmark_table(default).loc["xlsum", "scorer"] == "script_aware"
    for preset in ("params/paper/mistral7b.yaml", "params/paper/llama3_8b.yaml"):
        paper = load_params(preset)
        assert [paper.evaluation.benchmarks[b].scorer for b in ("mlqa", "xquad", "xlsum")] == ["paper"] * 3
        assert paper.evaluation.benchmarks["mmlu"].scorer == "script_aware"
        back = load_params(preset, overrides=PAPER.replace("=paper", "=script_aware"))
        assert suite_hash(back) != suite_hash(paper)
    with pytest.raises(ParamsError, match=r"mlqa\.scorer.*'fancy'|'fancy'.*script_aware.*paper") as err:
        load_params(path, overrides="evaluation.benchmarks.mlqa.scorer=fancy")
    assert "mlqa.scorer" in str(err.value) and "'script_aware'" in str(err.value) and "'paper'" in str(err.value)
    with pytest.raises(ParamsError, match=r"benchmarks\.mmlu\.scorer: 'paper' exists for \['mlqa', 'xquad', "
                                          r"'xlsum'\] only; choices: \['script_aware', 'paper'\]"):
        load_params(path, overrides="evaluation.benchmarks.mmlu.scorer=paper")
    with pytest.raises(ParamsError, match=r"mlqa\.scorer: 'paper' .*knows .* not \['fr', 'ja'\]"):
        load_params(path, overrides="evaluation.benchmarks.mlqa.scorer=paper; evaluation.benchmarks.mlqa.langs=[ar, fr, ja]")
    with pytest.raises(ParamsError, match=r"xlsum\.scorer: 'paper' scores xlsum's summary answers"):
        load_params(path, overrides="evaluation.benchmarks.xlsum={source: offline, task: qa_lookup, metric: f1, "
                                    "langs: [ar], scorer: paper}")


def test_xquad_under_the_paper_scorer_asks_in_each_language_as_lm_eval_does():
    # the paper ran lm-eval's xquad_<lang> tasks: German "Kontext: ... Frage: ... Antwort:", Thai
    # "บริบท: ... คำถาม: ... คำตอบ:", Arabic with lm-eval's cut-short "سيا:" (for "سياق:"); the
    # default scorer keeps the English prompt of the stand-ins
    from cft_helpers.evaluation.hub_tasks import CFT_TASKS_VERSION, lm_eval_xquad_prompt, task_yaml

    paper = load_params("params/paper/mistral7b.yaml")
    spec = paper.evaluation.benchmarks["xquad"]
    assert "doc_to_text: 'Kontext: {{context}}\n\n  Frage: {{question}}\n\n  Antwort:'" in task_yaml(
        "xquad", spec, "de") or "Kontext: {{context}}" in task_yaml("xquad", spec, "de")
    assert "Frage: {{question}}" in task_yaml("xquad", spec, "de")
    assert "บริบท: {{context}}" in task_yaml("xquad", spec, "th")
    assert lm_eval_xquad_prompt("ar").startswith("سيا: {{context}}")
    assert "Context: {{context}}" in task_yaml("xquad", spec.model_copy(update={"scorer": "script_aware"}), "de")
    # MLQA's lm-eval prompt is English: cft tasks of other benchmarks keep the English prompt
    assert "Context: {{context}}" in task_yaml("mlqa", spec, "de")
    assert CFT_TASKS_VERSION == 2   # the prompt changed: suites that ran the old one are redone
    with pytest.raises(ValueError, match="no XQuAD task in 'fr'.*'de'"):
        lm_eval_xquad_prompt("fr")


def test_default_suite_hashes_are_unchanged_by_the_scorer_field():
    """Results evaluated before ``scorer`` existed stay valid: the default scorer is not hashed.
    The request engine is: lm-eval's own engine keeps the hashes of before the field existed,
    the shared-prefix engine (the default) has its own (its float32 sums differ in the last bits)."""
    from cft_helpers.evaluation.harness import suite_hash

    # suite version 2 (the IFEval slot of stated instructions; was be468a75a2612f56 / 03893c3b3ddc2c98
    # / 2069615d29473c26 / c5b18696201d736d with the likelihood slots of before)
    assert suite_hash(load_params("params/default.yaml", overrides="evaluation.engine=lm_eval")) == "b0847ff0dba11f33"
    assert suite_hash(load_params("params/smoke.yaml", overrides="evaluation.engine=lm_eval")) == "be41e15f6b0da2c8"
    assert suite_hash(load_params("params/default.yaml")) == "bb42e8d7b0f5637a"
    assert suite_hash(load_params("params/smoke.yaml")) == "00c2e29e4c62ce6b"


# --------------------------------------------------------------------------- end to end


def test_offline_suite_scored_by_the_paper_scorers(tmp_path, model_cache):
    """The smoke suite with ``scorer: paper``: each task's YAML names the paper hook, every sample's
    F1 / ROUGE-L is the paper scorer's, the record and the hooks say and do so."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.evaluation.harness import evaluate_model, suite_hash
    from cft_helpers.files import read_jsonl

    p = load_params(write_params(tmp_path, model_cache), overrides=PAPER)
    prepare_datasets(p, progress=False)
    rec = evaluate_model(p, "base", progress=False)
    assert {b: rec["benchmarks"][b]["scorer"] for b in ("mmlu", "mlqa", "xquad", "xlsum")} == {
        "mmlu": "lm_eval", "mlqa": "paper", "xquad": "paper", "xlsum": "paper"}
    folder = p.run_path / "eval" / "tasks" / suite_hash(p)
    assert "process_results: !function cft_scoring.process_qa_xquad_paper" in (folder / "cft_qa_facts_th.yaml").read_text()
    assert "cft_scoring.process_qa_mlqa_paper" in (folder / "cft_qa_lookup_ar.yaml").read_text()
    assert "cft_scoring.process_summary_xlsum_paper" in (folder / "cft_summary_ja.yaml").read_text()
    checked = 0
    for s in read_jsonl(p.run_path / "eval" / "base.samples.jsonl"):
        for bench, kind in (("mlqa", "qa_lookup"), ("xquad", "qa_facts"), ("xlsum", "summary")):
            if not s["task"].startswith(f"cft_{kind}_"):
                continue
            lang = s["task"].rsplit("_", 1)[1]
            doc = json.loads((folder / f"{s['task']}.jsonl").read_text(encoding="utf-8").splitlines()[s["doc_id"]])
            if kind == "summary":
                assert s["rougeL"] == pytest.approx(rouge_default(s["response"], doc["summary"])["rougeL"])
            else:
                assert s["f1"] == pytest.approx(qa_scores(s["response"], doc["answers"]["text"], lang, "paper", bench)["f1"])
            checked += 1
    assert checked == 12  # 2 items x 2 languages x 3 benchmarks
    # the hook lm-eval called, on a hand-made Thai answer: whitespace rule, not characters
    spec = importlib.util.spec_from_file_location("cft_scoring", folder / "cft_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = {"lang": "th", "answers": {"text": ["วันจันทร์"]}}
    assert module.process_qa_xquad_paper(doc, ["วันจันทร์นี้"]) == {"f1": 0.0, "exact_match": 0.0}
    assert module.process_qa(doc, ["วันจันทร์นี้"])["f1"] == pytest.approx(6 / 7)
    assert module.process_qa_mlqa_paper({"lang": "de", "answers": {"text": ["Hund"]}}, ["der Hund"])["f1"] == 1.0


def test_hub_task_hooks_follow_the_scorer():
    """``source: cft`` tasks: the paper presets' XQuAD / XLSum YAMLs name per-benchmark paper hooks,
    and the generated module scores with them."""
    from cft_helpers.evaluation import hub_tasks

    paper = load_params("params/paper/mistral7b.yaml")
    xq = hub_tasks.task_yaml("xquad", paper.evaluation.benchmarks["xquad"], "th")
    assert "process_results: !function cft_hub_scoring.process_qa_xquad_paper_th" in xq
    source = hub_tasks.scoring_module({("qa", "th", "paper", "xquad"), ("qa", "th", "script_aware", None),
                                       ("summary", "ar", "paper", "xlsum")})
    module: dict = {}
    exec(compile(source, "cft_hub_scoring", "exec"), module)
    doc = {"answers": {"text": ["วันจันทร์"]}}
    assert module["process_qa_xquad_paper_th"](doc, ["วันจันทร์นี้"])["f1"] == 0.0
    assert module["process_qa_th"](doc, ["วันจันทร์นี้"])["f1"] == pytest.approx(6 / 7)
    summary = {"summary": "الجو مشمس اليوم"}
    assert module["process_summary_xlsum_paper_ar"](summary, ["الجو مشمس اليوم"])["rougeL"] == 0.0
