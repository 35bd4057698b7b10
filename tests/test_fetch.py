"""The download step (python -m cft_helpers.fetch) and hub revisions, against a fake hub.

No machine here reaches the hub, so ``huggingface_hub.snapshot_download`` (the one function every
hub model and dataset goes through: cft_helpers.hub) is replaced by a copy from local folders laid
out like the repositories into a cache laid out like the HF cache, a folder per commit. Each test
checks what was asked for (repository, revision, files) and that what the code records is the
commit the fake resolved to. Also: gated repositories fail naming the repository and the token,
and the Slurm example is valid bash calling commands that exist.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cft_helpers import hub
from cft_helpers.data.loaders import load_splits
from cft_helpers.data.schema import DataError
from cft_helpers.models import ModelError, model_checkpoint, model_revision
from cft_helpers.params import load_params

ROOT = Path(__file__).resolve().parents[1]
ALPACA = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(12)]


def commit_of(repo_id: str, revision: str | None) -> str:
    """The fake hub's commit for a revision: a sha as is, a branch name hashed to 40 hex digits."""
    rev = revision or "main"
    return rev if re.fullmatch(r"[0-9a-f]{40}", rev) else hashlib.sha1(f"{repo_id}@{rev}".encode()).hexdigest()


class FakeHub:
    """snapshot_download over local folders: repo id -> folder; ``offline`` serves the cache only."""

    def __init__(self, cache: Path, repos: dict[str, Path]):
        self.cache, self.repos, self.calls, self.offline = cache, repos, [], False

    def __call__(self, repo_id, *, repo_type=None, revision=None, allow_patterns=None, **kwargs):
        repo_type = repo_type or "model"
        self.calls.append((repo_type, repo_id, revision, tuple(allow_patterns) if allow_patterns else None))
        sha = commit_of(repo_id, revision)
        snap = self.cache / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots" / sha
        if self.offline:  # HF_HUB_OFFLINE=1: what an earlier download left, or the hub's error
            if not snap.is_dir():
                raise hub.LocalEntryNotFoundError(f"{repo_id} is not cached")
            return str(snap)
        if repo_id not in self.repos:
            raise hub.LocalEntryNotFoundError(f"cannot reach the hub for {repo_id}")
        src = self.repos[repo_id]
        for f in src.rglob("*"):
            rel = f.relative_to(src).as_posix()
            if f.is_file() and (not allow_patterns or any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                (snap / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, snap / rel)
        snap.mkdir(parents=True, exist_ok=True)
        return str(snap)

    def fetch_calls(self) -> list[tuple[str, str | None]]:
        return [(repo_id, rev) for _, repo_id, rev, _ in self.calls]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture
def fake_hub(tmp_path, model_cache, monkeypatch):
    """Three repositories: a model (the smoke random-init checkpoint, plus a pickled .bin that must
    never be downloaded), an ALPACA-like dataset (parquet under data/, as tatsu-lab/alpaca) and a
    MULTIALPACA-like one (a JSONL per language, plus a file no entry names)."""
    import pandas as pd

    smoke = load_params("smoke", overrides={"cache_dir": str(model_cache), "run_dir": str(tmp_path / "src")})
    model_src = tmp_path / "repos" / "model"
    shutil.copytree(model_checkpoint(smoke, "base"), model_src, ignore=shutil.ignore_patterns(".*"))
    (model_src / "pytorch_model.bin").write_bytes(b"pickle")
    alpaca = tmp_path / "repos" / "alpaca"
    (alpaca / "data").mkdir(parents=True)
    pd.DataFrame(ALPACA).to_parquet(alpaca / "data" / "train-00000-of-00001.parquet")
    multi = tmp_path / "repos" / "multi"
    _jsonl(multi / "fr.jsonl", [{"instruction": f"Dites {i}.", "input": "", "output": str(i)} for i in range(4)])
    _jsonl(multi / "th.jsonl", [{"instruction": f"พูด {i}", "input": "", "output": str(i)} for i in range(3)])
    _jsonl(multi / "de.jsonl", [{"instruction": "never asked for", "input": "", "output": "x"}])
    fake = FakeHub(tmp_path / "hf", {"tiny-org/tiny-llama": model_src, "tiny-org/alpaca": alpaca,
                                     "tiny-org/multi": multi})
    monkeypatch.setattr(hub, "snapshot_download", fake)
    return fake


def _hub_params(tmp_path: Path, model_cache: Path, **datasets_extra) -> Path:
    """Smoke params with a hub model and hub datasets (one repository named twice, at one revision),
    a MOPENORCA-like entry without a path, and arms on them."""
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["run_dir"], raw["cache_dir"] = str(tmp_path / "run"), str(model_cache)
    raw["models"]["hubbed"] = {"source": "hub", "repo_id": "tiny-org/tiny-llama"}
    raw["datasets"].update({
        "h_alpaca": {"source": "hub", "path": "tiny-org/alpaca", "schema": "alpaca", "lang": "en", "n_heldout": 2},
        "h_alpaca_again": {"source": "hub", "path": "tiny-org/alpaca", "schema": "alpaca", "lang": "en", "n": 4},
        "h_multi": {"source": "hub", "path": "tiny-org/multi", "schema": "alpaca", "revision": "v1.0",
                    "data_files": {"fr": "fr.jsonl", "th": "th.jsonl"}},
        "h_private": {"source": "hub", "schema": "orca", "lang_column": "lang"},   # path not set
        **datasets_extra})
    raw["arms"].update({
        "h_p1": {"phase": "phase1", "start": "hubbed", "datasets": ["h_alpaca"]},
        "h_p2": {"phase": "phase2", "start": "h_p1", "datasets": ["h_multi"]},
        "h_private_p2": {"phase": "phase2", "start": "h_p1", "datasets": ["h_private"]},
        "h_private_after": {"phase": "reverse2", "start": "h_private_p2", "datasets": ["h_alpaca"]}})
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_fetch_cli_downloads_each_repository_once_and_later_runs_find_them_offline(
        tmp_path, model_cache, fake_hub, capsys):
    from cft_helpers.fetch import main, record_path

    path = _hub_params(tmp_path, model_cache)
    assert main(["--params", str(path)]) == 0
    out = capsys.readouterr()
    # one request per repository and revision; the unset entry is never asked for
    assert sorted(fake_hub.fetch_calls()) == [("tiny-org/alpaca", None), ("tiny-org/multi", "v1.0"),
                                              ("tiny-org/tiny-llama", None)]
    calls = {repo: (kind, patterns) for kind, repo, _, patterns in fake_hub.calls}
    assert calls["tiny-org/multi"] == ("dataset", ("fr.jsonl", "th.jsonl", "README.md"))
    assert calls["tiny-org/alpaca"] == ("dataset", None)
    assert calls["tiny-org/tiny-llama"][0] == "model"
    model_sha, multi_sha = commit_of("tiny-org/tiny-llama", None), commit_of("tiny-org/multi", "v1.0")
    snap = tmp_path / "hf" / "models--tiny-org--tiny-llama" / "snapshots" / model_sha
    assert (snap / "model.safetensors").is_file() and not (snap / "pytorch_model.bin").exists()
    assert not (tmp_path / "hf" / "datasets--tiny-org--multi" / "snapshots" / multi_sha / "de.jsonl").exists()
    assert f"-> commit {model_sha}" in out.out and "datasets.h_alpaca, datasets.h_alpaca_again" in out.out
    assert f"--set datasets.h_multi.revision={multi_sha}" in out.out
    assert f"--set models.hubbed.revision={model_sha}" in out.out
    assert "datasets.h_private.path is not set" in out.err and "h_private_p2, h_private_after" in out.err
    record = json.loads(record_path(load_params(path)).read_text())
    assert {r["repo_id"]: r["commit"] for r in record["fetched"]} == {
        "tiny-org/tiny-llama": model_sha, "tiny-org/alpaca": commit_of("tiny-org/alpaca", None),
        "tiny-org/multi": multi_sha}
    assert record["errors"] == []

    # a later process (a rank of the launch) offline: everything comes from the cache, and the
    # data report records the commit each dataset was read at
    fake_hub.offline, fake_hub.calls = True, []
    assert main(["--params", str(path), "--prepare", "--no-benchmarks"]) == 0
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["datasets"]["h_multi"]["hub"] == {"repo": "tiny-org/multi", "revision": "v1.0", "commit": multi_sha}
    assert report["datasets"]["h_alpaca"]["hub"]["commit"] == commit_of("tiny-org/alpaca", None)
    assert report["datasets"]["h_multi"]["train"]["by_lang"] == {"fr": 4, "th": 3}
    assert report["datasets"]["h_alpaca"]["train"]["rows"] == 10 and report["datasets"]["h_alpaca_again"]["train"]["rows"] == 4
    assert "h_private" not in report["datasets"]
    assert report["left_out"] == {"datasets": ["h_private"],
                                  "arms": {"h_private_p2": "h_private", "h_private_after": "h_private"}}
    p = load_params(path)
    assert Path(model_checkpoint(p, "hubbed")) == snap
    assert model_revision(p, "h_p2") == model_sha and model_revision(p, "base") is None


def test_fetch_dry_run_lists_and_downloads_nothing(tmp_path, model_cache, fake_hub, capsys):
    from cft_helpers.fetch import main

    assert main(["--params", str(_hub_params(tmp_path, model_cache)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert fake_hub.calls == []
    assert "would fetch dataset tiny-org/multi@v1.0  (datasets.h_multi)" in out
    assert "would fetch model tiny-org/tiny-llama@main  (models.hubbed)" in out


def test_pinned_sha_is_passed_through_to_the_download(tmp_path, model_cache, fake_hub):
    sha = "1234567890abcdef1234567890abcdef12345678"
    path = _hub_params(tmp_path, model_cache)
    p = load_params(path, overrides={"models.hubbed.revision": sha, "datasets.h_alpaca.revision": sha})
    assert Path(model_checkpoint(p, "hubbed")).name == sha
    rows = load_splits("h_alpaca", p)
    assert len(rows["train"]) + len(rows["heldout"]) == len(ALPACA)
    assert ("model", "tiny-org/tiny-llama", sha) in [c[:3] for c in fake_hub.calls]
    assert ("dataset", "tiny-org/alpaca", sha) in [c[:3] for c in fake_hub.calls]
    assert hub.resolved_sha("dataset", "tiny-org/alpaca", sha) == sha


def _gated(repo_id, *, repo_type=None, **kwargs):
    import httpx2

    url = f"https://huggingface.co/api/{repo_type or 'model'}s/{repo_id}/revision/main"
    raise hub.GatedRepoError(f"403 Client Error. Cannot access gated repo for url {url}.",
                             response=httpx2.Response(403, request=httpx2.Request("GET", url)))


def _unauthorized(repo_id, *, repo_type=None, **kwargs):
    import httpx2

    url = f"https://huggingface.co/api/{repo_type or 'model'}s/{repo_id}"
    raise hub.HfHubHTTPError("401 Client Error: Unauthorized", response=httpx2.Response(
        401, request=httpx2.Request("GET", url)))


@pytest.mark.parametrize("refusal", [_gated, _unauthorized], ids=["gated", "401"])
def test_a_gated_repository_names_the_repository_the_token_and_the_login(tmp_path, model_cache, monkeypatch,
                                                                           capsys, refusal):
    from cft_helpers.fetch import main

    monkeypatch.setattr(hub, "snapshot_download", refusal)
    path = _hub_params(tmp_path, model_cache)
    p = load_params(path)
    with pytest.raises(ModelError) as e:
        model_checkpoint(p, "hubbed")
    for needle in ("tiny-org/tiny-llama", "HF_TOKEN", "hf auth login", "huggingface-cli login"):
        assert needle in str(e.value), needle
    assert isinstance(e.value.__cause__, hub.GatedRepoAccessError)
    with pytest.raises(DataError) as e:
        load_splits("h_multi", p)
    assert "tiny-org/multi" in str(e.value) and "HF_TOKEN" in str(e.value)
    assert "https://huggingface.co/datasets/tiny-org/multi" in str(e.value)
    assert main(["--params", str(path)]) == 1  # every repository tried, each failure named
    out = capsys.readouterr().out
    assert out.count("FAILED") == 3 and "tiny-org/alpaca" in out and "HF_TOKEN" in out


def test_paper_presets_fetch_no_placeholder(capsys):
    """The paper presets ask for their public repositories only: MOPENORCA is not set, so it is
    neither fetched nor prepared until its path is given; OpenOrca is fetched once for its two entries."""
    from cft_helpers.fetch import hub_items

    for preset in ("params/paper/mistral7b.yaml", "params/paper/llama3_8b.yaml"):
        p = load_params(preset)
        repos = [i.request.repo_id for i in hub_items(p)]
        assert len(repos) == len(set(repos))
        assert {"tatsu-lab/alpaca", "DAMO-NLP-MT/multialpaca", "Open-Orca/OpenOrca",
                "openlanguagedata/flores_plus", "sentence-transformers/LaBSE"} <= set(repos)
        assert not any("your-org" in r or "mopenorca" in r for r in repos), repos
        mine = load_params(preset, overrides={"datasets.mopenorca.path": "me/mopenorca"})
        assert "me/mopenorca" in [i.request.repo_id for i in hub_items(mine)]
    assert "datasets.mopenorca.path is not set" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Slurm example


SBATCH = ROOT / "params" / "slurm" / "train.sbatch"


def test_sbatch_script_is_valid_bash_with_requeue_and_resume():
    assert shutil.which("bash")
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    text = SBATCH.read_text()
    for needle in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@300", "trap ", "scontrol requeue",
                   "HF_HUB_OFFLINE=1", "accelerate launch", "--arm all"):
        assert needle in text, needle
    # every `python -m X` module it runs exists
    modules = set(re.findall(r"-m (cft_helpers[\w.]*)", text))
    assert {"cft_helpers.fetch", "cft_helpers.train"} <= modules
    for m in modules:
        assert importlib.util.find_spec(m) is not None, m
    for cfg in re.findall(r"params/accelerate/\w+\.yaml", text):
        assert (ROOT / cfg).is_file(), cfg
    assert (ROOT / "params" / "slurm" / "README.md").is_file()


def test_sbatch_requeues_itself_on_the_warning_signal(tmp_path):
    """Run the script's signal handling with fake scheduler commands: USR1 during training stops
    the job step and calls `scontrol requeue <job id>`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, body in {"scontrol": f'echo "scontrol $*" >> {log}',
                       "python": f'echo "python $*" >> {log}',
                       "nvidia-smi": "echo 'GPU 0: X'; echo 'GPU 1: X'",
                       # the launch is long-running: the signal arrives while it trains
                       "accelerate": f'echo "accelerate $*" >> {log}; sleep 30'}.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "4242", "CFT_PARAMS_FILE": "params/smoke.yaml",
           "CFT_SKIP_VENV": "1", "HOME": str(tmp_path)}
    proc = subprocess.Popen(["bash", str(SBATCH)], cwd=ROOT, env=env)
    import time

    deadline = time.time() + 20
    while time.time() < deadline and "accelerate" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    proc.send_signal(__import__("signal").SIGUSR1)
    assert proc.wait(timeout=20) == 0
    calls = log.read_text().splitlines()
    assert calls[0].startswith("python -m cft_helpers.fetch --params params/smoke.yaml --prepare"), calls
    assert any(c.startswith("accelerate launch") and "--num_processes 2" in c for c in calls), calls
    assert calls[-1] == "scontrol requeue 4242", calls


def test_fetch_benchmarks_builds_the_lm_eval_tasks_once(tmp_path, model_cache, capsys):
    """--benchmarks builds the lm-eval tasks of the cft / lm_eval benchmarks, which loads their
    documents (here local files in XQuAD's schema; on a cluster the hub datasets) into the cache."""
    from cft_helpers.fetch import fetch_benchmarks

    doc = {"id": "1", "title": "t", "context": "Le chat dort.", "question": "Qui dort ?",
           "answers": {"text": ["Le chat"], "answer_start": [0]}}
    for lang in ("fr", "de"):
        _jsonl(tmp_path / f"xquad_{lang}.jsonl", [doc, {**doc, "id": "2"}])
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    smoke["run_dir"], smoke["cache_dir"] = str(tmp_path / "run"), str(model_cache)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(smoke))
    p = load_params(path, overrides=(
        "evaluation.benchmarks.xquad={source: cft, task: qa, metric: f1, langs: [fr, de], "
        f"dataset: {{path: json, split: validation, data_files: '{tmp_path}/xquad_{{lang}}.jsonl'}}}}"))
    assert fetch_benchmarks(p) == ["cft_xquad_fr", "cft_xquad_de"]
    assert "2 lm-eval tasks built" in capsys.readouterr().out
