"""Held-out response loss: a quick, cheap look at what each arm learned and forgot.

Not the paper's metric (English and Multilingual Ability come from benchmarks, see the
evaluation notebook); a per-token negative log-likelihood of the reference responses of each
dataset's held-out split, computed exactly like the training loss (prompt tokens masked).
Lower is better. It moves within a few optimizer steps, so on the CPU default it shows Phase 2
pulling the model toward the multilingual data and what that costs on the English sets.

    table = heldout_loss_table(params, ["base", "p1_alpaca", "p2_alpaca"], ["alpaca", "multialpaca"])
"""

from __future__ import annotations

from typing import Sequence

from cft_helpers.data.prepare import load_prepared
from cft_helpers.data.schema import prompt_completion
from cft_helpers.jobs import TABLE_PHASES, table_models
from cft_helpers.models import load_model, load_tokenizer, resolve_model
from cft_helpers.params import Params
from cft_helpers.progress import StageProgress
from cft_helpers.files import KeyedCache


def completion_labels(tok, example: dict) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response and labels with every prompt token set to -100."""
    pc = prompt_completion(example)
    prompt = tok.apply_chat_template(pc["prompt"], add_generation_prompt=True, tokenize=True,
                                     return_dict=False)
    full = tok.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=True, return_dict=False)
    n = 0
    while n < min(len(prompt), len(full)) and prompt[n] == full[n]:
        n += 1
    return list(full), [-100] * n + list(full[n:])


def response_loss(model, tok, rows: list[dict], batch_size: int = 8, max_length: int = 1024) -> float:
    """Mean NLL per response token of ``rows`` under a loaded model (token-weighted)."""
    import torch

    pad = tok.pad_token_id
    total = count = 0.0
    encoded = [completion_labels(tok, r) for r in rows]
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            chunk = [(ids[:max_length], lab[:max_length]) for ids, lab in encoded[i:i + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk])
            lab = torch.tensor([y + [-100] * (width - len(y)) for _, y in chunk])
            att = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk])
            logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            target = lab[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                    target.reshape(-1), ignore_index=-100,
                                                    reduction="sum")
            total += float(nll)
            count += float((target != -100).sum())
    return total / count if count else float("nan")


# The arms whose rows notebook 03's table shows: what notebooks 02 and 03 train. Fixed, so that the
# table is the same whether the book ran in order or the scheduler also trained the mitigations.


def heldout_rows(params: Params) -> int:
    """How many held-out rows of each dataset are scored (the training's eval set size)."""
    return params.training.n_eval or 16


def heldout_datasets(params: Params) -> list[str]:
    """Every dataset with a held-out split that some arm trains on (what the notebooks' tables
    read, and what a ``heldout:<model>`` job scores)."""
    trained_on = {d for spec in params.arms.values() for d in spec.datasets}
    return [d for d, spec in params.datasets.items() if spec.n_heldout and d in trained_on]


def _cache_keys(params: Params, model: str, datasets: Sequence[str], n: int) -> dict[str, str]:
    """One cache key per dataset: the checkpoint's identity, the held-out data's content hash
    and the row count, so that any change of either recomputes."""
    store = params.store
    ident = resolve_model(params, model)[1]
    return {d: f"{model}|{ident}|{d}|{store.data_hash(d, 'heldout')}|{n}" for d in datasets}


def heldout_pending(params: Params, model: str,
                    datasets: Sequence[str] | None = None) -> list[str]:
    """The datasets (default: every one with a held-out split) whose loss under ``model`` is not
    cached yet: what a ``heldout:<model>`` job of the book's scheduler would compute."""
    store = params.store
    datasets = heldout_datasets(params) if datasets is None else list(datasets)
    keys = _cache_keys(params, model, datasets, heldout_rows(params))
    cached = KeyedCache(store.heldout_loss_file).lookup(keys.values())
    return [d for d in datasets if keys[d] not in cached]


def model_heldout_losses(params: Params, model: str, datasets: Sequence[str] | None = None,
                         n: int | None = None) -> dict[str, float]:
    """Held-out response loss of one model (a ``models:`` name or a finished arm) on each of
    ``datasets`` (default: every one with a held-out split); dataset -> loss.

    Cached in ``<run_dir>/heldout_loss.json`` (a ``KeyedCache``); what is missing is computed
    with one load of the checkpoint and merged into the file under a lock, so that the
    scheduler's parallel ``heldout:<model>`` jobs lose none of each other's entries."""
    store = params.store
    datasets = heldout_datasets(params) if datasets is None else list(datasets)
    n = heldout_rows(params) if n is None else n

    def compute(missing: list[str]) -> dict[str, float]:
        ckpt, _, template = resolve_model(params, model)
        tok, loaded = load_tokenizer(ckpt, chat_template=template), load_model(ckpt)
        out = {}
        with StageProgress(f"held-out loss {model}", total=len(missing), unit="dataset", enabled=False) as bar:
            for d in missing:
                out[d] = response_loss(loaded, tok, load_prepared(store, d, "heldout")[:n],
                                       max_length=params.training.max_length)
                bar.update(1)
        return out

    return KeyedCache(store.heldout_loss_file).get_many(_cache_keys(params, model, datasets, n), compute)


def heldout_loss_table(params: Params, models: Sequence[str], datasets: Sequence[str], n: int = 16,
                       progress: bool = True):
    """Held-out response loss of each model (a ``models:`` name or a finished arm) on each dataset.

    Results are cached in ``<run_dir>/heldout_loss.json`` keyed by the checkpoint's inputs and
    the data's content hash (:func:`model_heldout_losses`), so rerunning a notebook recomputes
    only what changed; each checkpoint is loaded at most once. Returns a pandas DataFrame (rows:
    models, columns: datasets)."""
    import pandas as pd

    it = models
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(models, desc="held-out loss", unit="model")
    table = {m: model_heldout_losses(params, m, datasets, n) for m in it}
    return pd.DataFrame.from_dict(table, orient="index")[list(datasets)]


def training_heldout_table(params: Params, progress: bool = True):
    """Notebook 03's table: the held-out response loss of the Phase-1, Phase-2, mixture and
    reverse-order arms trained so far, and of their start models, on every held-out dataset
    these arms train on."""
    store = params.store
    arms = store.finished_arms(params.arms_in_phase(*TABLE_PHASES))
    trained_on = {d for a in arms for d in params.arms[a].datasets}
    datasets = [d for d in heldout_datasets(params) if d in trained_on]  # in the params' order
    return heldout_loss_table(params, table_models(params, arms), datasets, n=heldout_rows(params), progress=progress)


def phase2_changes(params: Params, losses, moved=None):
    """What each Phase-2 arm in ``losses`` (a held-out table) changed: per dataset, the loss at
    its start model and after Phase 2 (``change`` > 0: worse), and, given notebook 03's
    weight-change table ``moved``, how far its weights moved (relative L2). Long format: one row
    per (arm, dataset)."""
    import pandas as pd

    rows = []
    for arm in params.arms_in_phase("phase2"):
        start = params.arms[arm].start
        if arm not in losses.index or start not in losses.index:
            continue
        for d in losses.columns:
            before, after = float(losses.loc[start, d]), float(losses.loc[arm, d])
            rows.append({"arm": arm, "label": params.arms[arm].label or arm, "dataset": d, "start": start,
                         "loss_start": before, "loss_after": after, "change": after - before,
                         **({"relative_l2": float(moved.loc[arm, "relative_l2"])} if moved is not None else {})})
    return pd.DataFrame(rows).set_index(["arm", "dataset"]) if rows else pd.DataFrame()


def phase1_heldout_change(params: Params, arms: Sequence[str],
                          progress: bool = True):
    """What each Phase-2 arm forgot of its Phase-1 data: the held-out response loss on the
    Phase-1 dataset (``Params.phase1_dataset``) at the Phase-1 model and after Phase 2
    (``change`` > 0: worse). A quick forgetting proxy, not the paper's English Ability.
    A pandas DataFrame indexed by arm; arms whose Phase-1 data is unknown are left out."""
    import pandas as pd

    rows = {}
    for arm in arms:
        start = params.arms[arm].start
        d1 = params.phase1_dataset(start) if start in params.arms else None
        if d1 is None or not params.datasets[d1].n_heldout:
            continue
        t = heldout_loss_table(params, [start, arm], [d1], n=heldout_rows(params),
                               progress=progress)
        rows[arm] = {"start": start, "dataset": d1, "loss_start": float(t.loc[start, d1]),
                     "loss_after": float(t.loc[arm, d1])}
        rows[arm]["change"] = rows[arm]["loss_after"] - rows[arm]["loss_start"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["start", "dataset", "loss_start",
                                                                 "loss_after", "change"])
