"""One conversational schema for every source: ALPACA, OpenOrca, chat messages.

A normalised example is::

    {"id": "multialpaca-00012", "lang": "fr", "source": "builtin:general",
     "messages": [{"role": "system", ...}?, {"role": "user", ...}, {"role": "assistant", ...}],
     "meta": {...}}

The assistant turn is the response the loss is computed on (Phase-1/Phase-2 training is
completion-only, docs/METHODS.md, "The two phases and the arms" / issue 2).

Source schemas (field names as the datasets spell them; ``columns`` in the params maps them when
a file names them differently):

- ``alpaca``: instruction, input, output (ALPACA, MULTIALPACA). The user turn is the
  instruction, then a blank line and the input when there is one (ALPACA's own prompt order).
- ``orca``: system_prompt, question, response (OpenOrca, MOPENORCA).
- ``messages``: messages, a list of {role, content} ending with the assistant's turn.
"""

from __future__ import annotations

from typing import Any

SCHEMA_FIELDS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output"),
    "orca": ("system_prompt", "question", "response"),
    "messages": ("messages",),
}
# Fields a row may lack (an ALPACA row without input, an OpenOrca row without system prompt).
OPTIONAL_FIELDS = {"input", "system_prompt"}


class DataError(ValueError):
    """A dataset row or file does not fit its schema; the message names the row and field.

    ``kind`` says what is wrong in the vocabulary of ``cft_helpers.data.validate`` (missing_field,
    empty, wrong_type, bad_messages, missing_language, unknown_language, duplicate_id,
    malformed_json, ...; "other" for whole-file problems): the data report counts dropped rows by it.
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


def to_messages(row: dict[str, Any], schema: str, where: str = "") -> list[dict[str, str]]:
    """Convert one source row (already column-mapped) to chat messages."""
    if schema not in SCHEMA_FIELDS:
        raise DataError(f"unknown schema {schema!r}; valid: {sorted(SCHEMA_FIELDS)}")
    for f in SCHEMA_FIELDS[schema]:
        if f not in OPTIONAL_FIELDS and f not in row:
            raise DataError(f"{where}: missing field {f!r} for schema {schema!r} "
                            f"(row has {sorted(row)}); map it with 'columns:' in the params", "missing_field")
    if schema == "alpaca":
        instruction = _text(row, "instruction", where)
        input_ = _text(row, "input", where, optional=True)
        user = instruction if not input_ else f"{instruction}\n\n{input_}"
        return [{"role": "user", "content": user},
                {"role": "assistant", "content": _text(row, "output", where)}]
    if schema == "orca":
        system = _text(row, "system_prompt", where, optional=True)
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": _text(row, "question", where)},
                       {"role": "assistant", "content": _text(row, "response", where)}]
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: field 'messages' must be a non-empty list, got {type(msgs).__name__}",
                        "bad_messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{i}] must have role system/user/assistant, got {m!r}",
                            "bad_messages")
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}].content must be a string", "bad_messages")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's response", "bad_messages")
    return out


def _text(row: dict, field: str, where: str, optional: bool = False) -> str:
    value = row.get(field)
    if value is None:
        if optional:
            return ""
        raise DataError(f"{where}: field {field!r} is empty", "empty")
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be text, got {type(value).__name__}", "wrong_type")
    value = value.strip()
    if not value and not optional:
        raise DataError(f"{where}: field {field!r} is empty", "empty")
    return value


def prompt_completion(example: dict) -> dict:
    """Split a normalised example into TRL's conversational prompt / completion.

    Everything before the last assistant turn is the prompt; the loss is on the completion only.
    """
    msgs = example["messages"]
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}
