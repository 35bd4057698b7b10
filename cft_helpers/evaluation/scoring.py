"""Answer scorers that work in every language of the grid (docs/METHODS.md, "Evaluation: English and Multilingual Ability"), and the paper's.

Two scorers, chosen per benchmark by ``scorer:`` in the params (``evaluation.benchmarks.<b>``):

``script_aware`` (the default, every benchmark that we score):

- ``f1`` / ``exact_match``: SQuAD-style token overlap after normalisation (case folded,
  punctuation of every script removed, English articles dropped), as MLQA and XQuAD report.
  lm-eval's own XQuAD scorer imports a transformers module that transformers 5 removed, so
  extractive QA is scored here.
- ``rouge``: ROUGE-1/2/L F-measure through ``rouge_score`` with a tokenizer that works for any
  script. rouge_score's default tokenizer keeps only [a-z0-9] and scores Thai, Arabic and CJK
  text as 0.0 whatever the answer.

Chinese, Japanese and Thai are written without spaces between words: they are tokenized by
character; every other language by whitespace after punctuation removal.

``paper`` (MLQA, XQuAD and XLSum only): what the paper's numbers were computed with, scripts or
not, to compare with its tables:

- MLQA: MLQA's official evaluation as lm-eval 0.4.13 ships it (``lm_eval/tasks/mlqa/utils.py``,
  called, not copied): lower case, Unicode and ASCII punctuation removed, articles removed per
  language (en, es, de, vi words; the Arabic prefix ال; none in hi, zh), whitespace tokens except
  zh's "mixed segmentation" (each CJK character its own token, Latin words and numbers whole).
  It knows en, es, de, vi, ar, hi and zh only (``MLQA_LANGS``).
- XQuAD: lm-eval's SQuAD metric (``squad_metrics.compute_f1`` / ``compute_exact``): lower case,
  ASCII punctuation and English articles removed, whitespace tokens in *every* language, so a
  Thai or Chinese answer written without spaces is one token (near exact match).
- XLSum: ``rouge_score.RougeScorer`` with its default tokenizer (ASCII letters and digits only):
  Arabic, Hindi, Chinese or Japanese summaries score about 0, as the paper's ~0.001 show.

``qa_scores`` and ``summary_scores`` dispatch on (scorer, benchmark); the lm-eval tasks'
``process_results`` hooks (``offline_tasks``, ``hub_tasks``) call them per item.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections import Counter
from typing import Sequence

# The scorers' names, the benchmarks a paper scorer exists for (with the kind of answer each
# scores) and MLQA's languages: the params validate them, so they are defined there.
from cft_helpers.params import DEFAULT_SCORER, MLQA_LANGS, PAPER_SCORED, SCORERS

# Languages written without spaces between words: tokens are characters.
CHARACTER_LANGS = {"zh", "zh-simplified", "zh-traditional", "ja", "th", "lo", "km", "my"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _base(lang: str | None) -> str:
    return (lang or "").lower().split("_")[0]


def normalize(text: str, lang: str | None = None) -> str:
    """Case-folded, NFKC, punctuation and symbols removed, English articles dropped, spaces
    collapsed."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    if _base(lang) in ("en", ""):
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str, lang: str | None = None) -> list[str]:
    norm = normalize(text, lang)
    lang = (lang or "").lower()
    if lang in CHARACTER_LANGS or _base(lang) in CHARACTER_LANGS:
        return [c for c in norm if not c.isspace()]
    return norm.split()


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, references: str | Sequence[str], lang: str | None = None) -> float:
    """Token F1 against the best-matching reference."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("f1 needs at least one reference answer")
    pred = tokens(prediction, lang)
    return max(_f1(pred, tokens(r, lang)) for r in refs)


def exact_match(prediction: str, references: str | Sequence[str], lang: str | None = None) -> float:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("exact_match needs at least one reference answer")
    pred = tokens(prediction, lang)
    return float(any(pred == tokens(r, lang) for r in refs))


class _Tokenizer:
    """rouge_score's tokenizer interface (an object with ``tokenize``), for one language."""

    def __init__(self, lang: str | None):
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return tokens(text, self.lang)


def rouge(prediction: str, reference: str, lang: str | None = None) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures with a script-aware tokenizer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer(lang))
    scores = scorer.score(reference, prediction)
    return {k: float(v.fmeasure) for k, v in scores.items()}


# --------------------------------------------------------------------------- the paper's scorers


@functools.lru_cache(maxsize=1)
def _mlqa_utils():
    """lm-eval's copy of MLQA's official evaluation (imports ``datasets``; no transformers)."""
    from lm_eval.tasks.mlqa import utils

    return utils


def _mlqa_lang(lang: str | None) -> str:
    base = _base(lang)
    if base not in MLQA_LANGS:
        raise ValueError(f"the MLQA evaluation has no language {lang!r}; it knows {list(MLQA_LANGS)}")
    return base


def _refs(references: str | Sequence[str], what: str) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError(f"{what} needs at least one reference answer")
    return refs


def mlqa_tokens(text: str, lang: str) -> list[str]:
    """MLQA's tokens of an answer (after its normalisation)."""
    return _mlqa_utils().normalize_answer(text, _mlqa_lang(lang)).split()


def mlqa_f1(prediction: str, references: str | Sequence[str], lang: str) -> float:
    """MLQA's official F1, the max over the reference answers (lm-eval's ``f1_score``)."""
    u, lang = _mlqa_utils(), _mlqa_lang(lang)
    return float(u.metric_max_over_ground_truths(u.f1_score, prediction.strip(), _refs(references, "mlqa_f1"), lang))


def mlqa_exact_match(prediction: str, references: str | Sequence[str], lang: str) -> float:
    u, lang = _mlqa_utils(), _mlqa_lang(lang)
    return float(u.metric_max_over_ground_truths(u.exact_match_score, prediction.strip(),
                                                  _refs(references, "mlqa_exact_match"), lang))


# lm-eval's XQuAD task scores with transformers' ``squad_metrics`` (compute_f1 / compute_exact),
# a module transformers 5 removed, and lm-eval has no importable copy of it (other tasks' helpers
# differ in details): these few lines are that normalisation, unchanged.
_SQUAD_PUNCT = set(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def squad_normalize(text: str) -> str:
    """SQuAD's normalisation: lower case, ASCII punctuation and English articles removed, spaces
    collapsed, whatever the language."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def squad_tokens(text: str) -> list[str]:
    return squad_normalize(text).split() if text else []


def squad_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD F1 (``compute_f1``), the max over the reference answers (XQuAD has one per question,
    the one lm-eval scores against)."""
    pred = squad_tokens(prediction)
    return max(_f1(pred, squad_tokens(r)) for r in _refs(references, "squad_f1"))


def squad_exact_match(prediction: str, references: str | Sequence[str]) -> float:
    norm = squad_normalize(prediction)
    return float(any(norm == squad_normalize(r) for r in _refs(references, "squad_exact_match")))


def rouge_default(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures with rouge_score's default tokenizer (ASCII letters and digits)."""
    from rouge_score import rouge_scorer

    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(reference, prediction)
    return {k: float(v.fmeasure) for k, v in scores.items()}


def check_scorer(scorer: str, benchmark: str | None, kind: str) -> None:
    """Refuse a scorer that does not exist, or a paper scorer for a benchmark that has none for
    this ``kind`` of answer ("qa", "summary")."""
    if scorer not in SCORERS:
        raise ValueError(f"scorer {scorer!r} unknown; choices: {list(SCORERS)}")
    if scorer == "paper" and PAPER_SCORED.get(benchmark) != kind:
        valid = [b for b, k in PAPER_SCORED.items() if k == kind]
        raise ValueError(f"scorer 'paper' for {kind} answers exists for {valid}, not {benchmark!r}")


def qa_scores(prediction: str, references: str | Sequence[str], lang: str | None,
              scorer: str = DEFAULT_SCORER, benchmark: str | None = None) -> dict[str, float]:
    """F1 and exact match of one extractive-QA answer by the chosen scorer (``paper``: MLQA's
    official evaluation for mlqa, SQuAD's for xquad)."""
    check_scorer(scorer, benchmark, "qa")
    if scorer == "script_aware":
        return {"f1": f1(prediction, references, lang), "exact_match": exact_match(prediction, references, lang)}
    if benchmark == "mlqa":
        return {"f1": mlqa_f1(prediction, references, lang),
                "exact_match": mlqa_exact_match(prediction, references, lang)}
    return {"f1": squad_f1(prediction, references), "exact_match": squad_exact_match(prediction, references)}


def summary_scores(prediction: str, reference: str, lang: str | None, scorer: str = DEFAULT_SCORER,
                   benchmark: str | None = None) -> dict[str, float]:
    """ROUGE-1/2/L of one summary by the chosen scorer (``paper``: rouge_score's default tokenizer)."""
    check_scorer(scorer, benchmark, "summary")
    return rouge(prediction, reference, lang) if scorer == "script_aware" else rouge_default(prediction, reference)
