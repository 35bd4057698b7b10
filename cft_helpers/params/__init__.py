"""Parameter sets: the one place a run of the book is described.

A parameter set is a YAML file under ``params/`` (``default.yaml`` for the offline CPU run,
``smoke.yaml`` for the tests, ``paper/*.yaml`` for the paper's GPU runs). It names the models,
the datasets, the Table A1 training hyperparameters and the *arms* of the experiment grid
(docs/METHODS.md, "The two phases and the arms"): Phase 1, Phase 2, mixture and reverse order, each an arm that starts from a
model or from another arm and trains on a list of datasets.

    from cft_helpers.params import load_params
    p = load_params("params/default.yaml", overrides="training.learning_rate=3e-4")

Everything is validated when loaded, before any model or dataset is touched: unknown keys, wrong
types, missing files and unknown names raise :class:`ParamsError`, whose message names the key,
the value and what is allowed.

The package's modules, from the ground up: ``base`` (the vocabulary, ParamsError), ``sections``
(models, datasets, training, arms, runtime, similarity), ``measures`` (evaluation,
representations, figures, findings, planner), ``arms`` (queries over the arms), ``schema`` (the
whole set and its cross-section checks), ``loading`` (files, presets, overrides). Everything
public is importable from here.
"""

from __future__ import annotations

from cft_helpers.params.base import (MULTIALPACA_LANGS, BUILTIN_LANGUAGES, OFFLINE_TASKS, CHECKER_TASKS,
                                     PER_LANGUAGE, SCORED_AS, CFT_TASK_KINDS, SCORERS, DEFAULT_SCORER,
                                     PAPER_SCORED, MLQA_LANGS, PHASES, ParamsError, Strict)  # noqa: F401
from cft_helpers.params.sections import (HubModel, LocalModel, GgufPackageModel, RandomInitModel, ModelSpec,
                                         Schema, BuiltinDataset, HubDataset, LocalDataset, DatasetSpec,
                                         Tracker, TRACKERS, RUN_NAME_FIELDS, Training, TrainingOverrides,
                                         TABLES, LayerFreezing, SpectrumSettings, ReplaySettings,
                                         LoraSettings, Mitigation, Arm, cpu_cores, Runtime, Slurm, Similarity)  # noqa: F401
from cft_helpers.params.measures import (BENCHMARKS, ENGLISH_BENCHMARKS, MULTILINGUAL_BENCHMARKS, TaskData,
                                         AlpacaEvalData, Judge, ALPACA_EVAL_METRICS, Benchmark, Evaluation,
                                         MtBenchPrompts, FilePrompts, HubPrompts, PromptSet, BuiltinParallel,
                                         HubParallel, ParallelSet, Representations, Figures, Findings,
                                         PlanSettings)  # noqa: F401
from cft_helpers.params.arms import ArmQueries  # noqa: F401
from cft_helpers.params.schema import Params  # noqa: F401
from cft_helpers.params.loading import (find_project_root, resolve_params_path, parse_overrides, load_params,
                                        for_seed)  # noqa: F401
