"""The vocabulary a parameter set may use, the error it raises, and the strict base of its sections.

The names are defined here, and the data and evaluation modules import them, so that the params
import nothing above themselves; tests/test_params_vocabulary.py checks that each module
implements exactly these.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# The 11 languages of MULTIALPACA (paper section 4.1) plus English.
MULTIALPACA_LANGS = ("fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi")

# The built-in generator's languages: data/lexicon.py has one table each.
BUILTIN_LANGUAGES = ("en", "fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi", "zh", "hi", "el",
                     "ro", "tr")
# The offline task kinds (evaluation/offline_tasks.py writes one lm-eval task each), those
# written once per language, and what each scored kind's answers are scored as.
OFFLINE_TASKS = ("mc", "completion", "qa_lookup", "qa_facts", "summary", "response_ll", "answer_line")
# Offline tasks scored by lm-eval's IFEval checkers, written by evaluation/ifeval_offline.py: the real
# IFEval prompts, and the IFEval slot's held-out prompts stating verifiable instructions.
CHECKER_TASKS = ("ifeval", "instructions")
PER_LANGUAGE = {"qa_lookup", "qa_facts", "summary"}
SCORED_AS = {"qa_lookup": "qa", "qa_facts": "qa", "summary": "summary"}
# The kinds of the cft hub tasks (evaluation/hub_tasks.py).
CFT_TASK_KINDS = ("qa", "summary")
# The answer scorers (evaluation/scoring.py, docs/METHODS.md, "Evaluation: English and
# Multilingual Ability").
SCORERS = ("script_aware", "paper")
DEFAULT_SCORER = "script_aware"
# The benchmarks a paper scorer exists for, and the kind of answer each scores (qa: F1 / EM,
# summary: ROUGE).
PAPER_SCORED = {"mlqa": "qa", "xquad": "qa", "xlsum": "summary"}
# The languages MLQA's official evaluation knows (it raises on any other).
MLQA_LANGS = ("en", "es", "de", "vi", "ar", "hi", "zh")
PHASES = ("phase1", "phase2", "mixture", "reverse1", "reverse2")


class ParamsError(ValueError):
    """A parameter set is invalid; the message names the key, the value and what is allowed."""


class Strict(BaseModel):
    # extra="forbid": a typo in a key is an error, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=False)
