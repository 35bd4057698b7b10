"""What the paper-path GPU checks share: their parameter set and what they read of checkpoints.

``benchmarks/gpu_paper_path.py`` (one process) and ``benchmarks/launch_path.py`` (under
``accelerate launch``) build the same parameter set (:func:`build_params`) and check the same
properties of the checkpoints they train (dtype, frozen tensors unchanged, LoRA's adapted modules).
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

LANGS = ["fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi"]


# gpu_train_check's "1b": ~1.1B parameters with a 4096-token vocabulary
GPU_MODEL = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, max_position_embeddings=2048)


ARMS = {"gr_5": "GR_5", "lora": "LoRA", "spectrum": "Spectrum"}


def evaluation_suite(tiny: bool, with_dtype: bool) -> dict:
    """The default suite's offline stand-ins (params/default.yaml), a few items each; no IFEval
    checker (it needs nltk data) and no AlpacaEval (it needs a judge). ``with_dtype``: the
    params know ``evaluation.dtype`` (auto: bf16 on a CUDA GPU, fp32 on a CPU)."""
    n, gen = (4, 8) if tiny else (16, 16)
    two = {"n": 2 if tiny else 4, "max_gen_toks": gen}
    suite = {
        "batch_size": 16 if tiny else 32,
        "benchmarks": {
            "ifeval": {"source": "offline", "task": "response_ll", "metric": "byte_prob", "n": n},
            "alpacaeval": {"source": "off"},
            "mmlu": {"source": "offline", "task": "mc", "metric": "p_correct", "n": n},
            "hellaswag": {"source": "offline", "task": "completion", "metric": "p_correct", "n": n},
            "mlqa": {"source": "offline", "task": "qa_lookup", "metric": "f1", "langs": ["ar", "de"], **two},
            "xquad": {"source": "offline", "task": "qa_facts", "metric": "f1", "langs": ["th", "vi"], **two},
            "xlsum": {"source": "offline", "task": "summary", "metric": "rougeL", "langs": ["ja", "es"], **two},
        },
    }
    if with_dtype:
        suite["dtype"] = "auto"
    # (without the field, the model is evaluated in fp32 and the GPU's eval_dtype checks fail)
    return suite


def build_params(root: Path, tiny: bool, steps: int, p1_steps: int, eval_dtype: bool = True) -> Path:
    """The params file of the check: the smoke model and sizes (tiny) or the 1B one (GPU).
    Phase 1 runs ``p1_steps``: a random-init model trained only a few steps answers GR_5's
    prompts with an end-of-turn token at once (an empty response), which says nothing about
    the generation path."""
    arms = {"p1": {"phase": "phase1", "start": "base", "datasets": ["instruct"],
                   "training": {"max_steps": p1_steps, "save_steps": p1_steps}}}
    for arm, strategy in ARMS.items():
        arms[arm] = {"phase": "mitigation", "start": "p1", "datasets": ["multialpaca"], "strategy": strategy}
    if tiny:
        smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
        model = smoke["models"]["base"]
        # smoke's sets, the multilingual one 3x larger so that GR_5 replays 3 rows, not 1
        datasets = {"instruct": smoke["datasets"]["instruct"],
                    "multialpaca": {**smoke["datasets"]["multialpaca"], "n": 66}}
        training = {**smoke["training"], "max_steps": steps, "save_steps": steps, "precision": "auto"}
        runtime = {"device": "cpu", "threads": 1, "generation": "auto"}
        mitigation = {"replay": {"max_new_tokens": 12, "batch_size": 4}, "lora": {"r": 8, "alpha": 16}}
    else:
        model = {"source": "random_init", "seed": 0, "tokenizer_vocab_size": 4096,
                 "config": {"model_type": "llama", **GPU_MODEL}}
        datasets = {"instruct": {"source": "builtin", "family": "reasoning", "langs": ["en"], "n": 512,
                                 "n_heldout": 32},
                    "multialpaca": {"source": "builtin", "family": "general", "langs": LANGS, "n": 640,
                                    "n_heldout": 33, "stream": 1}}
        training = {"learning_rate": 3e-4, "epochs": 1, "max_steps": steps, "global_batch_size": 32,
                    "micro_batch_size": 32, "warmup_steps": 2, "max_length": 512, "precision": "auto",
                    "save_steps": steps, "n_eval": 32}
        runtime = {"device": "cuda", "generation": "auto"}
        mitigation = {"replay": {"max_new_tokens": 48, "batch_size": 32}, "lora": {"r": 16, "alpha": 32}}
    raw = {"name": "gpu-paper-path" + ("-tiny" if tiny else ""), "seed": 0, "run_dir": str(root / "run"),
           "cache_dir": str(root / "cache"), "runtime": runtime, "models": {"base": model},
           "datasets": datasets, "training": training, "arms": arms, "mitigation": mitigation,
           "evaluation": evaluation_suite(tiny, eval_dtype)}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def saved_dtype(checkpoint: Path) -> str:
    """The dtype(s) of a checkpoint's saved tensors, from the safetensors headers: 'float32'
    (several joined by '+', e.g. a checkpoint saved half in bf16)."""
    from safetensors import safe_open

    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    found = set()
    for f in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            found |= {names.get(st.get_slice(k).get_dtype(), st.get_slice(k).get_dtype()) for k in st.keys()}
    if not found:
        raise RuntimeError(f"{checkpoint} holds no safetensors weights")
    return "+".join(sorted(found))


def unchanged(start: Path, end: Path) -> dict[str, bool]:
    """Tensor name -> bit-identical in both checkpoints (read one tensor at a time)."""
    import torch

    from cft_helpers.checkpoints import read_tensor, tensor_files

    a, b = tensor_files(start), tensor_files(end)
    if sorted(a) != sorted(b):
        raise RuntimeError(f"{end} and {start} hold different tensors: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for n in b:
        x, y = read_tensor(a[n], n), read_tensor(b[n], n)
        out[n] = x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    return out


def adapted_weights(adapter_dir: Path) -> set[str]:
    """Checkpoint names of the weights LoRA adapted, from the adapter's own tensor names
    (``base_model.model.<module>.lora_A.weight`` -> ``<module>.weight``)."""
    from safetensors import safe_open

    names = set()
    for f in Path(adapter_dir).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                if ".lora_A." in k:
                    names.add(k.removeprefix("base_model.model.").split(".lora_A.")[0] + ".weight")
    if not names:
        raise RuntimeError(f"{adapter_dir} holds no lora_A tensors")
    return names


def tensor_shapes(checkpoint: Path) -> dict[str, list[int]]:
    """Name -> shape of every tensor of a checkpoint, from the safetensors headers."""
    from safetensors import safe_open

    shapes = {}
    for f in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                shapes[k] = st.get_slice(k).get_shape()
    return shapes
