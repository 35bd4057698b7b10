"""Tables read back from the run store (no training, no model loading).

    arm_table(params, ["p1_alpaca", "p1_instruct"])   # one row per arm: data, steps, losses, time
    loss_curves(params, ["p1_alpaca"])                # plotly figure of training loss per step
"""

from __future__ import annotations

from typing import Sequence

from cft_helpers import mitigation
from cft_helpers.checkpoints import checkpoint_numel, weight_change
from cft_helpers.data.prepare import format_example
from cft_helpers.freezing import layer_of
from cft_helpers.heldout import heldout_loss_table
from cft_helpers.models import model_checkpoint
from cft_helpers.paper_results import paper_strategy_columns
from cft_helpers.params import Params
from cft_helpers.replay import replay_count
from cft_helpers.files import read_json, read_jsonl

ARM_COLUMNS = ["label", "phase", "start", "datasets", "examples", "steps", "trained_tokens",
               "loss_first", "loss_last", "train_rows_loss_before", "train_rows_loss_after",
               "eval_loss_before", "eval_loss_after", "wall_s",
               "resumed_from"]


def arm_table(params: Params, arms: Sequence[str]):
    """Metrics of finished arms as a pandas DataFrame indexed by arm name."""
    import pandas as pd

    store = params.store
    rows = []
    for arm in arms:
        spec = params.arms[arm]
        m = store.arm_metrics(arm)
        rows.append({"arm": arm, "label": spec.label or arm, "phase": spec.phase, "start": spec.start,
                     "datasets": " + ".join(spec.datasets) or "(used as is)",
                     **{k: m.get(k) for k in ARM_COLUMNS if k not in ("label", "phase", "start", "datasets")}})
    return pd.DataFrame(rows).set_index("arm")[ARM_COLUMNS]


def training_log(params: Params, arm: str) -> list[dict]:
    store = params.store
    path = store.arm_file(arm, "train_log.jsonl")
    return read_jsonl(path) if path.exists() else []


def loss_curves(params: Params, arms: Sequence[str],
                title: str = "Training loss (response tokens)"):
    """Training loss per optimizer step for each arm (plotly figure)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for arm in arms:
        log = [e for e in training_log(params, arm) if "loss" in e]
        if log:
            fig.add_trace(go.Scatter(x=[e["step"] for e in log], y=[e["loss"] for e in log],
                                     mode="lines+markers", name=params.arms[arm].label or arm))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss (nats/token)",
                      template="plotly_white", height=380, legend_title="arm")
    return fig


def arm_plan(params: Params, arms: Sequence[str]):
    """What each arm will do before it runs: start, data, rows, hyperparameters, optimizer steps."""
    import math

    import pandas as pd

    store = params.store
    report = read_json(store.data_report)["datasets"]
    rows = []
    for arm in arms:
        spec, t = params.arms[arm], params.arm_training(arm)
        n = sum(report[d]["train"]["rows"] for d in spec.datasets)
        n += replay_count(n, mitigation.replay_fraction(spec.strategy))  # replay rows on top of the Phase-2 rows
        steps = t.max_steps or math.ceil(math.ceil(n / t.micro_batch_size)
                                         / (t.global_batch_size // t.micro_batch_size) * t.epochs)
        rows.append({"arm": arm, "label": spec.label or arm, "start": spec.start,
                     "datasets": " + ".join(spec.datasets) or "(used as is)", "strategy": spec.strategy,
                     "rows": n,
                     "epochs": t.epochs, "global batch": t.global_batch_size, "lr": t.learning_rate,
                     "scheduler": f"{t.scheduler}, warmup {t.warmup_steps}",
                     "optimizer steps": steps if spec.datasets else 0})
    return pd.DataFrame(rows).set_index("arm")


def weight_change_table(params: Params, arms: Sequence[str]):
    """How far each trained arm's final weights moved from its start (streamed, tensor by tensor)."""
    import pandas as pd

    store = params.store
    rows = []
    for arm in arms:
        spec = params.arms[arm]
        if not spec.datasets:
            continue
        start = (store.arm_checkpoint(spec.start) if spec.start in params.arms
                 else model_checkpoint(params, spec.start))
        rows.append({"arm": arm, "label": spec.label or arm, "from": spec.start,
                     **weight_change(start, store.arm_checkpoint(arm))})
    return pd.DataFrame(rows).set_index("arm")


def compute_table(params: Params, arms: Sequence[str]):
    """Compute accounting per arm (paper D.5): trainable parameters, rows and tokens trained,
    replay generation time, training wall time, and each relative to vanilla Phase 2 (the
    vanilla arm among ``arms``; NaN when there is none)."""
    import pandas as pd

    store = params.store
    rows = []
    for arm in arms:
        m = dict(store.arm_metrics(arm))
        if m.get("total_params") is None and mitigation.is_baseline(params.arms[arm].strategy):
            # arms trained before parameter counts were recorded: every stored value trains
            m["total_params"] = m["trainable_params"] = checkpoint_numel(store.arm_checkpoint(arm))
        replay = m.get("replay") or {}
        total = m.get("total_params") or float("nan")
        rows.append({"arm": arm, "strategy": params.arms[arm].strategy, "frozen tensors": m.get("frozen_tensors", 0),
                     **({"partly frozen tensors": m["masked_tensors"]} if m.get("masked_tensors") else {}),
                     "trainable params": m.get("trainable_params"),
                     "trainable %": 100 * m["trainable_params"] / total if m.get("trainable_params") else None,
                     "rows": m.get("examples"), "replay rows": replay.get("replay_rows", 0),
                     "trained tokens": m.get("trained_tokens"),
                     "replay generation s": replay.get("generation_s", 0.0), "training s": m.get("wall_s")})
    df = pd.DataFrame(rows).set_index("arm")
    if "partly frozen tensors" in df:  # LF_H2 at head granularity: tensors with masked rows
        df["partly frozen tensors"] = df["partly frozen tensors"].fillna(0).astype(int)
    vanilla = [a for a in arms if mitigation.is_baseline(params.arms[a].strategy)]
    if vanilla:
        ref = df.loc[vanilla[0]]
        df["tokens vs vanilla"] = df["trained tokens"] / ref["trained tokens"]
        df["time vs vanilla"] = (df["training s"] + df["replay generation s"]) / ref["training s"]
    return df


def frozen_share_table(params: Params, arms: Sequence[str]):
    """Per arm, the share of its parameters that Phase 2 left frozen, from the parameter counts
    the arm saved (metrics.json: the model's values and those with requires_grad when training
    began, after its freeze.json was applied):

    - full fine-tuning (vanilla, GR, ER): 0, every weight trains;
    - layer freezing (LF_H1, LF_H2, Spectrum): frozen values / all values of the model; for
      LF_H2 at head granularity the frozen values are the masked rows only (the training core
      saves trainable_params without them), not the whole q/k/v tensors they sit in;
    - LoRA: the share of the *base model's* weights that stay frozen, 1.0 (only the adapters
      train, merged into the base afterwards); "trainable params" is then the adapters' count.

    NaN for an arm that saved no counts (not trained yet)."""
    import pandas as pd

    store = params.store
    rows = []
    for arm in arms:
        strategy = params.arms[arm].strategy
        entry = mitigation.get(strategy)
        m = store.arm_metrics(arm)
        total, trainable = m.get("total_params"), m.get("trainable_params")
        share, of = float("nan"), "the model's weights"
        if entry.lora is not None:
            of = "the base model's weights (LoRA adapters train)"
            share = 1.0 if trainable is not None else share    # PEFT freezes every base weight
        elif entry.freeze is not None:  # LF_H1, LF_H2, Spectrum
            share = 1 - trainable / total if total and trainable is not None else share
        elif m:
            share = 0.0  # full fine-tuning (arms trained before the counts were recorded too)
        rows.append({"arm": arm, "strategy": strategy, "frozen share": share, "frozen share of": of,
                     "trainable params": trainable})
    return pd.DataFrame(rows).set_index("arm")


def mitigation_table(params: Params, arms: Sequence[str], losses, english: Sequence[str],
                     multilingual: Sequence[str]):
    """Table 5's shape from held-out losses (lower is better), before any benchmark: per arm the
    mean held-out loss on ``english`` (the Phase-1 data) and ``multilingual`` datasets, their
    change from the start model, and the paper's EA / MA / combined for the same strategy.

    ``losses``: a heldout_loss_table with the start model and every arm as rows. The paper's
    values are those of the table the arms are rows of (their mitigation arms' Arm.table: Table 5
    or D8), as printed; a misprint is named in the "paper note" column."""
    import pandas as pd

    tables = {params.arms[a].table for a in arms if params.arms[a].phase == "mitigation"}
    if len(tables) > 1:  # a vanilla Phase-2 arm has no table of its own: it takes its comparison's
        raise ValueError(f"arms {list(arms)} are rows of several mitigation tables {sorted(tables)}; "
                         "pass one table's arms (Params.strategy_arms(table=...))")
    table = tables.pop() if tables else "T5"
    rows = []
    for arm in arms:
        spec = params.arms[arm]
        en, ml = losses.loc[arm, list(english)].mean(), losses.loc[arm, list(multilingual)].mean()
        en0, ml0 = losses.loc[spec.start, list(english)].mean(), losses.loc[spec.start, list(multilingual)].mean()
        row = {"arm": arm, "strategy": spec.strategy, "English loss": en, "English change": en - en0,
               "multilingual loss": ml, "multilingual change": ml - ml0}
        columns, misprinted = paper_strategy_columns(spec.strategy, table)
        row.update(columns)
        if misprinted:
            row["paper note"] = "; ".join(paper["note"] for _, paper in misprinted)
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")


def mitigation_loss_table(params: Params, arms: Sequence[str]):
    """``mitigation_table`` on held-out losses computed here: the English side is the arms' Phase-1
    data (``Params.phase1_dataset``), or every English dataset when that is unknown (a Phase-1
    model used as is); the multilingual side is the arms' own training data."""
    held = {d for d, spec in params.datasets.items() if spec.n_heldout}
    starts = sorted({params.arms[a].start for a in arms})
    english = sorted({params.phase1_dataset(s) for s in starts if s in params.arms} & held) \
        or sorted(set(params.english_datasets()) & held)
    multilingual = sorted({d for a in arms for d in params.arms[a].datasets} & held - set(english))
    if not english or not multilingual:
        raise ValueError("held-out rows are needed on English and on Phase-2 data (datasets.*.n_heldout)")
    losses = heldout_loss_table(params, starts + list(arms), english + multilingual,
                                n=params.training.n_eval or 16)
    return mitigation_table(params, arms, losses, english, multilingual)


def freeze_table(params: Params, arms: Sequence[str]):
    """Per layer-freezing arm, the decoder layers touched and how many tensors were frozen (for
    LF_H2 at head granularity: tensors frozen in part, and the (tensor, head) slices frozen)."""
    import pandas as pd

    store = params.store
    rows = []
    for arm in arms:
        path = store.arm_file(arm, "freeze.json")
        if not path.exists():
            continue
        plan = read_json(path)
        masked = plan.get("masked", {})
        layers = sorted({layer_of(n) for n in [*plan["frozen"], *masked]} - {None})
        extra = ({"partly frozen tensors": len(masked),
                  "frozen heads": sum(len(m["heads"]) for n, m in masked.items() if n.endswith(".weight"))}
                 if masked else {})
        rows.append({"arm": arm, "strategy": plan["strategy"], "frozen tensors": plan["n_frozen"], **extra,
                     "trainable tensors": plan["n_trainable"], "layers with frozen tensors": layers,
                     "rule": {k: v for k, v in plan["details"].items() if k in ("layers", "seed", "scope",
                                                                                 "granularity", "percent",
                                                                                 "direction")}})
    return pd.DataFrame(rows).set_index("arm") if rows else pd.DataFrame()


def heldout_loss_summary(table) -> str:
    """One line per arm of an ``arm_table`` that measured its held-out loss: before -> after
    training, steps and wall time (notebook 02)."""
    return "\n".join(
        f"{row['label']}: held-out response loss {row['eval_loss_before']:.3f} -> "
        f"{row['eval_loss_after']:.3f} after {row['steps']} steps ({row['wall_s']:.0f} s)"
        for _, row in table.iterrows() if row["eval_loss_before"] is not None)


def replay_overview(params: Params, arms: Sequence[str]) -> str:
    """Per arm with a replay set (GR, ER): its size and its first row, as text (notebook 04)."""
    store = params.store
    blocks = []
    for arm in arms:
        path = store.replay_file(arm)
        if path.exists():
            replay = read_jsonl(path)
            blocks.append(f"{arm}: {len(replay)} replay rows; the first:\n{format_example(replay[0])}\n")
    return "\n".join(blocks) or f"no replay set among {list(arms)}"


def compute_tables(params: Params, by_table: dict[str, Sequence[str]]):
    """``compute_table`` per mitigation table: table -> DataFrame."""
    return {t: compute_table(params, arms) for t, arms in by_table.items()}


def mitigation_loss_tables(params: Params, by_table: dict[str, Sequence[str]]):
    """``mitigation_loss_table`` per mitigation table: table -> DataFrame."""
    return {t: mitigation_loss_table(params, arms) for t, arms in by_table.items()}


def show_tables(frames: dict, footnotes: bool = False, digits: int = 3) -> None:
    """Display each table of ``frames`` (name -> DataFrame) under "table <name>:", rounded, with
    its ``attrs["footnote"]`` when ``footnotes``."""
    from IPython.display import display

    for name, df in frames.items():
        print(f"table {name}:" + (f"\n{df.attrs.get('footnote', '')}" if footnotes else ""))
        display(df.round(digits))
