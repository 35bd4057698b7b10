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

from cft_helpers.data.prepare import dataset_hash, load_prepared
from cft_helpers.data.schema import prompt_completion
from cft_helpers.params import Params, stable_hash
from cft_helpers.runs import RunStore, atomic_write_json, read_json


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


def heldout_loss_table(params: Params, models: Sequence[str], datasets: Sequence[str], n: int = 16,
                       store: RunStore | None = None, progress: bool = True):
    """Held-out response loss of each model (a ``models:`` name or a finished arm) on each dataset.

    Results are cached in ``<run_dir>/heldout_loss.json`` keyed by the checkpoint's inputs and
    the data's content hash, so rerunning a notebook recomputes only what changed; each
    checkpoint is loaded once. Returns a pandas DataFrame (rows: models, columns: datasets).
    """
    import pandas as pd

    from cft_helpers.models import load_model, load_tokenizer, model_checkpoint

    store = store or RunStore(params.run_path)
    cache_file = store.root / "heldout_loss.json"
    cache = read_json(cache_file) if cache_file.exists() else {}
    it = models
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(models, desc="held-out loss", unit="model")
    table: dict[str, dict[str, float]] = {}
    for m in it:
        if m in params.arms:
            ckpt, ident = store.arm_checkpoint(m), store.arm_manifest(m)["input_hash"]
        else:
            ckpt, ident = model_checkpoint(params, m), stable_hash(params.models[m])
        keys = {d: f"{m}|{ident}|{d}|{dataset_hash(store, d, 'heldout')}|{n}" for d in datasets}
        missing = [d for d in datasets if keys[d] not in cache]
        if missing:
            template = getattr(params.models.get(m), "chat_template", None)
            tok, model = load_tokenizer(ckpt, chat_template=template), load_model(ckpt)
            for d in missing:
                rows = load_prepared(store, d, "heldout")[:n]
                cache[keys[d]] = response_loss(model, tok, rows, max_length=params.training.max_length)
            atomic_write_json(cache_file, cache)
        table[m] = {d: cache[keys[d]] for d in datasets}
    return pd.DataFrame.from_dict(table, orient="index")[list(datasets)]


def phase1_heldout_change(params: Params, arms: Sequence[str], store: RunStore | None = None,
                          progress: bool = True):
    """What each Phase-2 arm forgot of its Phase-1 data: the held-out response loss on the
    Phase-1 dataset (``Params.phase1_dataset``) at the Phase-1 model and after Phase 2
    (``change`` > 0: worse). A quick forgetting proxy, not the paper's English Ability.
    A pandas DataFrame indexed by arm; arms whose Phase-1 data is unknown are left out."""
    import pandas as pd

    store = store or RunStore(params.run_path)
    rows = {}
    for arm in arms:
        start = params.arms[arm].start
        d1 = params.phase1_dataset(start) if start in params.arms else None
        if d1 is None or not params.datasets[d1].n_heldout:
            continue
        t = heldout_loss_table(params, [start, arm], [d1], n=params.training.n_eval or 16, store=store,
                               progress=progress)
        rows[arm] = {"start": start, "dataset": d1, "loss_start": float(t.loc[start, d1]),
                     "loss_after": float(t.loc[arm, d1])}
        rows[arm]["change"] = rows[arm]["loss_after"] - rows[arm]["loss_start"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["start", "dataset", "loss_start",
                                                                 "loss_after", "change"])
