"""Replay data for Phase 2 (docs/METHODS.md, "Mitigation strategies"): GR_5 / GR_10 (generative) and ER_10 (English).

The English counterparts of the Phase-2 instructions are *added* to the Phase-2 data, numbering
5% or 10% of the Phase-2 training rows (rounded half up, at least one row). ER_10 keeps their
original English responses; GR_5 / GR_10 replace them with the Phase-1 model's own greedy
responses, so Phase 2 rehearses what the Phase-1 model did in English.

Counterparts come from ``mitigation.replay.english_dataset`` when set (its rows are sampled), or
else from the Phase-2 rows themselves: built-in data renders any row in English, in parallel.
Which rows is one seeded order of the candidates per seed and source, whatever the arm: GR_10
and ER_10 replay the same instructions (Table 5: ER_10 uses "the English dataset used in GR
with original responses") and GR_5's are the first half of them.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

from cft_helpers import mitigation
from cft_helpers.data.generator import FAMILY_SCHEMA, render_in_language
from cft_helpers.data.loaders import normalise_rows
from cft_helpers.data.prepare import load_prepared
from cft_helpers.distributed import Processes
from cft_helpers.generation import (end_of_turn_ids, generate_responses, model_identity, prompt_key, read_cache,
                                    vllm_python_of)
from cft_helpers.params import Params
from cft_helpers.runs import RunStore
from cft_helpers.files import atomic_write_json, write_jsonl




def replay_count(n_phase2: int, fraction: float) -> int:
    """Rows of replay for ``n_phase2`` Phase-2 rows: fraction x n, rounded half up, at least 1."""
    if fraction <= 0:
        return 0
    return max(1, math.floor(n_phase2 * fraction + 0.5))


def english_counterparts(params: Params, arm: str, count: int) -> list[dict]:
    """``count`` English rows (instruction and original response) for the arm's Phase-2 data: the
    first ``count`` of one seeded order of the candidates that depends on the seed and the source
    (English dataset, or Phase-2 datasets) only, never on the arm or its strategy; so arms of one
    source and seed that replay n rows replay the first n of the same order."""
    store = params.store
    spec = params.arms[arm]
    seed = params.arm_training(arm).seed
    source = params.mitigation.replay.english_for(spec.datasets)
    rows = (load_prepared(store, source, "train") if source is not None
            else [r for d in spec.datasets for r in load_prepared(store, d, "train")])
    key = source or "+".join(spec.datasets)
    if count > len(rows):
        raise ValueError(f"replay needs {count} rows but {key!r} has {len(rows)}")
    order = list(range(len(rows)))  # a shuffled order, not rng.sample(count): its prefixes nest
    random.Random(f"{seed}|replay|{key}").shuffle(order)
    picked = [rows[i] for i in order[:count]]
    if source is not None:
        return [{**r, "id": f"replay-{r['id']}", "source": f"replay:{source}"} for r in picked]
    out = []
    for r in picked:
        meta = r.get("meta") or {}
        if "task" not in meta or "family" not in meta:
            raise ValueError(f"row {r['id']} has no built-in task metadata, so its English counterpart "
                             "is unknown; set mitigation.replay.english_dataset to an English dataset")
        en = render_in_language(meta, "en")
        (row,) = normalise_rows([en], name=f"replay-{r['id']}", schema=FAMILY_SCHEMA[meta["family"]], lang="en",
                                source=f"replay:counterpart:{r['id']}")
        out.append({**row, "id": f"replay-{r['id']}"})
    return out


def build_replay(params: Params, arm: str, model=None, tok=None,
                 progress: bool = True, vllm_checkpoint=None, trust_remote_code: bool = False,
                 load_generator: Callable[[], Any] | None = None,
                 procs: Processes | None = None, model_id: str | None = None) -> tuple[list[dict], dict[str, Any]]:
    """The replay rows of a GR/ER arm and a summary; GR needs the Phase-1 ``model`` (or
    ``load_generator``, called only when something is left to generate) and ``tok``, or,
    generating with vLLM, ``tok`` and the Phase-1 ``vllm_checkpoint``.

    Generations are cached in ``<arm>/replay/generations.jsonl`` (a rerun after an interruption
    generates only what is missing); the replay set is written to ``<arm>/replay/replay.jsonl``.

    The cache keys name the model that answers (``model_id``: the training core passes the start
    model's identity hash; else :func:`generation.model_identity` of ``model`` or of the
    checkpoint), so a call with another model into the same arm folder generates anew.

    In a launch of several processes (``procs``) every process generates a share of the distinct
    prompts (every ``world_size``-th, into its own cache file ``generations.rank<k>.jsonl``),
    writes a done-marker, and then waits, outside any collective, until every process's marker
    is there: no process idles in a barrier that the process-group timeout would end. A prompt
    that appears twice is answered once, by one process; should two caches hold an answer to one
    key (an earlier launch of another size), every process takes the lowest rank's, so all train
    on the same rows. Only the main process writes the replay set and its summary.
    """
    store = params.store
    import time

    procs = procs or Processes()
    strategy = params.arms[arm].strategy
    replay = mitigation.get(strategy).replay
    if replay is None:
        raise ValueError(f"arm {arm!r}: strategy {strategy!r} replays nothing")
    fraction = replay.fraction
    n_phase2 = sum(len(load_prepared(store, d, "train")) for d in params.arms[arm].datasets)
    count = replay_count(n_phase2, fraction)
    rows = english_counterparts(params, arm, count)
    if procs.is_main:
        store.replay_dir(arm).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engine = None
    if replay.generated:  # GR: the Phase-1 model answers the English instructions
        if tok is None or (model is None and load_generator is None and vllm_checkpoint is None):
            raise ValueError(f"{strategy} generates with the Phase-1 model: pass model (or vllm_checkpoint) and tok")
        cfg = params.mitigation.replay
        engine = "vllm" if vllm_checkpoint is not None else "hf"
        prompts = [r["messages"][:-1] for r in rows]
        eot = end_of_turn_ids(tok)  # (renders the chat template: once, not per prompt)
        if model_id is None:
            model_id = model_identity(model) if model is not None else \
                model_identity(checkpoint=vllm_checkpoint) if vllm_checkpoint is not None else None
        if model_id is None:
            raise ValueError(f"{strategy}: pass model_id (the identity of the model load_generator loads)")
        keys = [prompt_key(p, cfg.max_new_tokens, engine, eot, model_id) for p in prompts]
        first: dict[str, int] = {}  # each distinct prompt, where it first appears
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        # dealt out in turn: a prompt that appears twice is answered once, by one process
        owner = {k: j % procs.world_size for j, k in enumerate(first)}
        done = _generated(store, arm)
        mine = [prompts[i] for k, i in first.items() if owner[k] == procs.rank and k not in done]
        if mine:
            if model is None and vllm_checkpoint is None:
                model = load_generator()
            share = f" (share {procs.rank + 1} of {procs.world_size})" if procs.world_size > 1 else ""
            generate_responses(model, tok, mine, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                               cache_file=store.replay_generations(arm, procs.rank), progress=progress,
                               desc=f"{strategy}: Phase-1 responses{share}", vllm_checkpoint=vllm_checkpoint,
                               seed=params.seed, trust_remote_code=trust_remote_code,
                               vllm_python=vllm_python_of(params), model_id=model_id)
        if procs.world_size > 1:
            digests = share_digests(owner, procs.world_size)
            atomic_write_json(_done_marker(store, arm, procs.rank), {"share": digests[procs.rank]})
            # (each check reads every marker: every 10 s, not every 2)
            procs.wait_until(lambda: _all_done(store, arm, digests),
                             f"the other processes' {strategy} replay generations", poll_s=10.0)
        done = _generated(store, arm)
        responses = [done[k] for k in keys]
        rows = [{**r, "messages": r["messages"][:-1] + [{"role": "assistant", "content": text}],
                 "meta": {**r.get("meta", {}), "original_response": r["messages"][-1]["content"]}}
                for r, text in zip(rows, responses)]
        empty = sum(not text.strip() for text in responses)
        if empty and procs.is_main:  # kept (the Phase-1 model did answer so) but never silently
            import warnings

            warnings.warn(f"{strategy} for arm {arm!r}: {empty} of {len(responses)} Phase-1 responses are "
                          "empty; they are kept and counted in replay/summary.json", stacklevel=2)
    else:
        empty = 0
    summary = {"strategy": strategy, "fraction": fraction, "phase2_rows": n_phase2, "replay_rows": len(rows),
               "rounding": "fraction x Phase-2 rows, rounded half up, at least 1",
               "generated": replay.generated, "empty_responses": empty, "engine": engine,
               "generation_s": time.perf_counter() - t0}
    if procs.world_size > 1 and replay.generated:
        summary["generation_processes"] = procs.world_size
    if procs.is_main:
        write_jsonl(store.replay_file(arm), rows)
        atomic_write_json(store.replay_summary(arm), summary)
    return rows, summary


def share_digests(owner: dict[str, int], world_size: int) -> list[str]:
    """Per process, a digest of the keys it answers (``owner``: key -> process): its done-marker
    holds it, so a marker left by a launch of other prompts (or another size) is not taken for
    this one's."""
    import hashlib

    return [hashlib.sha256("|".join(sorted(k for k, r in owner.items() if r == rank)).encode()).hexdigest()[:16]
            for rank in range(world_size)]


def _done_marker(store: RunStore, arm: str, rank: int):
    return store.replay_dir(arm) / f"done.rank{rank}.json"


def _all_done(store: RunStore, arm: str, digests: list[str]) -> bool:
    import json

    for rank, digest in enumerate(digests):
        try:
            if json.loads(_done_marker(store, arm, rank).read_text()).get("share") != digest:
                return False
        except (FileNotFoundError, json.JSONDecodeError):
            return False
    return True


def _generated(store: RunStore, arm: str) -> dict[str, str]:
    """Every replay generation cached for ``arm``, whichever process wrote it; where two caches
    answer one key, the lowest rank's answer (the same choice in every process)."""
    def rank_of(path) -> int:
        tail = path.name.removeprefix("generations").removesuffix(".jsonl")
        return int(tail.removeprefix(".rank")) if tail else 0

    out: dict[str, str] = {}
    for path in sorted(store.replay_generation_files(arm), key=rank_of, reverse=True):
        out.update(read_cache(path))  # lower ranks last: their answers win
    return out
