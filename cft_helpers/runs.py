"""The run store: one folder per run, one sub-folder per stage (data, each arm), never lost work.

``RunStore`` owns the layout: every module asks it for a path by name (``store.eval_result(m)``,
``store.heldout_loss_file``, ...) and builds none itself. ``python -m cft_helpers.inventory show
RUN_DIR`` prints what a store holds, stage by stage, with status, size and what may be deleted
(:mod:`cft_helpers.inventory`); the files are written through :mod:`cft_helpers.files`.

Layout under ``params.run_dir`` (e.g. ``runs/default/``). *Delete*: **keep** (expensive or the
record of the run), **recomputed** (a result or cache the book rebuilds when it is missing, at
the cost named), **safe** (never read back)::

    params.yaml                    book.py: the resolved params of the last book run      safe
    book.lock, .book.flock         lock.py: who holds the store, and the kernel lock      keep while
                                   (released when its process dies)                       a book runs
    book_timing.json               book.py: wall seconds per notebook                     safe
    book.log                       book.py: every line the book showed, with the time     safe
    progress.jsonl                 progress.py: the running stages' progress events       safe
    data/                          data/prepare.py (notebook 01), a stage:                recomputed
      manifest.json                  status and input hash                                (seconds; arms
      report.json                    rows per language, a content hash per file           stay valid)
      <dataset>.train.jsonl, <dataset>.heldout.jsonl
    arms/<arm>/                    train.py (notebooks 02, 03, 04), a stage per arm:
      manifest.json                  status, input hash, git commit, versions, times      keep
      params.json, metrics.json      the resolved arm; its losses, steps, parameters      keep
      train_log.jsonl                the Trainer's log history                            keep
      model/                         the final checkpoint (safetensors + tokenizer)       keep: hours of
                                                                                          training
      adapter/                       LoRA: the adapter (model/ holds it merged)           keep
      freeze.json                    LF_H1 / LF_H2 / Spectrum: the tensors frozen         keep
      spectrum_snr.json, unfrozen.yaml  Spectrum: SNR per tensor, the tensors it trains   keep
      replay/                        replay.py (GR_5, GR_10, ER_10): replay.jsonl,        keep
                                     summary.json, generations.jsonl (GR: Phase-1 answers;
                                     generations.rank<k>.jsonl: process k's share in a launch)
      checkpoints/                   Trainer checkpoints to resume a killed run,          safe once the
                                     eval_before.json; removed when the arm is done       arm is done
      tracker/                       training.report_to tensorboard: its event files      safe (the
                                     (events.out.tfevents.*), the curves of the arm       losses are in
                                                                                          train_log.jsonl)
    eval/                          evaluation/harness.py (notebook 06):
      <model>.json                   every metric of one model, keyed (``key``) by the    recomputed
                                     model's identity and the suite's hash                (the suite's run)
      <model>.samples.jsonl          per-item answers and scores (findings read these)    recomputed
      summary.json                   EA, MA, combined per model                           recomputed
      tasks/<suite hash>/            the suite's offline task files, written.json last    recomputed
      alpacaeval/                    evaluation/alpacaeval.py: answers-<model>-<id>.jsonl recomputed (a
                                     (generation cache), judge-<id>/ (judge verdicts)     judge's API calls)
    similarity/                    similarity.py (notebook 05): des.json, mpd.json        recomputed
                                   (keyed by the arms' input hashes), summary.json,
                                   embeddings/<dataset>.<key>.npy (an older key of the    safe
                                   same dataset is never read again)
    representations/               representations.py (notebook 07):                      recomputed
      <set>/<model>.npz              activations per prompt set, keyed (``key``) by the   (one pass per
                                     model, texts and settings                            model)
      summary.json                   what notebook 08 draws
    heldout_loss.json              heldout.py (notebook 03): key -> loss                  recomputed
    losses_before_training.json    train.py: key -> loss before training, shared by the   recomputed
                                   arms that start from one model (merged under a lock)   (on retraining)
    findings.json, findings.md     findings.py (notebook 09)                              recomputed
    figures/                       plots.py (notebook 08) when ``figures.dir`` is unset:  recomputed
                                   HTML, PNG, SVG, and plotly.min.js the HTML files load
    notebooks/                     book.py: the executed notebooks                        safe
    logs/                          schedule.py: <kind>-<name>.log per job, schedule.json  safe
    submitit/                      executors.py: jobs.json (each job's id), and           keep while
                                   submitit's pickles and logs per job id                 jobs run
    seeds/seed-<s>/                book.py --seeds: one whole run store per extra seed    as above

A leftover of an interrupted write (``.<name>.<random>.tmp``, ``.<name>.tmp.<ext>``,
``.model.tmp/``) is safe to delete when no book runs.

A stage is *done* only when its manifest says ``status: done`` with the same input hash as now;
the manifest is written atomically (write, then rename) and only after every output is in place,
so a crash or a kill at any point leaves the stage not done. Rerunning a stage whose inputs are
unchanged and complete is skipped; ``force=True`` reruns it from scratch.

Every other skip-if-done is a *keyed cache*: a result is reused while its key (a hash of what it
depends on) is the one asked for. ``KeyedFile`` holds one result per file, its key inside
(``eval/<model>.json``: field ``key``; ``representations/<set>/<model>.npz``: array ``key``) or
in its name (``similarity/embeddings/<dataset>.<key>.npy``); ``KeyedCache`` holds many in one
JSON file, key -> value, merged under a lock so that parallel workers lose none
(``heldout_loss.json``, ``losses_before_training.json``, ``similarity/mpd.json``).
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import subprocess
import traceback
from pathlib import Path
from typing import Any

from cft_helpers.files import atomic_write_json, atomic_write_text, read_json
from cft_helpers.lock import LOCK_NAME

PACKAGES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers")
# The files of an arm's folder (folders apart: model/, adapter/, checkpoints/, replay/, tracker/).
ARM_FILES = ("manifest.json", "params.json", "metrics.json", "train_log.jsonl", "freeze.json",
             "spectrum_snr.json", "unfrozen.yaml")


class MissingArtifact(FileNotFoundError):
    """Something a read-only step needs is not in the run store; the message says what is
    missing and which notebook writes it."""


def read_saved(path: Path, what: str, notebook: str) -> dict[str, Any]:
    """A summary a notebook saved in the run store, read back by a later one (notebooks 08, 09):
    raises MissingArtifact naming ``what`` and the ``notebook`` that writes it when it is absent."""
    if not path.exists():
        raise MissingArtifact(f"no {what} in the run store ({path}); run notebook {notebook} first")
    return read_json(path)


def git_commit(root: Path | str | None = None) -> dict[str, Any]:
    """The commit the code ran at, and whether the work tree had uncommitted changes."""
    root = str(root or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": sha or None, "dirty": dirty if sha else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


MANIFEST = "manifest.json"  # a stage's status and input hash, in the stage's folder


class Stage:
    """One unit of work in the run store with an input hash and a status.

    Typical use::

        stage = store.stage("arms/p1_alpaca", input_hash)
        if stage.is_done() and not force:
            return stage.outputs()
        stage.begin(force=force)          # wipes stale outputs if the inputs changed
        try:
            ...                            # write into stage.dir
            stage.finish({"metric": 1.0})  # status: done (atomic)
        except BaseException as e:
            stage.fail(e)                  # status: failed, with the traceback
            raise
    """

    def __init__(self, directory: Path, input_hash: str, commit_root: Path | None = None):
        self.dir = Path(directory)
        self.input_hash = input_hash
        self.manifest_path = self.dir / MANIFEST
        self._commit_root = commit_root

    @property
    def name(self) -> str:
        return self.dir.name

    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return read_json(self.manifest_path)
        except (json.JSONDecodeError, OSError):
            return None  # a torn manifest can only come from outside: treat as not done

    def status(self) -> str:
        m = self.manifest()
        if m is None:
            return "missing"
        if m.get("input_hash") != self.input_hash:
            return "stale"
        return m.get("status", "unknown")

    def is_done(self) -> bool:
        return self.status() == "done"

    def outputs(self) -> dict[str, Any]:
        m = self.manifest() or {}
        return m.get("outputs", {})

    def begin(self, force: bool = False, keep: tuple[str, ...] = ("checkpoints",)) -> bool:
        """Mark the stage running. Returns True when earlier partial work can be resumed.

        With ``force`` or changed inputs the folder is emptied first; otherwise partial work
        named in ``keep`` (Trainer checkpoints) stays, so training resumes where it stopped.
        """
        m = self.manifest()
        resumable = (not force and m is not None and m.get("input_hash") == self.input_hash
                     and m.get("status") in ("running", "failed"))
        if not resumable and self.dir.exists():
            for child in self.dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif resumable:
            for child in self.dir.iterdir():  # outputs of the failed attempt, except what resumes
                if child.name not in keep and child.name != "manifest.json":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        attempts = (m or {}).get("attempts", 0) + 1 if resumable else 1
        self._write(status="running", started=_now(), attempts=attempts)
        return resumable

    def finish(self, outputs: dict[str, Any] | None = None) -> None:
        m = self.manifest() or {}
        self._write(status="done", started=m.get("started"), finished=_now(),
                    attempts=m.get("attempts", 1), outputs=outputs or {})

    def fail(self, error: BaseException) -> None:
        m = self.manifest() or {}
        self._write(status="failed", started=m.get("started"), failed=_now(),
                    attempts=m.get("attempts", 1),
                    error="".join(traceback.format_exception_only(type(error), error)).strip())

    def _write(self, **fields: Any) -> None:
        manifest = {"stage": self.dir.name, "input_hash": self.input_hash, **fields,
                    "git": git_commit(self._commit_root), "versions": package_versions()}
        atomic_write_json(self.manifest_path, manifest)


class RunStore:
    """The folder of one run (``params.run_dir``) and the one place that names its paths (the
    module docstring draws the layout). The accessors only name paths; writers create folders."""

    def __init__(self, root: Path | str, create: bool = True):
        self.root = Path(root)
        if create:  # (create=False: the layout alone, relative paths, for cft_helpers.inventory)
            self.root.mkdir(parents=True, exist_ok=True)

    # ---- the book
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def book_timing(self) -> Path:
        return self.root / "book_timing.json"

    @property
    def book_log(self) -> Path:
        return self.root / "book.log"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def schedule_file(self) -> Path:
        return self.logs_dir / "schedule.json"

    @property
    def submitit_dir(self) -> Path:
        """submitit's folder when ``slurm.folder`` is unset: each job's pickles and logs."""
        return self.root / "submitit"

    @property
    def submitted_file(self) -> Path:
        """The jobs submitted through submitit: job -> its id, executor and submission time."""
        return self.submitit_dir / "jobs.json"

    @property
    def figures_dir(self) -> Path:
        """Where the figures go when ``figures.dir`` is unset (``Params.figures_path``)."""
        return self.root / "figures"

    def seed_dir(self, seed: int) -> Path:
        """The run store of an extra seed of the study (``Params.seed_overrides``)."""
        return self.root / "seeds" / f"seed-{seed}"

    # ---- data and arms (stages)
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def data_file(self, dataset: str, split: str = "train") -> Path:
        return self.data_dir / f"{dataset}.{split}.jsonl"

    @property
    def data_report(self) -> Path:
        return self.data_dir / "report.json"

    def prepared(self) -> dict[str, Any]:
        """The data report of the prepared data; raises naming notebook 01 when there is none."""
        manifest = self.data_dir / "manifest.json"
        if not self.data_report.exists() or not manifest.exists() or read_json(manifest).get("status") != "done":
            raise RuntimeError(f"no prepared data in {self.data_dir}; run notebook 01_data_prep "
                               "(or cft_helpers.data.prepare_datasets) first")
        return read_json(self.data_report)

    def data_hash(self, dataset: str, split: str = "train") -> str:
        """The content hash of a prepared split (it feeds the input hash of every arm trained on it)."""
        return self.prepared()["datasets"][dataset][split]["sha256"]

    @property
    def arms_dir(self) -> Path:
        return self.root / "arms"

    def arm_dir(self, arm: str) -> Path:
        return self.arms_dir / arm

    def arm_file(self, arm: str, name: str) -> Path:
        """One of an arm's files by its name in the layout: manifest.json, params.json,
        metrics.json, train_log.jsonl, freeze.json, spectrum_snr.json, unfrozen.yaml."""
        if name not in ARM_FILES:
            raise ValueError(f"{name!r} is not a file of an arm's folder; known: {sorted(ARM_FILES)}")
        return self.arm_dir(arm) / name

    def arm_model_dir(self, arm: str) -> Path:
        """The final checkpoint an arm writes (read it through ``arm_checkpoint``, which also
        knows the arms used as is and stores moved since)."""
        return self.arm_dir(arm) / "model"

    def arm_adapter_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "adapter"

    def arm_checkpoints_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "checkpoints"

    def arm_tracker_dir(self, arm: str) -> Path:
        """Where the experiment tracker of ``training.report_to`` writes the arm's curves
        (TensorBoard's event files), so ``tensorboard --logdir <run_dir>/arms`` shows every arm."""
        return self.arm_dir(arm) / "tracker"

    def replay_dir(self, arm: str) -> Path:
        return self.arm_dir(arm) / "replay"

    def replay_file(self, arm: str) -> Path:
        """The replay rows mixed into an arm's Phase-2 data (GR_5, GR_10, ER_10)."""
        return self.replay_dir(arm) / "replay.jsonl"

    def replay_summary(self, arm: str) -> Path:
        return self.replay_dir(arm) / "summary.json"

    def replay_generations(self, arm: str, rank: int = 0) -> Path:
        """The Phase-1 model's answers that GR replays (a resumable generation cache); in a
        launch of several processes, process ``rank`` > 0 caches its share in a file of its own."""
        return self.replay_dir(arm) / ("generations.jsonl" if rank == 0 else f"generations.rank{rank}.jsonl")

    def replay_generation_files(self, arm: str) -> list[Path]:
        """Every generation cache of ``arm``: the main one and those of other processes."""
        folder = self.replay_dir(arm)
        return sorted(folder.glob("generations*.jsonl")) if folder.is_dir() else []

    # ---- evaluation
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_result(self, model: str) -> Path:
        return self.eval_dir / f"{model}.json"

    def eval_samples(self, model: str) -> Path:
        return self.eval_dir / f"{model}.samples.jsonl"

    @property
    def eval_summary(self) -> Path:
        return self.eval_dir / "summary.json"

    def eval_tasks_dir(self, suite: str) -> Path:
        """The offline task files of one evaluation suite (named by its hash)."""
        return self.eval_dir / "tasks" / suite

    @property
    def alpacaeval_dir(self) -> Path:
        return self.eval_dir / "alpacaeval"

    def alpacaeval_answers(self, model: str, ident: str) -> Path:
        """A model's AlpacaEval answers (a resumable generation cache), named by its identity."""
        return self.alpacaeval_dir / f"answers-{model}-{ident[:12]}.jsonl"

    # ---- similarity, representations, losses, findings
    @property
    def similarity_dir(self) -> Path:
        return self.root / "similarity"

    def similarity_embeddings(self, dataset: str, key: str) -> Path:
        return self.similarity_dir / "embeddings" / f"{dataset}.{key}.npy"

    @property
    def des_file(self) -> Path:
        return self.similarity_dir / "des.json"

    @property
    def mpd_file(self) -> Path:
        return self.similarity_dir / "mpd.json"

    @property
    def similarity_summary(self) -> Path:
        return self.similarity_dir / "summary.json"

    @property
    def representations_dir(self) -> Path:
        return self.root / "representations"

    def representations_file(self, set_name: str, model: str) -> Path:
        return self.representations_dir / set_name / f"{model}.npz"

    @property
    def representations_summary(self) -> Path:
        return self.representations_dir / "summary.json"

    @property
    def heldout_loss_file(self) -> Path:
        return self.root / "heldout_loss.json"

    @property
    def losses_before_training_file(self) -> Path:
        return self.root / "losses_before_training.json"

    @property
    def findings_json(self) -> Path:
        return self.root / "findings.json"

    @property
    def findings_md(self) -> Path:
        return self.root / "findings.md"

    # ---- stages and arms' records
    def stage(self, relpath: str, input_hash: str) -> Stage:
        return Stage(self.root / relpath, input_hash)

    def arm_manifest(self, arm: str) -> dict[str, Any] | None:
        p = self.arm_file(arm, "manifest.json")
        return read_json(p) if p.exists() else None

    def arm_checkpoint(self, arm: str) -> Path:
        """The final checkpoint folder of a finished arm; raises if the arm is not done."""
        m = self.arm_manifest(arm)
        if not m or m.get("status") != "done":
            status = (m or {}).get("status", "missing")
            raise RuntimeError(f"arm {arm!r} is not done (status: {status}); run its training first "
                               f"(notebooks 02/03 or cft_helpers.train.train_arm)")
        recorded = Path(m["outputs"]["checkpoint"])
        # A run store may have moved since (a renamed or copied run_dir): the checkpoint is then
        # the same folder under this store's arm directory.
        here = self.arm_dir(arm) / recorded.name
        return here if here.exists() else recorded

    def finished_arms(self, arms) -> list[str]:
        """The arms among ``arms`` whose training is done, in the given order."""
        return [a for a in arms if (self.arm_manifest(a) or {}).get("status") == "done"]

    def arm_metrics(self, arm: str) -> dict[str, Any]:
        p = self.arm_file(arm, "metrics.json")
        return read_json(p) if p.exists() else {}

    def save_params(self, resolved: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.params_file,
                          yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
