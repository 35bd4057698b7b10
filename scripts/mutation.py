"""Mutation testing of the code that computes the paper's numbers: would the tests catch a wrong number?

    python scripts/mutation.py                     # all modules below (~15-25 min on 2 busy cores)
    python scripts/mutation.py --modules scoring findings
    python scripts/mutation.py --report            # print the last run's scores again, run nothing

mutmut (pinned in pyproject's ``dev`` extra, configured in ``[tool.mutmut]``) copies the package to
``mutants/``, plants one small bug at a time (``+`` to ``-``, ``<`` to ``<=``, a constant changed,
an argument dropped, ...) in the functions listed in FUNCTIONS, and runs the fast unit tests that
execute that function (the test list is in pyproject's ``[tool.mutmut]``). A mutant that no test
fails on *survives*. This script prints the score per module (killed / mutants) and every survivor
with its diff, each marked as a gap or, where EQUIVALENT names it, as equivalent or irrelevant with
the reason (such mutants are left out of the adjusted score).

Mutated: the numeric functions only (FUNCTIONS). Left out, and why: command-line front ends,
printing and file writing; the model-loading, activation-extracting and lm-eval-running code
(tested end to end by tests that train or evaluate a model, far too slow to rerun per mutant);
the t-SNE / UMAP projection (a library call). ``raise`` statements and warnings are not mutated
(``do_not_mutate_patterns``): their message text is not a number.

Not part of ``.ci/run`` (too slow); docs/ENGINEERING.md, "Mutation scores", gives the last scores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module (short name) -> (source file, functions mutated). Methods: "Class.method".
FUNCTIONS: dict[str, tuple[str, list[str]]] = {
    "similarity": ("cft_helpers/similarity.py", [
        # DES
        "row_text", "sample_rows", "mean_direction", "des_from_embeddings", "des_spread", "embed_rows", "des",
        # MPD
        "_check_same_architecture", "_tied_duplicates", "_l2_of_difference", "mpd", "mpd_table",
        "mpd_reference_arm", "mpd_arms",
        "correlation"]),
    "spectrum": ("cft_helpers/spectrum.py", [
        "module_type", "type_matches", "singular_values", "snr_score", "scan", "_natural", "select",
        "unfrozen_yaml", "unfrozen_patterns", "matches_unfrozen"]),
    "freezing": ("cft_helpers/freezing.py", [
        "FreezePlan.frozen_values", "masked_rows", "layer_of", "n_layers_of", "_plan", "lf_h1",
        "_projection_pairs", "projection_changes", "head_layout", "head_changes", "_top_layers", "_row_ranges",
        "lf_h2_heads", "check_masking", "lf_h2", "spectrum_plan"]),
    "replay": ("cft_helpers/replay.py", ["replay_count", "english_counterparts"]),
    "scoring": ("cft_helpers/evaluation/scoring.py", [
        "_base", "normalize", "tokens", "_f1", "f1", "exact_match", "_Tokenizer.tokenize", "rouge",
        "_mlqa_lang", "_refs", "mlqa_tokens", "mlqa_f1", "mlqa_exact_match", "squad_normalize", "squad_tokens",
        "squad_f1", "squad_exact_match", "rouge_default", "check_scorer", "qa_scores", "summary_scores"]),
    "harness": ("cft_helpers/evaluation/harness.py", ["abilities", "ability_table"]),
    "representations": ("cft_helpers/representations.py", [
        # (not ``covariance``: the paper's formula kept as the tests' reference, used by no analysis)
        "layer_means", "_gram_difference_norm", "covariance_change", "standardise",
        "parallel_vectors", "translation_retrieval"]),
    "intervals": ("cft_helpers/intervals.py", [
        # the rule and the intervals
        "verdict", "share_verdict", "percentile_interval", "normal_interval", "t_interval", "seeds_needed",
        "Estimate.value", "Estimate.k", "Estimate.interval", "Estimate.in_direction",
        # per-item scores and the bootstrap
        "_item_value", "item_scores", "ItemBootstrap.__init__", "ItemBootstrap._bench", "ItemBootstrap.ability",
        "SeedScores.ability", "estimate"]),
    "findings": ("cft_helpers/findings.py", [
        # the claims
        "_reverse_ma", "_paper_values", "paper_c7b", "claim_roles", "_new_claim", "_decide", "slot_checks",
        "phase1_against_base", "_seed_values", "_wanted", "decide_claims", "_all_of", "similarity_effect",
        "benchmark_changes", "plotted_intervals"]),
}

# Survivors that change no number a user reads, matched on (function, text of the mutated line):
# each with the reason. They are listed, and left out of the adjusted score.
EQUIVALENT: list[tuple[str, str, str]] = [
    # scorers
    ("normalize", r'in "XXPSXX"', "the added X is no Unicode category's initial: the same characters go"),
    ("_f1", r"if not pred and not ref", "with one side empty nothing is shared: the F1 branch gives 0.0 too"),
    ("tokens", r"\.upper\(\)", "_base lower-cases the code again; the character test reads _base"),
    ("tokens", r'lang or "XXXX"', "no language becomes 'xxxx', no character language either: same tokens"),
    ("tokens", r"if lang in CHARACTER_LANGS or _base\(None\)|if lang in CHARACTER_LANGS and _base",
     "only a code with a region differs, e.g. ja_JP (killed when tested)"),
    # EA / MA
    ("abilities", r'float\("NAN"\)', "float('NAN') is NaN as well"),
    ("ability_table", r'float\("NAN"\)', "float('NAN') is NaN as well"),
    ("abilities", r"\) or True \\|math\.isnan\(out\[\"EA\"\]\) and math",
     "NaN + x is NaN: combined is NaN whenever EA or MA is, through either branch"),
    ("ability_table", r"abilities\(None, record\)", "abilities does not read params"),
    ("ability_table", r'"XX; XX"\.join|or \'nothing\'|and \'nothing\'|\'XXnothingXX\'|\'NOTHING\'|\'XX, XX\'\.join\((comps|missing)',
     "the table's footnote text"),
    ("lf_h2", r"_top_layers\(per_layer, n_layers, (None|\"XXXX\")\)", "the text appended to the error message"),
    ("ItemBootstrap.__init__", r"self\.params = None", "params is kept but never read"),
    ("ItemBootstrap.__init__", r"for i in ids\], (dtype=None)?\)", "item scores are floats already (_item_value)"),
    ("ItemBootstrap.ability", r'float\("NAN"\)', "float('NAN') is NaN as well"),
    ("percentile_interval", r"np\.asarray\(draws, (dtype=None)?\)", "np.quantile returns floats for ints too"),
    ("seeds_needed", r"np\.asarray\(values, (dtype=None)?\)", "the mean and sd of an int array are floats all the same"),
    ("t_interval", r"np\.asarray\(values, (dtype=None)?\)", "the mean and sd of an int array are floats all the same"),
    ("seeds_needed", r"\) <= distance", "differs only where t x se equals |mean + margin| to the last bit"),
    ("seeds_needed", r"cap: int = 1001", "a spread that needs exactly 1001 seeds: 'about 1001 seeds' instead of 'none'"),
    ("benchmark_changes", r'"XXMAXX"\]|"ma"\]', "MA's row is last either way: pandas sorts the unmapped NaN last"),
    ("slot_checks", r"if \(any\(s\.boot for s in seeds\)\) or True", "set().union() of no sets is the empty set too"),
    ("decide_claims", r'r\.removeprefix\("_p1"\)|removesuffix\("XX_p1XX"\)|removesuffix\("_P1"\)',
     "unreachable: a *_p1 role is None only when its arm's role is, and that role comes first in every claim"),
    ("decide_claims", r"if \(all\(s\.boot for s in seeds\)\) or True",
     "a seed has no bootstrap only when no model has scores: every estimate is then None either way"),
    ("decide_claims", r'missing\[gone\[0\]\] if \(gone\) or True|"XXnot evaluatedXX"|"NOT EVALUATED"',
     "unreachable: a needed model without scores is always in SeedScores.missing"),
    ("decide_claims", r'getattr\(f, base, None\) if \(base != "vanilla"\) or True|getattr\(f, base, \) if|'
                      r'base != "XXvanillaXX"|base != "VANILLA"',
     "findings has every other role's setting and none named 'vanilla': getattr gives the same either way"),
    ("decide_claims", r"sd=sds\[0\] if \(k == 1\) or True",
     "with several seeds C4's interval is a t-interval: Estimate.sd is read for one seed only"),
    ("decide_claims", r"if \(k > 1\) or True else 0\.0\)|if k >= 1 else 0\.0\)|if k > 1 else 1\.0\)",
     "with one seed C4's interval is the normal one from DES's sd: min_se is read for several seeds only"),
    ("decide_claims", r"_decide\(c, est, confidence, None\)",
     "C4-C6 (the evaluation claims' one is killed): their Estimates hold no draws, so no replicate count is named"),
    ("paper_c7b", r"if mm == m or not mitigation|if mm != m and not mitigation",
     "the transcribed Table 5 lists the same strategies for both models and prints ER_10 first for both: "
     "the other model's rows give the same answer"),
    # on the transcribed tables (paper_results), which are constants: the same values and notes
    ("_paper_values", r"\(given\[0\] >= 0\)|\(given\[1\] >= 0\)", "no paper value is exactly 0"),
    ("_paper_values", r"round\(v, 5\)", "every paper value is a difference of 3-decimal numbers (or half a sum)"),
    ("_paper_values", r'\("note" in er or ("XXnoteXX"|"NOTE") in other\)|\("note" in er or "note" not in other\)|'
                      r'er\.get\("combined \(from that mean\)", (None)?\)|er is not None or other is not None and',
     "ER_10's row is misprinted for both models: its note decides alone, and it has the recomputed combined"),
    ("_paper_values", r"None if \(row is None\) and False|None if \(er is None or other is None\) and False|"
                      r"None if er is None and other is None",
     "Table 5 has a row for every strategy of both models: the None branch is never taken"),
    ("_paper_values", r"er is not None and other is not None or \(",
     "ER_10's row always has its note: the condition is true either way"),
    ("decide_claims", r'c\.paper = \{m: \(1\.0 if \(v\["best_printed"\] == "ER_10"\) or True|else 1\.0\) for m',
     "Table 5 prints ER_10 first for both models"),
    ("decide_claims", r'ability\(roles\["strategies"\]\[n\], None, dropped\)|ability\(n, None, exclude\)',
     "None is falsy: ability reads point as a truth value"),
    ("decide_claims", r'x\.split\(None\)\[0\]', "component names hold single spaces: split() cuts them alike"),
    ("decide_claims", r'or "XXnot computedXX"|or "NOT COMPUTED"',
     "unreachable: a seed's C4-C6 value is a number or the reason it is missing, never None"),
    ("estimate", r"\), (dtype=None)?\)$", "the draws are float arrays already"),
    ("estimate", r"ability\(n, None, exclude\)", "None is falsy: ability reads point as a truth value"),
    ("item_scores", r'"mmlu" in owner or params', "'mmlu' is a task name only where the mmlu slot runs lm-eval's group"),
    ("decide_claims", r"for c in claims\[1:5\]", "only four claims exist when the loop runs: [1:5] is [1:4]"),
    ("_seed_values", r'sim\.get\("des", (None)?\)',
     "a missing DES table fails the lookup either way (KeyError or TypeError, both caught): the same reason"),
    # progress bars, default arguments that every caller passes
    ("scan", r"progress: bool = False|desc=None|unit=None|\"XXSpectrum scanXX\"|\"SPECTRUM SCAN\"|\"spectrum scan\"|"
     r"\"XXmatrixXX\"|\"MATRIX\"", "progress-bar display only"),
    ("mpd", r"desc=None|unit=None|\"XXMPDXX\"|\"mpd\"|\"XXtensorXX\"|\"TENSOR\"|progress: bool = True",
     "progress-bar display only"),
    ("english_counterparts", r"load_prepared\(store, (source|d), \)", "'train' is load_prepared's default split"),
    ("english_counterparts", r"name=None|name=f\"XXreplay-", "the name only builds the row id, replaced on the next line"),
    ("des", r"progress: bool = False", "progress-bar display only"),
    ("check_masking", r'arm: str = "XXXX"', "the arm is named in the error message only"),
    ("scan", r'tqdm\(todo, unit="matrix"\)|tqdm\(todo, desc="Spectrum scan", \)', "progress-bar display only"),
    ("singular_values", r"if x\.shape\[0\] < x\.shape\[1\]",
     "only a square matrix takes the other branch, and X Xᵀ and XᵀX then have the same eigenvalues"),
    ("snr_score", r"np\.asarray\(weight, (dtype=None)?\)",
     "a float64 array is scored without rounding to float32 first (7th digit); checkpoints and torch "
     "tensors reach it as float32 already"),
    ("snr_score", r"s\[s >= tau\], s\[s <= tau\]",
     "differs only for a singular value exactly equal to tau > 0 (tau = 0 is tested)"),
    ("snr_score", r"if \(above\.size\) or True", "the sum of no values is 0.0, the other branch's value"),
    ("standardise", r"sd, 2\.0\)", "a constant column is all zeros after centring, whatever it is divided by"),
    ("translation_retrieval", r"astype\(None\)", "astype(None) casts to float64, the same"),
    ("mpd_table", r'orient="INDEX"', "pandas reads orient case-insensitively"),
    ("mpd_table", r"if \(top > 0\) or True|if top >= 0 else|float\(\"NAN\"\)",
     "with every value 0, 0 / 0 in pandas is NaN, the other branch's value"),
    ("correlation", r'"XXone of the two|"ONE OF THE TWO', "message text"),
    ("_l2_of_difference", r"np\.empty\(chunk, (dtype=None)?\)", "np.empty's default dtype is float64, the same"),
    ("des_spread", r"if n_boot < 0:|if n_boot <= 1:|float\(\"NAN\"\)",
     "0 or 1 replicates give NaN through the other branch too (an sd needs 2)"),
    ("des_spread", r"np\.asarray\((a|b), (dtype=None)?\)", "mean_direction casts every resample to float64 again"),
    ("mpd", r'tqdm\(names, unit="tensor"\)|tqdm\(names, desc="MPD", \)', "progress-bar display only"),
    ("mpd", r'largest = \("XXXX", -1\.0\)|largest = \("", -2\.0\)',
     "replaced by the first tensor (every L2 is >= 0 > -1): never read"),
    # numpy casts
    ("_gram_difference_norm", r"astype\(None\)", "astype(None) casts to float64, the same"),
    ("covariance_change", r"astype\(None\)", "astype(None) casts to float64, the same"),
]

KILLED, SURVIVED = {1, 3, 24, -24, 36, 152, 255}, {0}   # timeouts count as detected, as mutmut does
NO_TESTS = {5, 33}
PENDING = {None}   # not run yet (an interrupted run)


def mangled(module_path: str, function: str) -> str:
    """mutmut's name prefix of a function's mutants."""
    dotted = module_path.removesuffix(".py").replace("/", ".")
    if "." in function:
        cls, meth = function.split(".")
        return f"{dotted}.xǁ{cls}ǁ{meth}__mutmut_"
    return f"{dotted}.x_{function}__mutmut_"


def run_mutmut(modules: list[str], max_children: int, fresh: bool, names: list[str] | None = None) -> float:
    if fresh and (ROOT / "mutants").exists():
        shutil.rmtree(ROOT / "mutants")   # stale stats would map tests to functions wrongly
    globs = names or [mangled(FUNCTIONS[m][0], f) + "*" for m in modules for f in FUNCTIONS[m][1]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *globs]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    (ROOT / "mutants" / "last-run.log").write_text(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit(f"mutmut run failed (exit {proc.returncode}); full log in mutants/last-run.log")
    return elapsed


def results(module: str) -> dict[str, int | None]:
    path, functions = FUNCTIONS[module]
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    prefixes = [mangled(path, f) for f in functions]
    return {k: v for k, v in codes.items() if any(k.startswith(p) and k[len(p):].isdigit() for p in prefixes)}


def diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name, path=path).splitlines()
    return "\n".join(f"      {ln}" for ln in lines if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---")))


def function_of(name: str) -> str:
    short = name.rpartition(".")[2].partition("__mutmut_")[0]
    return short.removeprefix("x_").replace("xǁ", "").replace("ǁ", ".")


def equivalent_reason(name: str, text: str) -> str | None:
    added = " ".join(ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("+"))
    for func, pattern, reason in EQUIVALENT:
        if function_of(name) == func and re.search(pattern, added):
            return reason
    return None


def report(modules: list[str]) -> int:
    os.chdir(ROOT)
    total = {"mutants": 0, "killed": 0, "survived": 0, "equivalent": 0, "no_tests": 0, "pending": 0}
    survivors: list[tuple[str, str, str, str | None]] = []
    rows = []
    for m in modules:
        codes = results(m)
        if not codes:
            rows.append((m, None))
            continue
        path = FUNCTIONS[m][0]
        killed = sum(v in KILLED for v in codes.values())
        surv = [k for k, v in codes.items() if v in SURVIVED]
        no_tests = sum(v in NO_TESTS for v in codes.values())
        equivalent = 0
        for k in sorted(surv, key=lambda s: (function_of(s), int(s.rpartition("_")[2]))):
            text = diff(k, path)
            why = equivalent_reason(k, text)
            equivalent += why is not None
            survivors.append((m, k, text, why))
        pending = sum(v in PENDING for v in codes.values())
        rows.append((m, dict(mutants=len(codes) - pending, killed=killed, survived=len(surv),
                             equivalent=equivalent, no_tests=no_tests, pending=pending)))
        for key in total:
            total[key] += rows[-1][1][key]

    def pct(a: int, b: int) -> str:
        return f"{100 * a / b:5.1f}%" if b else "    -"

    print(f"{'module':<16} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv.':>6} {'no test':>7}"
          f" {'score':>7} {'adjusted':>8}")
    for m, r in rows:
        if r is None:
            print(f"{m:<16} not run")
            continue
        print(f"{m:<16} {r['mutants']:>7} {r['killed']:>6} {r['survived']:>8} {r['equivalent']:>6} "
              f"{r['no_tests']:>7} {pct(r['killed'], r['mutants']):>7} "
              f"{pct(r['killed'], r['mutants'] - r['equivalent']):>8}"
              + (f"   ({r['pending']} not run)" if r["pending"] else ""))
    t = total
    print(f"{'all':<16} {t['mutants']:>7} {t['killed']:>6} {t['survived']:>8} {t['equivalent']:>6} "
          f"{t['no_tests']:>7} {pct(t['killed'], t['mutants']):>7} {pct(t['killed'], t['mutants'] - t['equivalent']):>8}")
    print("\nscore = killed / mutants; adjusted = killed / (mutants - equivalent); "
          "'no test': no selected test runs the function")
    gaps = [s for s in survivors if s[3] is None]
    if gaps:
        print(f"\nSurviving mutants ({len(gaps)}): no test fails on these")
        for m, k, text, _ in gaps:
            print(f"  {k}\n{text}")
    eq = [s for s in survivors if s[3] is not None]
    if eq:
        print(f"\nEquivalent or irrelevant survivors ({len(eq)}):")
        for m, k, text, why in eq:
            print(f"  {k}: {why}\n{text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="+", choices=list(FUNCTIONS), default=list(FUNCTIONS),
                    metavar="MODULE", help=f"default: all ({', '.join(FUNCTIONS)})")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel (default 2)")
    ap.add_argument("--report", action="store_true", help="print the last run's results; run nothing")
    ap.add_argument("--keep", action="store_true", help="keep mutants/ from the last run (default: start fresh)")
    ap.add_argument("--survivors", action="store_true",
                    help="rerun only the last run's surviving mutants (after adding tests; keeps mutants/)")
    args = ap.parse_args(argv)
    if args.survivors:
        names = [k for m in args.modules for k, v in results(m).items() if v in SURVIVED]
        if names:
            elapsed = run_mutmut(args.modules, args.max_children, fresh=False, names=names)
            print(f"mutmut run of {len(names)} survivors: {elapsed / 60:.1f} min\n")
    elif not args.report:
        elapsed = run_mutmut(args.modules, args.max_children, fresh=not args.keep)
        print(f"mutmut run: {elapsed / 60:.1f} min ({args.max_children} workers)\n")
    return report(args.modules)


if __name__ == "__main__":
    raise SystemExit(main())
