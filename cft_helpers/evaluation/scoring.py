"""Answer scorers that work in every language of the grid (SPEC.md section 5).

- ``f1`` / ``exact_match``: SQuAD-style token overlap after normalisation (case folded,
  punctuation of every script removed, English articles dropped), as MLQA and XQuAD report.
  lm-eval's own XQuAD scorer imports a transformers module that transformers 5 removed, so
  extractive QA is scored here.
- ``rouge``: ROUGE-1/2/L F-measure through ``rouge_score`` with a tokenizer that works for any
  script. rouge_score's default tokenizer keeps only [a-z0-9] and scores Thai, Arabic and CJK
  text as 0.0 whatever the answer.

Chinese, Japanese and Thai are written without spaces between words: they are tokenized by
character; every other language by whitespace after punctuation removal.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Sequence

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
