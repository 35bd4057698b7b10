"""GPU check of the Phase-2 mitigation strategies on the bf16 CUDA path.

    python -m benchmarks.gpu_mitigation_check --out mitigation_check.json

Builds a ~20M-parameter random-init Llama, trains a Phase-1 arm, then one arm per strategy
(vanilla, LF_H1, LF_H2, Spectrum, GR_5, ER_10, LoRA) from it with ``train_arm`` (the notebooks'
code path), precision "auto" (bf16 on a GPU that supports it). Per arm it prints whether bf16
was used, trainable parameters, rows (replay included), wall time and tokens/s, and checks:
frozen tensors bit-identical to the Phase-1 checkpoint and trainable ones changed (layer
freezing), generated replay rows present (GR), the merged LoRA checkpoint giving the adapter's
logits. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import freeze_report
from cft_helpers import mitigation

LANGS = ["fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi"]
STRATEGIES = {"vanilla": "phase2", "LF_H1": "mitigation", "LF_H2": "mitigation", "Spectrum": "mitigation",
              "GR_5": "mitigation", "ER_10": "mitigation", "LoRA": "mitigation"}


def params_file(root: Path, steps: int, device: str, hidden: int) -> Path:
    arms = {"p1": {"phase": "phase1", "start": "base", "datasets": ["instruct"]}}
    for s, phase in STRATEGIES.items():
        arms[s.lower()] = {"phase": phase, "start": "p1", "datasets": ["multialpaca"], "strategy": s}
    raw = {
        "name": "gpu-mitigation-check", "seed": 0, "run_dir": str(root / "run"), "cache_dir": str(root / "cache"),
        "runtime": {"device": device},
        "models": {"base": {"source": "random_init", "seed": 0, "tokenizer_vocab_size": 4096,
                            "config": {"model_type": "llama", "max_position_embeddings": 1024, "hidden_size": hidden,
                                       "intermediate_size": hidden * 11 // 4, "num_hidden_layers": 8,
                                       "num_attention_heads": 8, "num_key_value_heads": 4}}},
        "datasets": {"instruct": {"source": "builtin", "family": "reasoning", "langs": ["en"], "n": 512,
                                  "n_heldout": 32},
                     "multialpaca": {"source": "builtin", "family": "general", "langs": LANGS, "n": 640,
                                     "n_heldout": 33, "stream": 1}},
        "training": {"learning_rate": 3e-4, "epochs": 1, "max_steps": steps, "global_batch_size": 32,
                     "micro_batch_size": 32, "warmup_steps": 2, "max_length": 512, "precision": "auto",
                     "save_steps": steps, "n_eval": 32},
        "arms": arms,
        "mitigation": {"layer_freezing": {"n_layers": 3}, "replay": {"max_new_tokens": 48, "batch_size": 32},
                       "lora": {"r": 16, "alpha": 32}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default="mitigation_check.json")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    ap.add_argument("--hidden", type=int, default=512)
    ns = ap.parse_args()

    import torch

    from cft_helpers.checkpoints import read_tensor, tensor_files
    from cft_helpers.data import prepare_datasets
    from cft_helpers.models import load_model
    from cft_helpers.params import load_params
    from cft_helpers.train import train_arm

    root = Path(tempfile.mkdtemp(prefix="gpu-mit-"))
    p = load_params(params_file(root, ns.steps, ns.device, ns.hidden))
    prepare_datasets(p, progress=False)
    store = p.store
    train_arm(p, "p1", progress=False)
    start = store.arm_checkpoint("p1")
    results, ok = [], True
    for strategy in STRATEGIES:
        arm = strategy.lower()
        m = train_arm(p, arm, progress=False)
        name = torch.cuda.get_device_name() if ns.device == "cuda" else "cpu"
        r = {"strategy": strategy, "device": name, "bf16": m["bf16"],
             "trainable_params": m["trainable_params"], "total_params": m["total_params"], "rows": m["examples"],
             "steps": m["steps"], "wall_s": round(m["wall_s"], 2),
             "tokens_per_s": round(m["trained_tokens"] / m["wall_s"]),
             "eval_loss_before": round(m["eval_loss_before"], 4), "eval_loss_after": round(m["eval_loss_after"], 4)}
        checks = [m["bf16"] or ns.device == "cpu", m["eval_loss_after"] < m["eval_loss_before"]]
        if (store.arm_dir(arm) / "freeze.json").exists():
            fa, fb = tensor_files(start), tensor_files(store.arm_checkpoint(arm))
            freeze = freeze_report(store.arm_dir(arm), {n: torch.equal(read_tensor(fa[n], n), read_tensor(fb[n], n))
                                                        for n in fb})
            r.update(freeze)
            checks += [freeze["frozen_identical"], freeze["trainable_changed"]]
        if m.get("replay"):
            r["replay_rows"] = m["replay"]["replay_rows"]
            r["replay_generation_s"] = round(m["replay"]["generation_s"], 2)
            r["empty_responses"] = m["replay"]["empty_responses"]
        if mitigation.get(strategy).lora is not None:
            from peft import PeftModel

            ids = torch.randint(0, 4000, (2, 64), generator=torch.Generator().manual_seed(0))
            adapted = PeftModel.from_pretrained(load_model(start), str(store.arm_dir(arm) / "adapter")).eval()
            merged = load_model(store.arm_checkpoint(arm)).eval()
            with torch.no_grad():
                diff = (adapted(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max().item()
            r["merge_max_logit_diff"] = diff
            checks.append(diff < 1e-3)
        r["ok"] = all(checks)
        ok &= r["ok"]
        results.append(r)
        print(json.dumps(r), flush=True)
    Path(ns.out).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
