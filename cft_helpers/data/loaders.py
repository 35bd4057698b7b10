"""Loaders: a ``datasets:`` entry of the params -> normalised examples (train and held-out).

Sources (docs/ENGINEERING.md, "The offline world"):

- ``hub``: a hub id (tatsu-lab/alpaca, DAMO-NLP-MT/multialpaca, Open-Orca/OpenOrca, ...) is
  downloaded at its ``revision`` into the HF cache (:mod:`cft_helpers.hub`: one snapshot per
  entry, the files in ``data_files`` or the whole repository) and ``datasets.load_dataset`` reads
  the snapshot folder; a local folder laid out like the hub repository is read the same way,
  which is how the tests exercise this path offline. MULTIALPACA ships one ``<lang>.jsonl`` per
  language: give ``data_files: {fr: fr.jsonl, ...}`` and each file's rows get that language.
- ``local``: one JSON / JSONL / Parquet file.
- ``builtin``: our generator (cft_helpers.data.generator).

Every source goes through :func:`normalise_rows`, so a typo in a column mapping fails the same
way for all of them, naming the row and the field.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

from cft_helpers import hub
from cft_helpers.data.generator import FAMILY_SCHEMA, generate
from cft_helpers.data.schema import DataError, to_messages
from cft_helpers.data.validate import language_problem, read_rows
from cft_helpers.hub import HubRequest
from cft_helpers.params import BuiltinDataset, HubDataset, LocalDataset, Params

FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def normalise_rows(rows: Iterable[dict[str, Any]], *, name: str, schema: str,
                   columns: dict[str, str] | None = None, lang: str | None = None,
                   lang_column: str | None = None, source: str = "",
                   dropped: list[dict] | None = None) -> list[dict]:
    """Map columns, convert to messages and tag the language; ids are ``<name>-<row index>``.

    A row that does not fit raises ``DataError`` naming the row and field, unless ``dropped`` is
    a list: then the row is left out and ``{"row", "error"}`` appended to it (policy
    ``bad_rows: drop``; the counts go into the data report)."""
    columns = columns or {}
    out = []
    seen_ids: dict[str, int] = {}
    for i, raw in enumerate(rows):
        where = f"dataset {name!r} row {i}"
        try:
            row = dict(raw)
            for canonical, actual in columns.items():
                if actual not in raw:
                    raise DataError(f"{where}: column {actual!r} (mapped to {canonical!r}) not found; "
                                    f"columns are {sorted(raw)}", "missing_field")
                row[canonical] = raw[actual]
            row_lang = row.get(lang_column) if lang_column else (row.get("lang") or lang)
            if not row_lang or not isinstance(row_lang, str):
                raise DataError(f"{where}: no language tag (lang_column={lang_column!r}, lang={lang!r})",
                                "missing_language")
            bad_lang = language_problem({"lang": row_lang}, i, "lang")
            if bad_lang:
                raise DataError(f"{where}: field {lang_column or 'lang'!r}: {bad_lang['message']}", bad_lang["kind"])
            if "id" in row and row["id"] is not None:  # the source's own ids must be unique
                key = str(row["id"])
                if key in seen_ids:
                    raise DataError(f"{where}: field 'id': duplicate id {row['id']!r} (first at row {seen_ids[key]})",
                                    "duplicate_id")
                seen_ids[key] = i
            meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
            out.append({"id": f"{name}-{i:06d}", "lang": row_lang, "source": source,
                        "messages": to_messages(row, schema, where), "meta": meta})
        except DataError as exc:
            if dropped is None:
                raise
            dropped.append({"row": i, "kind": exc.kind, "error": str(exc)})
    return out


def dataset_request(path: str, revision: str | None = None, files: Iterable[str] | None = None) -> HubRequest:
    """The download of a hub dataset: the repository at ``revision``, only ``files`` (and its card,
    which names its configs) when the params list them, else every file. What :func:`load_hf`
    asks for, and ``python -m cft_helpers.fetch`` fetches."""
    files = sorted(set(files)) if files else None
    return HubRequest(path, "dataset", revision, (*files, "README.md") if files else None)


def _repo_files(data_files: Any) -> list[str] | None:
    """The repository files a ``data_files`` argument names (a file, a list, or split -> file(s))."""
    if data_files is None:
        return None
    values = data_files.values() if isinstance(data_files, dict) else [data_files]
    return [f for v in values for f in ([v] if isinstance(v, str) else v)]


def load_hf(path: str, *, name: str | None = None, data_files: Any = None, split: str = "train",
             revision: str | None = None, cache_dir: Path | None = None,
             trust_remote_code: bool = False) -> list[dict]:
    """Rows of one split through ``datasets.load_dataset``. A hub id is first downloaded (or found
    in the HF cache) at ``revision`` by :func:`cft_helpers.hub.snapshot` and read as the local
    folder it lands in, so the commit it resolved to is known and an offline rerun reads the same
    files; a packaged builder ("json", "parquet") or a local folder is read as is."""
    import datasets

    if hub.is_hub_id(path):
        try:
            path = str(hub.snapshot(dataset_request(path, revision, _repo_files(data_files))).folder)
        except hub.HubError as exc:
            raise DataError(f"dataset {path!r}: {exc}") from exc
        revision = None  # the folder is that revision
    kwargs: dict[str, Any] = {"split": split}
    if name:
        kwargs["name"] = name
    if data_files is not None:
        kwargs["data_files"] = data_files
    if revision:
        kwargs["revision"] = revision
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    try:
        ds = datasets.load_dataset(path, **kwargs)
    except FileNotFoundError as exc:
        raise DataError(f"dataset {path!r}: {exc}") from exc
    return ds.to_list()


def hub_path(params: Params, path: str) -> str:
    """A hub id as is; a path to a local folder laid out like a hub repository, resolved."""
    return str(params.path(path)) if path.startswith((".", "/", "~")) else path


def read_table(file: Path, params: Params | None = None) -> list[dict]:
    """Raw rows of a local JSON / JSONL / Parquet file (format from the suffix)."""
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise DataError(f"{file}: cannot tell the format from the suffix; valid: {sorted(FORMATS)}")
    cache = params.cache.datasets if params is not None else None
    return load_hf(fmt, data_files=str(file), cache_dir=cache)


def load_hub(name: str, spec: HubDataset, params: Params, dropped: list[dict] | None = None) -> list[dict]:
    """Rows of a hub dataset (or a local folder laid out like its repository), normalised."""
    if spec.path is None:  # Params leaves such entries out; a caller that built its own must not get here
        raise DataError(f"datasets.{name}.path is not set; set it to a hub id or a local folder")
    path = hub_path(params, spec.path)
    cache = params.cache.datasets
    common = dict(name=name, schema=spec.schema_, columns=spec.columns, source=f"hub:{spec.path}",
                  dropped=dropped)
    if hub.is_hub_id(path):  # one download for every file of the entry (fetch asks for the same)
        try:
            path = str(hub.snapshot(dataset_request(path, spec.revision, (spec.data_files or {}).values())).folder)
        except hub.HubError as exc:
            raise DataError(f"datasets.{name}: {exc}") from exc
        spec = spec.model_copy(update={"revision": None})  # the folder is that revision
    if spec.data_files:
        rows: list[dict] = []
        for lang, file in spec.data_files.items():
            part = load_hf(path, name=spec.name, data_files={spec.split: file}, split=spec.split,
                            revision=spec.revision, cache_dir=cache,
                            trust_remote_code=spec.trust_remote_code)
            rows += [{**r, "lang": lang} for r in part]
        return normalise_rows(rows, **common)
    rows = load_hf(path, name=spec.name, split=spec.split, revision=spec.revision, cache_dir=cache,
                    trust_remote_code=spec.trust_remote_code)
    return normalise_rows(rows, lang=spec.lang, lang_column=spec.lang_column, **common)


def load_local(name: str, spec: LocalDataset, params: Params, dropped: list[dict] | None = None) -> list[dict]:
    """Rows of a local JSON / JSONL / Parquet file, normalised."""
    file = params.path(spec.path)
    fmt = spec.format
    if fmt == "auto":
        fmt = FORMATS.get(file.suffix.lower())
        if fmt is None:
            raise DataError(f"datasets.{name}.path: cannot tell the format of {file.name!r}; set "
                            f"format: to one of json, jsonl, parquet")
    fmt = "json" if fmt == "jsonl" else fmt
    if fmt == "json":  # our reader: a malformed or non-UTF-8 line is named by its number
        rows = _read_json_rows(file, name, dropped)
    else:
        rows = load_hf(fmt, data_files=str(file), cache_dir=params.cache.datasets)
    return normalise_rows(rows, name=name, schema=spec.schema_, columns=spec.columns,
                          lang=spec.lang, lang_column=spec.lang_column, source=f"local:{spec.path}",
                          dropped=dropped)


def _read_json_rows(file: Path, name: str, dropped: list[dict] | None) -> list[dict]:
    """Rows of a JSONL file (or a JSON array); a line that is not a JSON object raises DataError
    naming the file and line, or with ``dropped`` (policy ``bad_rows: drop``) is counted there."""
    rows = []
    for line, row, problem in read_rows(Path(file)):
        if problem is None:
            rows.append(row)
            continue
        message = f"dataset {name!r}: {file}:{line}: {problem['message']}"
        if dropped is None:
            raise DataError(message, problem["kind"])
        dropped.append({"row": None, "line": line, "kind": problem["kind"], "error": message})
    return rows


def load_builtin(name: str, spec: BuiltinDataset, seed: int, split: str, n: int) -> list[dict]:
    rows = generate(spec.family, spec.langs, n=n, split=split, seed=seed, stream=spec.stream)
    out = normalise_rows(rows, name=f"{name}-{split}", schema=FAMILY_SCHEMA[spec.family],
                         source=f"builtin:{spec.family}")
    return out


def load_splits(name: str, params: Params, dropped: list[dict] | None = None) -> dict[str, list[dict]]:
    """The train and held-out examples of one dataset entry of the params.

    Built-in data draws its held-out rows from instances never used for training. Hub and local
    data set aside ``n_heldout`` rows chosen with the params seed before taking ``n`` for
    training, so the two never overlap.
    """
    spec = params.datasets[name]
    if isinstance(spec, BuiltinDataset):
        n = spec.n if spec.n is not None else 1000
        return {"train": load_builtin(name, spec, params.seed, "train", n),
                "heldout": load_builtin(name, spec, params.seed, "heldout", spec.n_heldout)
                if spec.n_heldout else []}
    if spec.bad_rows == "drop" and dropped is None:
        dropped = []  # the caller does not count them: still drop, as the params ask
    drops = dropped if spec.bad_rows == "drop" else None
    if isinstance(spec, HubDataset):
        rows = load_hub(name, spec, params, drops)
    else:
        rows = load_local(name, spec, params, drops)
    if not rows:
        raise DataError(f"dataset {name!r} has no rows")
    order = list(range(len(rows)))
    random.Random(f"{params.seed}|{name}|split").shuffle(order)
    held = [rows[i] for i in sorted(order[: spec.n_heldout])]
    rest = order[spec.n_heldout:]
    if spec.n is not None:
        if spec.n > len(rest):
            raise DataError(f"datasets.{name}.n = {spec.n} but only {len(rest)} rows remain after "
                            f"{spec.n_heldout} held-out rows")
        rest = rest[: spec.n]
    return {"train": [rows[i] for i in sorted(rest)], "heldout": held}
