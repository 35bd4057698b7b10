"""The names the params validate (defined in cft_helpers.params, so that params imports nothing
above itself) agree with the modules that implement them, and params stays free of them."""

import subprocess
import sys

from cft_helpers import params
from cft_helpers.data.lexicon import LANGUAGES
from cft_helpers.evaluation import offline_tasks, scoring
from cft_helpers.evaluation.hub_tasks import CFT_TASKS


def test_builtin_languages_are_the_lexicon_tables():
    assert sorted(params.BUILTIN_LANGUAGES) == sorted(LANGUAGES)


def test_offline_tasks_are_the_task_kinds():
    assert sorted(params.OFFLINE_TASKS) == sorted(offline_tasks.KINDS)
    assert params.PER_LANGUAGE <= set(offline_tasks.KINDS)
    assert set(params.SCORED_AS) <= set(offline_tasks.KINDS)
    # every scored kind is scored as something a cft task and a paper scorer also know
    assert set(params.SCORED_AS.values()) == set(params.CFT_TASK_KINDS) == set(params.PAPER_SCORED.values())


def test_cft_task_kinds_are_the_hub_tasks():
    assert sorted(params.CFT_TASK_KINDS) == sorted(CFT_TASKS)


def test_scorers_are_what_scoring_dispatches_on():
    assert scoring.SCORERS == params.SCORERS and scoring.DEFAULT_SCORER in params.SCORERS
    for scorer in params.SCORERS:  # each named scorer is accepted by the dispatch
        assert scoring.qa_scores("a cat", ["a cat"], "en", scorer, "mlqa")["f1"] == 1.0


def test_params_imports_no_data_or_evaluation_module():
    code = "import sys, cft_helpers.params; print(sorted(m for m in sys.modules if m.startswith('cft_helpers')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "cft_helpers.data" not in loaded and "cft_helpers.evaluation" not in loaded, loaded
