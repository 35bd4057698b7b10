"""Queries over a parameter set's arms: their order, phases, tables, upstream and root models.

:class:`ArmQueries` is a base of :class:`~cft_helpers.params.schema.Params`: every method reads
only the validated fields (``arms``, ``models``, ``datasets``, ``training``, ``evaluation``,
``similarity``)."""

from __future__ import annotations

from typing import Sequence

from cft_helpers import mitigation as strategies
from cft_helpers.params.base import ParamsError
from cft_helpers.params.sections import TABLES, Training


class ArmQueries:
    """The arm queries of :class:`~cft_helpers.params.schema.Params`."""

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
