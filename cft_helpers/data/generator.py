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

Rows also state *verifiable instructions* of IFEval's kinds (``INSTRUCTIONS``: a title in
double angular brackets, a word limit, one sentence, an end phrase, quotation marks, lower or
capital letters, a postscript, a highlighted answer), one per line after the task's text, and
their responses follow them. Each family states them as its kind of data does
(docs/METHODS.md, "The offline world's instructions"): the ``general`` family, like ALPACA,
on a third of its rows, one of ALPACA's kinds (title, length); the ``reasoning`` family, like an
instruction-tuned set, on every row, one or two of IFEval's format kinds. The same instructions
are stated in every language. ``meta["instructions"]`` records them language-free, and
:func:`checker_kwargs` gives lm-eval's IFEval checker for each, so any answer can be verified.

Held-out rows are disjoint from training rows by construction: each task instance (e.g.
"sum of 17 and 25") is assigned to a split by a fixed hash of its key, independent of the seed
and the language, so no instance is ever trained on in any language and evaluated in another.

    rows = generate("general", ["fr", "de"], n=20, split="train", seed=0)
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Callable

from cft_helpers.data.lexicon import LANGUAGES

# Bump when templates or sampling change: prepared data of an older version is then rebuilt.
# 2: verifiable instructions stated in prompts (INSTRUCTIONS).
GENERATOR_VERSION = 2
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


# --------------------------------------------------------------------------- verifiable instructions


@dataclass(frozen=True)
class Instruction:
    """A verifiable instruction of one of IFEval's kinds: the lexicon states it (``if_<name>``),
    :func:`apply_instructions` makes a response follow it, and lm-eval's IFEval checker
    ``checker`` (an ``instructions_registry`` id) verifies it with :func:`checker_kwargs`."""

    name: str
    checker: str
    conflicts: tuple[str, ...] = ()
    families: tuple[str, ...] = ("general", "reasoning")   # whose responses it can apply to


INSTRUCTIONS: dict[str, Instruction] = {i.name: i for i in [
    Instruction("title", "detectable_format:title"),
    Instruction("max_words", "length_constraints:number_words"),
    # a single sentence: the general family's one-sentence answers (reasoning answers have two lines)
    Instruction("one_sentence", "length_constraints:number_sentences",
                conflicts=("title", "postscript", "end_phrase"), families=("general",)),
    Instruction("end_phrase", "startend:end_checker", conflicts=("one_sentence",)),
    Instruction("quotation", "startend:quotation"),
    Instruction("lowercase", "change_case:english_lowercase", conflicts=("capital",)),
    Instruction("capital", "change_case:english_capital", conflicts=("lowercase",)),
    Instruction("postscript", "detectable_content:postscript", conflicts=("one_sentence",)),
    Instruction("highlight", "detectable_format:number_highlighted_sections"),
]}

# Which kinds each family's training rows state, and how often (decided before any model was
# scored on them; docs/METHODS.md, "The offline world's instructions"):
# - general (ALPACA-like, and MULTIALPACA-like in every language): ALPACA's own kinds of
#   constraint, a title to give or a length to keep, on a third of the rows, one at a time;
# - reasoning (Instruct-like): the format instructions of IFEval's kinds that instruction-tuned
#   sets carry, on every row, a second one on half of them.
FAMILY_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "general": ("title", "max_words", "one_sentence"),
    "reasoning": ("end_phrase", "quotation", "lowercase", "capital", "postscript", "highlight", "title",
                  "max_words"),
}
INSTRUCTION_RATE = {"general": (1 / 3, 0.0), "reasoning": (1.0, 0.5)}  # P(first), P(second | first)
# Word limits a ``max_words`` instruction states, per family: above every compliant response of
# the family in every language (tests/test_generator.py checks it with lm-eval's own counter).
WORD_LIMITS = {"general": (20, 30), "reasoning": (50, 60)}
POSTSCRIPT_MARKER = "P.S."


def compatible(kinds: list[str], family: str) -> list[str]:
    """The instruction kinds that can join ``kinds`` on a row of ``family`` (no conflict, not
    already stated, applicable to the family's responses)."""
    taken = set(kinds)
    blocked = taken | {c for k in kinds for c in INSTRUCTIONS[k].conflicts}
    return [name for name, i in INSTRUCTIONS.items()
            if name not in blocked and family in i.families and not taken & set(i.conflicts)]


def draw_instruction(kind: str, family: str, rng: random.Random) -> dict:
    """One stated instruction, language-free: its kind and the choices it states."""
    out: dict = {"kind": kind}
    if kind == "max_words":
        out["n"] = rng.choice(WORD_LIMITS[family])
    elif kind == "end_phrase":
        out["phrase"] = rng.randrange(2)
    return out


def _training_instructions(family: str, rng: random.Random) -> list[dict]:
    """The instructions a training row of ``family`` states (``FAMILY_INSTRUCTIONS``)."""
    first, second = INSTRUCTION_RATE[family]
    if rng.random() >= first:
        return []
    kinds = [rng.choice(FAMILY_INSTRUCTIONS[family])]
    if rng.random() < second:
        more = [k for k in compatible(kinds, family) if k in FAMILY_INSTRUCTIONS[family]]
        if more:
            kinds.append(rng.choice(more))
    return [draw_instruction(k, family, rng) for k in kinds]


def checker_kwargs(instruction: dict, lang: str) -> dict:
    """The kwargs of lm-eval's IFEval checker for a stated instruction in language ``lang``."""
    kind = instruction["kind"]
    if kind == "max_words":
        return {"relation": "less than", "num_words": instruction["n"]}
    if kind == "one_sentence":
        return {"relation": "less than", "num_sentences": 2}
    if kind == "end_phrase":
        return {"end_phrase": LANGUAGES[lang]["end_phrases"][instruction["phrase"]]}
    if kind == "postscript":
        return {"postscript_marker": POSTSCRIPT_MARKER}
    if kind == "highlight":
        return {"num_highlights": 1}
    return {}


def instruction_text(instruction: dict, lex: dict) -> str:
    """How a prompt states ``instruction`` in the language of ``lex``."""
    kind = instruction["kind"]
    args = {"n": instruction.get("n")} if kind == "max_words" else (
        {"phrase": lex["end_phrases"][instruction["phrase"]]} if kind == "end_phrase" else {})
    return lex[f"if_{kind}"].format(**args)


def _highlight(response: str, answer: str) -> str:
    """``*answer*`` at the answer's last occurrence (the whole response when it does not occur)."""
    at = response.rfind(answer) if answer else -1
    if at < 0:
        return f"*{response}*"
    return f"{response[:at]}*{answer}*{response[at + len(answer):]}"


def apply_instructions(response: str, answer: str, instructions: list[dict], lex: dict) -> str:
    """The response that follows every stated instruction: the answer highlighted, a title line,
    a postscript, the end phrase, then the letter case of it all, then quotation marks around
    it (word and sentence limits hold for the family's responses as they are)."""
    kinds = {i["kind"]: i for i in instructions}
    if "highlight" in kinds:
        response = _highlight(response, answer)
    if "title" in kinds:
        response = f"<<{lex['title_word']}>>\n{response}"
    if "postscript" in kinds:
        response = f"{response}\n{POSTSCRIPT_MARKER} {lex['postscript_note']}"
    if "end_phrase" in kinds:
        response = f"{response}\n{lex['end_phrases'][kinds['end_phrase']['phrase']]}"
    if "lowercase" in kinds:
        response = response.lower()
    if "capital" in kinds:
        response = response.upper()
    if "quotation" in kinds:
        response = f'"{response}"'
    return response


def state_instructions(row: dict, instructions: list[dict], lex: dict) -> dict:
    """A rendered row (source schema) whose prompt states ``instructions``, one per line after
    the task's text, and whose response follows them."""
    if not instructions:
        return row
    stated = "\n".join(instruction_text(i, lex) for i in instructions)
    out = dict(row)
    if "instruction" in out:  # ALPACA schema: after the instruction, before the input
        out["instruction"] = f"{out['instruction']}\n{stated}"
        out["output"] = apply_instructions(out["output"], out["answer"], instructions, lex)
    else:                      # OpenOrca schema: after the question
        out["question"] = f"{out['question']}\n\n{stated}"
        out["response"] = apply_instructions(out["response"], out["answer"], instructions, lex)
    return out


def count_words(text: str) -> int:
    """Words as IFEval counts them (nltk's ``RegexpTokenizer(r"\\w+")``: runs of word characters)."""
    return len(re.findall(r"\w+", text))


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

    The parallel row has the same task, arguments, prompt variant and stated instructions: this
    is how the English counterpart of a multilingual Phase-2 instruction is obtained (English
    replay, ER_10).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; valid: {sorted(LANGUAGES)}")
    task = TASKS[meta["task"]]
    lex = LANGUAGES[lang]
    row = state_instructions(task.render(lex, tuple(meta["args"]), meta["variant"]),
                             meta.get("instructions", []), lex)
    answer = row.pop("answer")
    return {**row, "meta": {**meta, "answer": answer, "lang": lang}}


def generate(family: str, langs: list[str], n: int, split: str = "train", seed: int = 0,
             stream: int = 0) -> list[dict]:
    """``n`` rows of one task family in the source schema, languages in equal proportions.

    Deterministic in (family, langs, n, split, seed, stream). Row i gets language i mod L;
    tasks come in shuffled rounds of all tasks, so both are balanced; then rows are shuffled.
    Each row has a ``lang`` and a ``meta`` dict (task, args, key, variant, answer, and the
    instructions its prompt states).
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
        instructions = _training_instructions(family, rng)
        meta = {"family": family, "task": task.name, "args": list(args), "variant": variant,
                "key": instance_key(task.name, args), "split": split, "instructions": instructions}
        row = state_instructions(task.render(LANGUAGES[lang], args, variant), instructions, LANGUAGES[lang])
        meta["answer"] = row.pop("answer")
        rows.append({**row, "lang": lang, "meta": meta})
    rng.shuffle(rows)
    return rows
