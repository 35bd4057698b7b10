"""The built-in dataset generator: the paper's data structure, offline and licence-clean.

The paper's datasets (ALPACA, MULTIALPACA, OPENORCA, MOPENORCA) are on the hub, which no machine
here reaches. This module writes small stand-ins with the same *structure*:

- family ``general`` in English is the ALPACA-like Phase-1 set; the same family in the 11
  MULTIALPACA languages is its multilingual counterpart (same instructions, other languages:
  the paper's *similar* pair);
- family ``reasoning`` (system prompt, passage, step-by-step answer) is the Instruct /
  OpenOrca-like set of *different* tasks (the *dissimilar* pair with MULTIALPACA).

Rows come out in the source schemas (``general``: ALPACA's instruction/input/output;
``reasoning``: OpenOrca's system_prompt/question/response) and go through the same normaliser
as hub data. Every row carries ``meta`` with its task, arguments and a short verifiable
``answer``, so held-out rows can be scored and any row re-rendered in English
(:func:`render_in_language`, used for English replay).

Held-out rows are disjoint from training rows by construction: each task instance (e.g.
"sum of 17 and 25") is assigned to a split by a fixed hash of its key, independent of the seed
and the language, so no instance is ever trained on in any language and evaluated in another.

    rows = generate("general", ["fr", "de"], n=20, split="train", seed=0)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

from cft_helpers.data.lexicon import LANGUAGES

# Bump when templates or sampling change: prepared data of an older version is then rebuilt.
GENERATOR_VERSION = 1
HELDOUT_FRACTION = 0.2
SPLITS = ("train", "heldout")


def split_of(key: str) -> str:
    """The split an instance belongs to: a fixed hash of its key (seed- and language-free)."""
    h = int(hashlib.sha1(f"cft-heldout|{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if h < HELDOUT_FRACTION else "train"


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    # Draws the instance arguments; ``space`` lists them all when the space is small.
    sample: Callable[[random.Random], tuple]
    render: Callable[[dict, tuple, int], dict]
    space: tuple[tuple, ...] | None = None


def _distinct(rng: random.Random, k: int, lo: int = 1, hi: int = 99) -> tuple:
    return tuple(rng.sample(range(lo, hi + 1), k))


def _alpaca(instruction: str, input_: str, output: str, answer: str) -> dict:
    return {"instruction": instruction, "input": input_, "output": output, "answer": answer}


def _orca(lex: dict, variant: int, question: str, reasoning: str, answer: str) -> dict:
    response = reasoning + "\n" + lex["answer"].format(x=answer)
    return {"system_prompt": lex["system"][variant % len(lex["system"])], "question": question,
            "response": response, "answer": answer}


# --------------------------------------------------------------------------- general family


def _r_sum(lex, args, variant):
    a, b = args
    return _alpaca(lex["sum_instruction"], lex["pair_input"].format(a=a, b=b),
                   lex["sum_output"].format(a=a, b=b, c=a + b), str(a + b))


def _r_product(lex, args, variant):
    a, b = args
    return _alpaca(lex["product_instruction"], lex["pair_input"].format(a=a, b=b),
                   lex["product_output"].format(a=a, b=b, c=a * b), str(a * b))


def _r_largest(lex, args, variant):
    m = max(args)
    return _alpaca(lex["largest_instruction"], lex["list_sep"].join(map(str, args)),
                   lex["largest_output"].format(m=m), str(m))


def _r_sort(lex, args, variant):
    s = lex["list_sep"].join(map(str, sorted(args)))
    return _alpaca(lex["sort_instruction"], lex["list_sep"].join(map(str, args)),
                   lex["sort_output"].format(sorted=s), s)


def _r_next_day(lex, args, variant):
    (d,) = args
    day, nxt = lex["days"][d], lex["days"][(d + 1) % 7]
    return _alpaca(lex["next_day_instruction"].format(day=day), "",
                   lex["next_day_output"].format(day=day, next=nxt), nxt)


def _r_opposite(lex, args, variant):
    pair, direction = args
    w, o = lex["opposites"][pair][direction], lex["opposites"][pair][1 - direction]
    return _alpaca(lex["opposite_instruction"].format(w=w), "",
                   lex["opposite_output"].format(w=w, o=o), o)


# --------------------------------------------------------------------------- reasoning family


def _boxes(lex, values: dict) -> str:
    return "\n".join(lex["box_line"].format(k=k, v=v) for k, v in values.items())


def _r_total(lex, args, variant):
    a, b, c3 = args
    q = f"{lex['read']}\n\n{_boxes(lex, {'A': a, 'B': b, 'C': c3})}\n\n{lex['q_total']}"
    return _orca(lex, variant, q, lex["r_total"].format(a=a, b=b, c=a + b), str(a + b))


def _r_diff(lex, args, variant):
    a, b = max(args), min(args)
    q = f"{lex['read']}\n\n{_boxes(lex, {'A': a, 'B': b})}\n\n{lex['q_diff']}"
    return _orca(lex, variant, q, lex["r_diff"].format(a=a, b=b, c=a - b), str(a - b))


def _r_lookup(lex, args, variant):
    *vals, which = args
    boxes = dict(zip("ABCD", vals))
    k = "ABCD"[which]
    q = f"{lex['read']}\n\n{_boxes(lex, boxes)}\n\n{lex['q_lookup'].format(k=k)}"
    return _orca(lex, variant, q, lex["r_lookup"].format(k=k, v=boxes[k]), str(boxes[k]))


def _r_parity(lex, args, variant):
    (n,) = args
    label = lex["even"] if n % 2 == 0 else lex["odd"]
    return _orca(lex, variant, lex["q_parity"].format(n=n),
                 lex["r_parity"].format(n=n, r=n % 2, label=label), label)


def _r_sentiment(lex, args, variant):
    polarity, idx = args
    review = lex["reviews_positive" if polarity else "reviews_negative"][idx]
    label = lex["positive" if polarity else "negative"]
    return _orca(lex, variant, lex["q_sentiment"].format(review=review),
                 lex["r_sentiment"].format(review=review, label=label), label)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("sum", "general", lambda r: (r.randint(2, 99), r.randint(2, 99)), _r_sum),
        Task("product", "general", lambda r: (r.randint(2, 12), r.randint(2, 12)), _r_product,
             space=tuple((a, b) for a in range(2, 13) for b in range(2, 13))),
        Task("largest", "general", lambda r: _distinct(r, 4), _r_largest),
        Task("sort", "general", lambda r: _distinct(r, 4), _r_sort),
        Task("next_day", "general", lambda r: (r.randrange(7),), _r_next_day,
             space=tuple((d,) for d in range(7))),
        Task("opposite", "general", lambda r: (r.randrange(8), r.randrange(2)), _r_opposite,
             space=tuple((p, d) for p in range(8) for d in range(2))),
        Task("box_total", "reasoning", lambda r: _distinct(r, 3, 1, 60), _r_total),
        Task("box_diff", "reasoning", lambda r: _distinct(r, 2, 1, 60), _r_diff),
        Task("box_lookup", "reasoning", lambda r: _distinct(r, 4, 1, 60) + (r.randrange(4),),
             _r_lookup),
        Task("parity", "reasoning", lambda r: (r.randint(10, 999),), _r_parity),
        Task("sentiment", "reasoning", lambda r: (r.randrange(2), r.randrange(4)), _r_sentiment,
             space=tuple((p, i) for p in range(2) for i in range(4))),
    ]
}

FAMILY_SCHEMA = {"general": "alpaca", "reasoning": "orca"}


def tasks_of(family: str) -> list[Task]:
    if family not in FAMILY_SCHEMA:
        raise ValueError(f"unknown family {family!r}; valid: {sorted(FAMILY_SCHEMA)}")
    return [t for t in TASKS.values() if t.family == family]


def instance_key(task: str, args: tuple) -> str:
    return task + "|" + ",".join(map(str, args))


def _draw(task: Task, split: str, rng: random.Random) -> tuple | None:
    if task.space is not None:
        pool = [a for a in task.space if split_of(instance_key(task.name, a)) == split]
        return rng.choice(pool) if pool else None
    for _ in range(1000):  # rejection sampling: ~20% / 80% acceptance
        args = task.sample(rng)
        if split_of(instance_key(task.name, args)) == split:
            return args
    raise RuntimeError(f"could not draw a {split} instance of task {task.name!r}")


def render_in_language(meta: dict, lang: str) -> dict:
    """Render a generated row's instance (its ``meta``) in another language, e.g. English.

    The parallel row has the same task, arguments and prompt variant: this is how the English
    counterpart of a multilingual Phase-2 instruction is obtained (English replay, ER_10).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; valid: {sorted(LANGUAGES)}")
    task = TASKS[meta["task"]]
    row = task.render(LANGUAGES[lang], tuple(meta["args"]), meta["variant"])
    answer = row.pop("answer")
    return {**row, "meta": {**meta, "answer": answer, "lang": lang}}


def generate(family: str, langs: list[str], n: int, split: str = "train", seed: int = 0,
             stream: int = 0) -> list[dict]:
    """``n`` rows of one task family in the source schema, languages in equal proportions.

    Deterministic in (family, langs, n, split, seed, stream). Row i gets language i mod L;
    tasks come in shuffled rounds of all tasks, so both are balanced; then rows are shuffled.
    Each row has a ``lang`` and a ``meta`` dict (task, args, key, variant, answer).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise ValueError(f"unknown language(s) {unknown}; valid: {sorted(LANGUAGES)}")
    rng = random.Random(f"{seed}|{family}|{split}|{stream}")
    tasks = tasks_of(family)
    rows: list[dict] = []
    order: list[Task] = []
    for i in range(n):
        lang = langs[i % len(langs)]
        if not order:  # tasks in shuffled rounds: balanced over the set, whatever the languages
            order = rng.sample(tasks, len(tasks))
        first = order.pop()
        # Tasks whose small instance space has nothing in this split are skipped.
        for task in [first] + [t for t in tasks if t is not first]:
            args = _draw(task, split, rng)
            if args is not None:
                break
        variant = rng.randrange(2)
        meta = {"family": family, "task": task.name, "args": list(args), "variant": variant,
                "key": instance_key(task.name, args), "split": split}
        row = task.render(LANGUAGES[lang], args, variant)
        meta["answer"] = row.pop("answer")
        rows.append({**row, "lang": lang, "meta": meta})
    rng.shuffle(rows)
    return rows
