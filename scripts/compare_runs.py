"""Compare two run stores number by number: what the paper's tables and the findings read.

    python scripts/compare_runs.py runs/before runs/after

Compares EA / MA / combined (eval/summary.json), every benchmark score of every model, the
per-item answer files byte for byte, DES and MPD, the representation summary, every arm's losses,
steps, token counts and input hash, and the held-out losses both stores hold. Times, paths and
versions are left out. Prints the count of identical values and every difference; exits 1 when
any differs. A refactor that claims "behaviour unchanged" should show 0 differences.
"""
import json, sys
from pathlib import Path

old, new = Path(sys.argv[1]), Path(sys.argv[2])
diffs, same = [], 0

def cmp(name, a, b, path=""):
    global same
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in ("wall_s", "seconds", "items_per_s", "time", "started", "finished", "t", "date", "versions", "git", "elapsed_s", "generation_s", "replay_generation_s", "checkpoint", "path", "run_dir", "created", "host", "runtime_s"):
                continue
            if k not in a or k not in b:
                diffs.append(f"{name}{path}/{k}: only in {'old' if k in a else 'new'}")
                continue
            cmp(name, a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            cmp(name, x, y, f"{path}[{i}]")
    else:
        if a == b:
            same += 1
        else:
            diffs.append(f"{name}{path}: {a!r} vs {b!r}")

def load(p):
    return json.loads(p.read_text())

for rel in ["eval/summary.json", "similarity/summary.json", "similarity/des.json", "similarity/mpd.json",
            "representations/summary.json"]:
    if (old / rel).exists() and (new / rel).exists():
        cmp(rel, load(old / rel), load(new / rel))
    else:
        diffs.append(f"{rel}: missing in {'old' if not (old / rel).exists() else 'new'}")
for f in sorted((old / "eval").glob("*.json")):
    if f.name == "summary.json":
        continue
    g = new / "eval" / f.name
    cmp(f"eval/{f.name}", load(f).get("benchmarks"), load(g).get("benchmarks") if g.exists() else None)
    s_old, s_new = (old / "eval" / f"{f.stem}.samples.jsonl").read_text(), (new / "eval" / f"{f.stem}.samples.jsonl").read_text()
    if s_old == s_new:
        same += 1
    else:
        diffs.append(f"eval/{f.stem}.samples.jsonl differs")
for d in sorted((old / "arms").iterdir()):
    m_old, m_new = d / "metrics.json", new / "arms" / d.name / "metrics.json"
    keys = ("steps", "train_loss", "eval_loss_before", "eval_loss_after", "train_rows_loss_before",
            "train_rows_loss_after", "examples", "trained_tokens", "loss_first", "loss_last", "trainable_params")
    a, b = load(m_old), load(m_new)
    cmp(f"arms/{d.name}", {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys})
    a_in, b_in = load(d / "manifest.json")["input_hash"], load(new / "arms" / d.name / "manifest.json")["input_hash"]
    cmp(f"arms/{d.name}/input_hash", a_in, b_in)
ho, hn = load(old / "heldout_loss.json"), load(new / "heldout_loss.json")
common = set(ho) & set(hn)
cmp("heldout_loss.json (common keys)", {k: ho[k] for k in common}, {k: hn[k] for k in common})
print(f"heldout keys: old {len(ho)}, new {len(hn)}, common {len(common)}")
print(f"{same} values identical; {len(diffs)} differences")
for x in diffs[:60]:
    print("  ", x)
sys.exit(1 if diffs else 0)
