"""Intra-package imports sit at module level; the modules the book, the scheduler and the CLIs
load stay free of torch at import (each module's docstring names the imports it keeps inside a
function, and why)."""

import subprocess
import sys

LIGHT = ["params", "runs", "book", "schedule", "lock", "progress", "mitigation", "plan", "train", "heldout",
         "reports", "data.validate", "relaunch", "findings", "jobs", "job_runner", "executors", "inventory", "files",
         "cache", "intervals", "findings_report", "weights"]


def test_light_modules_import_without_torch():
    code = ("import importlib, sys\n"
            f"for m in {LIGHT!r}:\n"
            "    importlib.import_module('cft_helpers.' + m)\n"
            "print(sorted(k for k in ('torch', 'transformers', 'trl', 'lm_eval') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
