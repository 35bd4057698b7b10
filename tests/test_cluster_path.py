"""The paper's cluster path on this CPU: two processes over gloo (accelerate launch), and the
save logic that FSDP and ZeRO-3 need, tested underneath where accelerate refuses them on a CPU.

What a CPU cannot show (FSDP and DeepSpeed themselves) is listed in docs/ENGINEERING.md,
"Scaling out".
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cft_helpers.data import prepare_datasets
from cft_helpers.params import load_params
from cft_helpers.train import train_arm, train_arms
from cft_helpers.weights import final_state_dict, merge_adapter, save_gathered

from conftest import tiny_llama, write_params

# Global batch 4 = micro 2 x 2 processes; 3 steps keep the launches short.
TWO = {"training.micro_batch_size": 2, "training.max_steps": 3}
TIMEOUT_S = 20   # the process group's timeout in the launch (runtime.dist_timeout_s)
SLOW_S = 32      # rank 0's replay generation takes this much longer than the timeout allows

# Loaded by every launched process (PYTHONPATH): records what each rank writes under the run
# store (Python's audit events catch every open for writing, rename, mkdir and delete), and
# makes rank 0's replay generation slow.
SITECUSTOMIZE = textwrap.dedent('''
    import os, sys, time
    if "RANK" in os.environ and "CFT_TEST_STORE" in os.environ:
        _rank = os.environ["RANK"]
        _store = os.environ["CFT_TEST_STORE"]
        _log = open(os.path.join(os.environ["CFT_TEST_LOG"], f"writes.{_rank}.{os.getpid()}"), "a")
        _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _hook(event, args):
            paths = ()
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                mode, flags = args[1], args[2]
                if (mode and any(c in str(mode) for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE):
                    paths = (args[0],)
            elif event in ("os.rename", "os.replace"):
                paths = (args[0], args[1])
            elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.unlink"):
                paths = (args[0],)
            for p in paths:
                p = os.fsdecode(p)
                if os.path.abspath(p).startswith(_store):
                    _log.write(f"{event}\\t{os.path.abspath(p)}\\n")
                    _log.flush()

        sys.addaudithook(_hook)
        import torch.distributed as _dist
        _init = _dist.init_process_group

        def _init_logged(*a, **k):  # the timeout the process group is created with
            t = k.get("timeout")
            with open(os.path.join(os.environ["CFT_TEST_LOG"], f"group_timeout.{_rank}"), "w") as f:
                f.write(str(t.total_seconds() if t is not None else None))
            return _init(*a, **k)

        _dist.init_process_group = _init_logged

        if _rank == "0" and os.environ.get("CFT_TEST_SLOW_S"):
            import cft_helpers.generation as _g
            _orig = _g.generate_responses

            def _slow(*a, **k):
                t0 = time.time()
                time.sleep(float(os.environ["CFT_TEST_SLOW_S"]))
                out = _orig(*a, **k)
                with open(os.path.join(os.environ["CFT_TEST_LOG"], "slow_rank0"), "w") as f:
                    f.write(str(time.time() - t0))
                return out

            _g.generate_responses = _slow

        # (after the slow patch: replay binds generate_responses when it is imported)
        import hashlib, json
        import cft_helpers.replay as _replay
        _build = _replay.build_replay

        def _build_logged(*a, **k):  # what each process trains on: the same rows, in one order
            rows, summary = _build(*a, **k)
            digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
            with open(os.path.join(os.environ["CFT_TEST_LOG"], f"replay_rows.{_rank}"), "w") as f:
                f.write(digest)
            return rows, summary

        _replay.build_replay = _build_logged

        # a prompt that appears twice among the replay prompts, at a place another rank would
        # have answered it before (every world_size-th prompt per rank)
        _counterparts = _replay.english_counterparts

        def _with_a_duplicate(*a, **k):
            rows = _counterparts(*a, **k)
            return rows[:1] + [dict(rows[0], id=rows[0]["id"] + "-again")] + rows[1:]

        _replay.english_counterparts = _with_a_duplicate

        if _rank != "0":  # what cuda:<local rank> in the key did: keys that differ between ranks
            import cft_helpers.train as _train
            _keys = _train._eval_set_keys

            def _keys_of_this_rank(*a, **k):
                return {name: f"{key}|rank{_rank}" for name, key in _keys(*a, **k).items()}

            _train._eval_set_keys = _keys_of_this_rank
''')


@pytest.fixture(scope="module")
def launched(tmp_path_factory, model_cache):
    """A store with Phase 1 trained in one process, then LF_H1, GR_10 and LoRA each trained by
    a two-process launch, rank 0's generation slowed past the process group's timeout, a replay
    prompt duplicated, and the losses-before-training keys made rank-dependent on rank 1; plus
    LoRA trained again in one process (arm ``lora_1p``) to compare with."""
    tmp = tmp_path_factory.mktemp("cluster")
    hooks, log = tmp / "hooks", tmp / "log"
    hooks.mkdir()
    log.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    lora_1p = {"phase": "mitigation", "start": "p1_instruct", "datasets": ["multialpaca"], "strategy": "LoRA",
               "label": "LoRA (one process)"}
    path = write_params(tmp, model_cache)
    one = load_params(path, overrides={**TWO, "arms.lora_1p": lora_1p})
    two = load_params(path, overrides={**TWO, "arms.lora_1p": lora_1p, "runtime.processes": 2,
                                       "runtime.dist_timeout_s": TIMEOUT_S})
    prepare_datasets(one, progress=False)
    train_arms(one, ["p1_instruct", "lora_1p"], progress=False)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]))
        mp.setenv("CFT_TEST_STORE", str(Path(two.run_path).resolve()))
        mp.setenv("CFT_TEST_LOG", str(log))
        mp.setenv("CFT_TEST_SLOW_S", str(SLOW_S))
        train_arms(two, ["lf_h1", "gr_10", "lora"], progress=False)
    finally:
        mp.undo()
    return two, two.store, log


def _writes(log: Path, rank: int) -> list[tuple[str, Path]]:
    out = []
    for f in log.glob(f"writes.{rank}.*"):
        out += [(e, Path(p)) for e, p in (line.split("\t") for line in f.read_text().splitlines())]
    return out


def test_gr_generation_is_shared_and_a_slow_rank_outlives_the_timeout(launched):
    params, store, log = launched
    # rank 0 generated for longer than the timeout, while rank 1, done with its share, waited
    assert float((log / "slow_rank0").read_text()) > SLOW_S > TIMEOUT_S
    # ... and the process group was made with runtime.dist_timeout_s, in every process
    assert [float((log / f"group_timeout.{r}").read_text()) for r in (0, 1)] == [TIMEOUT_S, TIMEOUT_S]
    m = store.arm_metrics("gr_10")
    assert m["processes"] == 2 and m["steps"] == 3
    summary = json.loads(store.replay_summary("gr_10").read_text())
    # 10% of the 22 Phase-2 rows: 2 prompts (and the first again, at index 1), one distinct
    # prompt per process, each in its own cache
    assert summary["replay_rows"] == 3 and summary["generation_processes"] == 2
    caches = {p.name: p.read_text().count("\n") for p in store.replay_generation_files("gr_10")}
    assert caches == {"generations.jsonl": 1, "generations.rank1.jsonl": 1}
    replay = [json.loads(x) for x in store.replay_file("gr_10").read_text().splitlines()]
    assert len(replay) == 3 and all(r["messages"][-1]["role"] == "assistant" for r in replay)
    # the duplicated prompt was answered once (by rank 0, not again by rank 1), and both of its
    # rows carry that one answer
    assert replay[1]["id"] == replay[0]["id"] + "-again" and replay[1]["messages"] == replay[0]["messages"]
    # both processes built the same replay rows, in the same order, from the two caches
    digests = [(log / f"replay_rows.{r}").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert {p.name for p in store.replay_dir("gr_10").glob("done.rank*.json")} == {"done.rank0.json",
                                                                                   "done.rank1.json"}


def test_ranks_that_would_key_the_losses_before_training_apart_still_agree(launched):
    """LF_H1 and GR_10 start from one model on one held-out set: GR_10 reuses LF_H1's losses
    before training. Rank 1's keys differ (as ``cuda:<local rank>`` in the key made them): were
    each rank to look the cache up for itself, rank 0 would start training while rank 1
    evaluated alone, and the launch would hang until the process group's timeout. The main
    process decides for all (Processes.decide), so both arms finish."""
    params, store, log = launched
    lf, gr = store.arm_metrics("lf_h1"), store.arm_metrics("gr_10")
    assert lf["processes"] == gr["processes"] == 2 and lf["steps"] == gr["steps"] == 3
    assert gr["eval_loss_before"] == lf["eval_loss_before"] and gr["train_rows_loss_before"] == \
        lf["train_rows_loss_before"]
    cache = store.losses_before_training_file.resolve()
    written = [p for e, p in _writes(log, 0) if e in ("os.replace", "os.rename") and p == cache]
    assert len(written) == 2  # LF_H1's and LoRA's (a key of its own); none for GR_10


def test_only_the_main_process_writes_the_run_store(launched):
    """Rank 1 writes its own replay share and at most the Trainer's per-process resume state
    (checkpoints/), nothing else: no replay set, summary, model, metrics or log. (Before, every
    process wrote replay.jsonl and summary.json.)"""
    params, store, log = launched
    root = Path(params.run_path).resolve()
    main = _writes(log, 0)
    assert any(p.name == "replay.jsonl" for _, p in main) and any(p.name == "metrics.json" for _, p in main)
    other = _writes(log, 1)
    assert other, "the audit hook saw no write of rank 1 at all"
    allowed = []
    for event, p in other:
        if event == "os.mkdir":  # makedirs(exist_ok=True) of folders the main process made
            continue
        rel = p.relative_to(root).parts
        ok = (rel[:1] == ("arms",) and (
            (rel[2:3] == ("replay",) and (len(rel) == 3 or rel[3] == "generations.rank1.jsonl"
                                          or rel[3] == "done.rank1.json" or rel[3].startswith(".done.rank1.json.")))
            or rel[2:3] == ("checkpoints",)))
        assert ok, f"rank 1 wrote {p} ({event})"
        allowed.append(p)
    assert any(p.name == "generations.rank1.jsonl" for p in allowed)


def test_lora_in_two_processes_saves_the_adapter_and_merges_it(launched):
    params, store, _ = launched
    two, one = store.arm_metrics("lora"), store.arm_metrics("lora_1p")
    assert two["processes"] == 2 and two["final_dtype"] == "float32"
    adapter = load_file(str(store.arm_adapter_dir("lora") / "adapter_model.safetensors"))
    assert adapter and all(v.numel() > 0 for v in adapter.values())
    start = store.arm_checkpoint("p1_instruct")
    merged = load_file(f"{two['checkpoint']}/model.safetensors")
    rebuilt = merge_adapter(start, store.arm_adapter_dir("lora")).state_dict()
    assert all(torch.equal(merged[k], rebuilt[k]) for k in merged)
    # the same training in one process: the same weights up to float rounding
    single = load_file(f"{one['checkpoint']}/model.safetensors")
    assert max(float((merged[k] - single[k]).abs().max()) for k in merged) <= 1e-6
    base = load_file(f"{start}/model.safetensors")
    assert max(float((merged[k] - base[k]).abs().max()) for k in base) > 1e-4  # the adapter moved it


def _lora_model(start: Path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(layers=2), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data.normal_()
    return model


def test_save_gathered_writes_the_gathered_state_not_the_local_shards(tmp_path):
    """Under ZeRO-3 a process's own parameters are empty placeholders and under FSDP its shard:
    the final model and the adapter must come from the gathered state dict alone."""
    start = tmp_path / "start"
    tiny_llama(start, layers=2)
    model = _lora_model(start)
    gathered = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model.merge_and_unload().state_dict()
    model = _lora_model(start)
    for n, p in model.named_parameters():  # what one process holds under ZeRO-3
        p.data = torch.empty(0)
    save_gathered(model, gathered, tmp_path / "out", start, tmp_path / "adapter")
    adapter = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora = {k: v for k, v in gathered.items() if "lora_" in k}
    assert len(adapter) == len(lora) == 8
    for k, v in adapter.items():
        assert torch.equal(v, lora[k.replace(".weight", ".default.weight")]), k
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(out[k], expected[k]) for k in out)


def _zero3_trainer(model, masters: dict, monkeypatch):
    """A trainer as ``final_state_dict`` sees it under ZeRO-3, with a stand-in for DeepSpeed's
    ``safe_get_full_fp32_param`` that returns each trained tensor's fp32 master."""
    import types

    by_id = {id(p): masters.get(n) for n, p in model.named_parameters()}
    fake = types.ModuleType("deepspeed.utils")
    fake.safe_get_full_fp32_param = lambda p: by_id[id(p)]
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", fake)
    return types.SimpleNamespace(is_deepspeed_enabled=True, model=model,
                                 accelerator=types.SimpleNamespace(unwrap_model=lambda m: m))


def test_deepspeed_final_state_takes_fp32_masters_and_frozen_start_tensors(tmp_path, monkeypatch):
    """ZeRO-3 with bf16 holds the model's tensors in bf16: the trained ones come from the
    optimizer's fp32 masters (DeepSpeed's safe_get_full_fp32_param), the frozen ones from the
    start checkpoint, so frozen tensors stay bit-identical and nothing is saved rounded."""

    start = tmp_path / "start"
    fp32 = tiny_llama(start, layers=2)
    masters = {}
    model = tiny_llama(layers=2)
    for n, p in model.named_parameters():
        p.requires_grad = "layers.1." in n
        if p.requires_grad:
            masters[n] = p.data.clone() + 0.125      # what training made of it, in fp32
        p.data = p.data.to(torch.bfloat16)          # the engine's copy

    trainer = _zero3_trainer(model, masters, monkeypatch)
    state = final_state_dict(trainer, start)
    start_state = dict(fp32.named_parameters())
    assert {v.dtype for v in state.values()} == {torch.float32}
    for n, v in state.items():
        if n in masters:
            assert torch.equal(v, masters[n]), n
        else:  # frozen: the start's fp32 bits, not the bf16 copy
            assert torch.equal(v, start_state[n].detach()), n
    assert any(n not in masters for n in state) and masters


def test_a_batch_the_processes_cannot_share_fails_before_any_launch(tmp_path, model_cache, monkeypatch):
    params = load_params(write_params(tmp_path, model_cache), overrides={"runtime.processes": 3})
    prepare_datasets(params, progress=False)
    called = []
    monkeypatch.setattr("cft_helpers.train.launch_arm", lambda *a, **k: called.append(a))
    monkeypatch.setattr("cft_helpers.train.model_checkpoint", lambda *a, **k: called.append(a))
    with pytest.raises(ValueError, match=r"global_batch_size \(4\) must be a multiple of micro_batch_size "
                                         r"\(4\) x processes \(3\)"):
        train_arms(params, ["p1_alpaca"], progress=False)
    assert not called


def test_a_finished_arm_leaves_nothing_behind_for_the_next(prepared):
    """Arms trained one after another in one process (a launch of several arms): the first
    arm's model is gone once train_arm returns, not kept alive by the trainer's cycles."""
    from transformers import TrainerCallback

    seen = []

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen.append(weakref.ref(model))

    train_arm(prepared, "p1_alpaca", callbacks=[Grab()], progress=False)
    assert seen and seen[0]() is None


def test_arm_all_names_every_arm_in_dependency_order(smoke_params):
    from cft_helpers.train import arms_named

    order = smoke_params.arm_order()
    assert arms_named(smoke_params, ["all"]) == order and len(order) == len(smoke_params.arms)
    assert order.index("p1_instruct") < order.index("gr_10") and order.index("rev1") < order.index("rev2")
    assert arms_named(smoke_params, ["phase2", "p2_alpaca", "p1_alpaca"]) == ["p2_alpaca", "p2_instruct", "p1_alpaca"]
    with pytest.raises(SystemExit, match="'phase9' is no arm, phase or 'all'"):
        arms_named(smoke_params, ["phase9"])


def test_an_arm_left_out_for_an_unset_dataset_says_what_to_set():
    from cft_helpers.train import arms_named

    paper = load_params("params/paper/mistral7b.yaml")
    assert "p2_openorca" in paper.disabled_arms and "p2_openorca" not in arms_named(paper, ["all"])
    with pytest.raises(SystemExit, match=r"needs dataset 'mopenorca'.*--set datasets.mopenorca.path=ORG/NAME"):
        arms_named(paper, ["p2_openorca"])


def test_the_trainer_config_exists_before_the_model_loads(prepared, monkeypatch):
    """Under a DeepSpeed launch the Trainer's config registers ZeRO-3 with transformers as it is
    built, and only a model loaded after that is partitioned as it loads (zero.Init): so every
    arm builds its config first. (GR's generation model loads before it, on purpose: each
    process needs it whole.)"""
    import cft_helpers.train as train

    order = []
    real_config, real_load = train.sft_config, train.load_model
    monkeypatch.setattr(train, "sft_config", lambda *a, **k: order.append("config") or real_config(*a, **k))
    monkeypatch.setattr(train, "load_model", lambda *a, **k: order.append("model") or real_load(*a, **k))
    train.build_trainer(prepared, "p1_alpaca", Path(prepared.run_path) / "tmp_out",
                        progress=False)
    assert order == ["config", "model"]


def test_deepspeed_final_state_of_a_lora_model_maps_its_frozen_base_to_the_start(tmp_path, monkeypatch):
    """The same under ZeRO-3 for LoRA: the adapter's tensors from the fp32 masters, the frozen
    base weights (``base_model.model.<name>``, ``.base_layer.`` inside adapted layers) from the
    start checkpoint's ``<name>``."""

    start = tmp_path / "start"
    fp32 = dict(tiny_llama(start, layers=2).named_parameters())
    model = _lora_model(start)
    masters = {n: p.data.clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16)
    trainer = _zero3_trainer(model, masters, monkeypatch)
    state = final_state_dict(trainer, start)
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert torch.equal(state[f"{q}.base_layer.weight"], fp32["model.layers.0.self_attn.q_proj.weight"].detach())
    assert torch.equal(state[f"{q}.lora_A.default.weight"], masters[f"{q}.lora_A.default.weight"])
    assert {v.dtype for v in state.values()} == {torch.float32} and len(masters) == 8
    assert final_state_dict(trainer, start, is_main=False) == {}  # the other processes keep nothing
    # the adapter alone (no frozen base read): the same adapter and the same merged model
    adapter_only = final_state_dict(trainer, start, trained_only=True)
    assert set(adapter_only) == set(masters)
    monkeypatch.undo()  # (the stand-in DeepSpeed module would confuse accelerate while saving)
    save_gathered(model, state, tmp_path / "full", start, tmp_path / "full_adapter")
    save_gathered(model, adapter_only, tmp_path / "only", start, tmp_path / "only_adapter")
    for name in ("full_adapter/adapter_model.safetensors", "full/model.safetensors"):
        a, b = load_file(str(tmp_path / name)), load_file(str(tmp_path / name.replace("full", "only")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


FSDP_WRAP = textwrap.dedent('''
    import json, os, sys, torch, torch.nn as nn, torch.distributed as dist
    from types import SimpleNamespace
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from cft_helpers.runtime import fsdp_mixed_precision

    os.environ.update(json.loads(sys.argv[1]))
    plugin = FullyShardedDataParallelPlugin()   # as accelerate builds it in the launch
    trainer = SimpleNamespace(is_fsdp_enabled=True, args=SimpleNamespace(bf16=True),
                              accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    out = {"ours": fsdp_mixed_precision(trainer)}
    plugin.set_mixed_precision("bf16")         # what AcceleratorState does with bf16=True
    policy = plugin.mixed_precision_policy

    class Rope(nn.Module):                     # a linear layer and RoPE's fp32 inv_freq buffer
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, 4, 2).float() / 4), persistent=False)

        def forward(self, x):
            return self.lin(x) * self.inv_freq.repeat(2)

    dist.init_process_group("gloo", rank=0, world_size=1)
    model = FSDP(Rope(), mixed_precision=policy, device_id=torch.device("cpu"))  # as prepare_model does
    model(torch.randn(2, 4)).sum().backward()
    out["kept"] = [str(policy.param_dtype), str(policy.reduce_dtype), str(policy.buffer_dtype)]
    out["inv_freq"] = str(model.module.inv_freq.dtype)
    out["grad"] = str(next(model.parameters()).grad.dtype)
    dist.destroy_process_group()
    print(json.dumps(out))
''')


def test_fsdp_gathers_bf16_parameters_reduces_in_fp32_and_keeps_buffers_fp32(tmp_path):
    """The plugin accelerate builds from params/accelerate/fsdp.yaml, given our policy before the
    Trainer wraps the model: accelerate's own bf16 setting leaves it alone, and FSDP then keeps
    RoPE's inv_freq in fp32 (accelerate's default policy casts it to bf16, and reduces in bf16)."""
    import subprocess

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    root = Path(__file__).resolve().parents[1]
    args = launch_command_parser().parse_args(["--config_file", str(root / "params/accelerate/fsdp.yaml"),
                                               "-m", "cft_helpers.train"])
    env = {k: v for k, v in prepare_multi_gpu_env(_validate_launch_command(args)[0]).items()
           if k.startswith(("FSDP_", "ACCELERATE_"))}
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    # (accelerate refuses these two without a GPU; they do not touch the precision policy)
    env.update(FSDP_SYNC_MODULE_STATES="false", FSDP_CPU_RAM_EFFICIENT_LOADING="false",
               MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")
    script = tmp_path / "wrap.py"
    script.write_text(FSDP_WRAP)
    proc = subprocess.run([sys.executable, str(script), json.dumps(env)], capture_output=True, text=True,
                          timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ours"] == {"param": "bfloat16", "reduce": "float32", "buffer": "float32"}
    assert out["kept"] == ["torch.bfloat16", "torch.float32", "torch.float32"]
    assert out["inv_freq"] == "torch.float32"
    assert out["grad"] == "torch.float32"   # the sharded fp32 parameter's gradient, reduced in fp32


def test_fsdp_policy_is_left_alone_outside_fsdp_or_bf16():
    from types import SimpleNamespace

    from cft_helpers.runtime import fsdp_mixed_precision

    assert fsdp_mixed_precision(SimpleNamespace(is_fsdp_enabled=False, args=SimpleNamespace(bf16=True))) is None
    assert fsdp_mixed_precision(SimpleNamespace(is_fsdp_enabled=True, args=SimpleNamespace(bf16=False))) is None


def test_zero3_partitioned_parameters_are_counted_whole(tmp_path):
    """Under ZeRO-3 a parameter's .data is an empty placeholder and DeepSpeed keeps its size in
    ds_numel: the counts in metrics.json, the trainable share and the free-disk check read it
    (numel() alone gives 0, a 0-byte checkpoint, and a disk check that never refuses)."""
    from cft_helpers import freezing
    from cft_helpers.train import checkpoint_bytes
    from cft_helpers.weights import parameter_counts

    model = tiny_llama(layers=2)
    whole = {n: p.numel() for n, p in model.named_parameters()}
    plan = freezing.FreezePlan("LF_H1", frozen=[n for n in whole if "layers.0." in n],
                               trainable=[n for n in whole if "layers.0." not in n])
    trainable = freezing.apply(model, plan)
    expected = parameter_counts(model)
    assert expected["trainable_params"] == trainable == sum(v for n, v in whole.items() if "layers.0." not in n)
    for n, p in model.named_parameters():  # partitioned, as zero.Init leaves every process's copy
        p.ds_numel = p.numel()
        p.data = torch.empty(0)
    assert parameter_counts(model) == expected and expected["total_params"] == sum(whole.values())
    assert freezing.apply(model, plan) == trainable
    masked = parameter_counts(model, masked_params=10)
    assert masked == {"optimizer_params": trainable, "trainable_params": trainable - 10,
                      "total_params": sum(whole.values())}
    assert checkpoint_bytes(expected["total_params"], trainable) > 4 * sum(whole.values())


def test_deepspeed_masters_start_from_the_fp32_start_not_its_bf16_copy(tmp_path, monkeypatch):
    """ZeRO-3 partitions the model in bf16 as it loads and builds its fp32 masters from that: at
    train begin every trained tensor's master is set from the fp32 start checkpoint, one tensor
    at a time, in the order every process walks (a collective); frozen tensors are not touched."""
    import types

    from cft_helpers.trainer_callbacks import Fp32StartMasters

    start = tmp_path / "start"
    fp32 = {n: p.detach().clone() for n, p in tiny_llama(start, layers=2).named_parameters()}
    model = tiny_llama(layers=2, seed=1)
    for n, p in model.named_parameters():
        p.requires_grad = "layers.0." not in n
        p.data = fp32[n].to(torch.bfloat16)          # what the engine holds: bf16(start)
    calls = []
    fake = types.ModuleType("deepspeed.utils")
    fake.safe_set_full_fp32_param = lambda p, value: calls.append((p, value))
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", fake)
    cb = Fp32StartMasters(start)
    cb.on_train_begin(None, None, None, model=model)
    by_param = {id(p): n for n, p in model.named_parameters()}
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [by_param[id(p)] for p, _ in calls] == trained and cb.restored == len(trained)
    assert all(v.dtype == torch.float32 and torch.equal(v, fp32[by_param[id(p)]]) for p, v in calls)
    assert any(not torch.equal(v, v.to(torch.bfloat16).float()) for _, v in calls)  # the rounding undone
    cb.on_train_begin(None, None, None, model=model)                             # once per training
    assert len(calls) == len(trained)
