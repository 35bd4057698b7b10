"""The parameter set as a whole: its sections, and the checks that span them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from cft_helpers import mitigation as strategies
from cft_helpers.cache import Cache
from cft_helpers.runs import RunStore
from cft_helpers.params.arms import ArmQueries
from cft_helpers.params.base import BUILTIN_LANGUAGES, Strict
from cft_helpers.params.measures import (Benchmark, BuiltinParallel, Evaluation, Figures, Findings, PlanSettings,
                                         Representations)
from cft_helpers.params.sections import (Arm, BuiltinDataset, DatasetSpec, HubDataset, Mitigation, ModelSpec,
                                         Runtime, Similarity, Slurm, Training)


class Params(ArmQueries, Strict):
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
    slurm: Slurm = Field(default_factory=Slurm)
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
        folder = RunStore(self.run_path, create=False).seed_dir(seed)
        return {"seed": seed, "training.seed": self.training.seed + seed - self.seed, "run_dir": str(folder),
                "figures.dir": str(folder / "figures"), "seeds": None}

    @property
    def store(self) -> RunStore:
        """The run store of ``run_dir`` (cft_helpers.runs): every function that takes the
        parameters reads and writes the run through this, so the two never disagree."""
        return RunStore(self.run_path)

    @property
    def cache_path(self) -> Path:
        return self.path(self.cache_dir)

    @property
    def cache(self) -> Cache:
        """The cache folder, by name (cft_helpers.cache)."""
        return Cache(self.cache_path)

    @property
    def figures_path(self) -> Path:
        return self.path(self.figures.dir) if self.figures.dir else RunStore(self.run_path, create=False).figures_dir

    def resolved(self) -> dict[str, Any]:
        """The fully resolved parameter set as plain data (what the run store records)."""
        return json.loads(self.model_dump_json(by_alias=True))
