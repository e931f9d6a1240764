"""Author corpora: load, check, order and split the messages HuLM reads.

A corpus is a table with one message a row: its author, its text, optionally its time, its id and a label.
`load_corpus` reads it from a file (CSV, TSV, JSON Lines, Parquet), a folder of such files or one saved with
`datasets.save_to_disk`, a pandas DataFrame, a `datasets.Dataset`, or a `NamedDataset` (a Hub dataset or a local
dataset folder, read with `datasets.load_dataset`), and returns a `Corpus`: a canonical frame with
each author's messages contiguous and in time order, the label vocabulary, and a `DataReport` that counts
every message kept or dropped.

Ordering rule (within one author; authors keep the order of their first row in the source):
  1. messages with a timestamp come first, by time in UTC (naive times are taken as UTC);
  2. messages without a timestamp follow the timed ones (in the SemEval tweets, the untimed labelled tweet is
     the author's newest);
  3. ties, and the untimed messages among themselves, go by message id: numerically when every id is a
     non-negative integer (or a string of digits), else as strings; messages without an id after those with;
  4. remaining ties keep source (file) order.

Timestamps: ISO-8601 strings ("2015-04-15 17:32:12", "2023-06-10T15:27:16+08:00") or datetime values, parsed to UTC;
null / NaN is "no time"; anything else (epoch numbers included) is an error.

Bad input raises `CorpusError` naming the source, the row (a file's line, a frame's index, a dataset's row)
and the column. Messages that cannot be modelled (missing, empty, whitespace-only, not text) are skipped and
counted in the report, never silently lost.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TASKS = ("lm", "message", "author")
SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq")

# SemEval-2013 sentiment has five label strings for three classes (the sentiment task, eval/tasks.py).
SEMEVAL_SENTIMENT_ALIASES = {"objective": "neutral", "objective-OR-neutral": "neutral"}

# Text some tools write for a missing value: as a class name it would silently become a class of its own.
_MISSING_MARKERS = {"nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "<NA>", "#N/A"}


class CorpusError(ValueError):
    """Bad corpus input; the message names the source, the row and the column where known."""

    def __init__(self, source: Any, problem: str, *, row: str | None = None, column: str | None = None):
        self.source, self.row, self.column, self.problem = str(source), row, column, problem
        where = [self.source] + ([row] if row else []) + ([f"column '{column}'"] if column else [])
        super().__init__(", ".join(where) + ": " + problem)


class CorpusFileNotFoundError(CorpusError, FileNotFoundError):
    """The corpus path does not exist (also a FileNotFoundError, for callers that catch that)."""


@dataclass(frozen=True)
class NamedDataset:
    """A corpus `datasets.load_dataset` reads by name: a dataset on the Hub ("user/name", downloaded on request) or a
    local dataset folder (its data files, split by their names as `datasets` splits them); `config` and `split` as
    `load_dataset` takes them."""

    name: str
    config: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        return self.name + (f" ({self.config})" if self.config else "") + f" [{self.split}]"


@dataclass(frozen=True)
class ColumnNames:
    """Which source column holds each field. None turns an optional field off."""

    user_id: str = "user_id"
    message: str = "message"
    timestamp: str | None = "timestamp"
    label: str | None = "label"
    message_id: str | None = "message_id"


@dataclass
class DataReport:
    """What happened to every author, message, label and token between the source and the model's input."""

    source: str
    authors_kept: int = 0
    authors_dropped: dict[str, int] = field(default_factory=dict)
    messages_read: int = 0
    messages_kept: int = 0
    messages_dropped: dict[str, int] = field(default_factory=dict)
    messages_truncated: int = 0  # every token removed by max_blocks
    messages_cut: int = 0  # some tokens removed by max_blocks
    labels_read: int = 0
    labels_kept: int = 0
    labels_dropped: dict[str, int] = field(default_factory=dict)
    labels_truncated: int = 0
    tokens_kept: int = 0
    tokens_truncated: int = 0
    examples: int = 0
    blocks: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def reasons(d: dict[str, int]) -> str:
            return " (" + "; ".join(f"{n:,} {why}" for why, n in d.items()) + ")" if d else ""

        lines = [
            f"data report: {self.source}",
            f"  authors : {self.authors_kept:,} kept, {sum(self.authors_dropped.values()):,} dropped"
            + reasons(self.authors_dropped),
            f"  messages: {self.messages_read:,} read, {self.messages_kept:,} kept, "
            f"{sum(self.messages_dropped.values()):,} dropped" + reasons(self.messages_dropped)
            + f", {self.messages_truncated:,} truncated away, {self.messages_cut:,} cut",
            f"  labels  : {self.labels_read:,} read, {self.labels_kept:,} kept, "
            f"{sum(self.labels_dropped.values()):,} dropped" + reasons(self.labels_dropped)
            + f", {self.labels_truncated:,} truncated",
        ]
        if self.tokens_kept or self.examples:
            lines.append(f"  tokens  : {self.tokens_kept:,} kept, {self.tokens_truncated:,} truncated")
            lines.append(f"  examples: {self.examples:,}" + (f" ({self.blocks:,} blocks)" if self.blocks else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class Corpus:
    """Messages ready for tokenization.

    `frame` columns: user_id (str), message_id (str or None), timestamp (UTC, NaT where missing), message (str),
    label (float: class id or regression value; NaN = no label; an author task repeats the author's label on
    every row). Rows are grouped by author and ordered by the module's ordering rule.
    """

    frame: pd.DataFrame
    source: str
    task: str = "lm"
    id2label: dict[int, str] | None = None
    regression: bool = False
    report: DataReport = None  # type: ignore[assignment]

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.id2label is None else {name: i for i, name in self.id2label.items()}

    @property
    def authors(self) -> list[str]:
        return list(dict.fromkeys(self.frame["user_id"]))

    def __len__(self) -> int:
        return len(self.frame)

    def fingerprint(self) -> str:
        """A hash of everything tokenization depends on: texts, their order, authors, ids and labels."""
        cols = ["user_id", "message_id", "message", "label"]
        rows = pd.util.hash_pandas_object(self.frame[cols].astype(object), index=False).to_numpy()
        meta = json.dumps([self.task, self.regression, self.id2label], sort_keys=True).encode()
        return hashlib.sha256(rows.tobytes() + meta).hexdigest()

    def _dropped_note(self) -> list[str]:
        """What reading the whole corpus dropped, for the reports of its parts (the counts are the corpus's)."""
        dropped = {**self.report.authors_dropped, **self.report.messages_dropped}
        if not dropped:
            return []
        reasons = "; ".join(f"{n:,} {why}" for why, n in {**self.report.messages_dropped}.items())
        authors = "; ".join(f"{n:,} {why}" for why, n in self.report.authors_dropped.items())
        parts = [f"{sum(self.report.messages_dropped.values()):,} messages ({reasons})" if reasons else "",
                 f"{sum(self.report.authors_dropped.values()):,} authors ({authors})" if authors else ""]
        return [f"reading {self.report.source} dropped " + " and ".join(p for p in parts if p)]

    def subset(self, authors: list[str], name: str) -> Corpus:
        """The corpus restricted to `authors` (in this corpus's order), with a report of its own."""
        frame = self.frame[self.frame["user_id"].isin(set(authors))].reset_index(drop=True)
        labels = frame["label"].notna()
        n_labels = {"lm": 0, "message": int(labels.sum()), "author": frame["user_id"].nunique()}[self.task]
        report = DataReport(
            source=f"{self.source} [{name}]", authors_kept=frame["user_id"].nunique(), messages_read=len(frame),
            messages_kept=len(frame), labels_read=n_labels, labels_kept=n_labels,
            notes=list(self.report.notes) + self._dropped_note(),  # what reading the corpus found holds for its parts
        )
        return replace(self, frame=frame, source=report.source, report=report)


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class _Raw:
    """A source read into a frame, with the name each row goes by in error messages."""

    frame: pd.DataFrame
    source: str
    unit: str  # "line", "row", "index", "record"
    row_names: list[Any]

    def where(self, position: int) -> str:
        return f"{self.unit} {self.row_names[position]}".strip()

    def error(self, problem: str, position: int | None = None, column: str | None = None) -> CorpusError:
        return CorpusError(self.source, problem, row=None if position is None else self.where(position), column=column)


def _non_utf8_problem(raw: bytes, error: UnicodeDecodeError) -> str:
    bad = raw[error.start : error.end]
    return f"bytes that are not UTF-8 ({bad!r} at byte {error.start + 1} of the row); re-encode the file as UTF-8"


def _column_holding_surrogates(record: dict | list, header: list[str] | None = None) -> str | None:
    items = record.items() if isinstance(record, dict) else zip(header or [], record)
    for key, value in items:
        if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
            return str(key)
    return None


def _read_json_lines(path: Path) -> _Raw:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    if data.lstrip()[:1] == b"[":  # a .json file holding one array of records
        try:
            records = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorpusError(path, f"not a valid UTF-8 JSON array of records ({e})") from None
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise CorpusError(path, "expected a JSON object for each message", row=f"record {i}")
        return _Raw(pd.DataFrame(records, dtype=object), str(path), "record", list(range(len(records))))
    records, line_numbers = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            try:
                column = _column_holding_surrogates(json.loads(raw.decode("utf-8", "surrogateescape")))
            except json.JSONDecodeError:
                column = None
            raise CorpusError(path, _non_utf8_problem(raw, e), row=f"line {number}", column=column) from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e.msg} at character {e.pos + 1})"
            raise CorpusError(path, problem, row=f"line {number}") from None
        if not isinstance(record, dict):
            raise CorpusError(path, "expected a JSON object ({...}) on each line", row=f"line {number}")
        records.append(record)
        line_numbers.append(number)
    return _Raw(pd.DataFrame(records, dtype=object), str(path), "line", line_numbers)


def _read_delimited(path: Path, delimiter: str) -> _Raw:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text, non_utf8 = data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        text, non_utf8 = data.decode("utf-8", "surrogateescape"), e
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise CorpusError(path, "the file is empty (no header row)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CorpusError(path, f"the header names column {repeated[0]!r} more than once", row="line 1 (header)")
    rows, line_numbers, start = [], [], reader.line_num + 1
    for record in reader:
        line, start = start, reader.line_num + 1
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        if non_utf8 is not None and (column := _column_holding_surrogates(record, header)):
            raw_record = b"\n".join(data.split(b"\n")[line - 1 : start - 1])
            try:
                raw_record.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(path, _non_utf8_problem(raw_record, e), row=f"line {line}", column=column) from None
        if len(record) != len(header):
            raise CorpusError(path, f"{len(record)} fields where the header has {len(header)}", row=f"line {line}")
        rows.append([value if value != "" else None for value in record])  # an empty cell is a missing value
        line_numbers.append(line)
    if non_utf8 is not None:  # the bad bytes sit in the header
        raise CorpusError(path, _non_utf8_problem(data, non_utf8), row="line 1 (header)")
    return _Raw(pd.DataFrame(rows, columns=header, dtype=object), str(path), "line", line_numbers)


def _read_source(source: Any, split: str | None, cache_dir: str | None) -> _Raw:
    import datasets

    if isinstance(source, pd.DataFrame):
        return _Raw(source, "DataFrame", "index", list(source.index))
    if isinstance(source, datasets.DatasetDict):
        raise CorpusError("DatasetDict", f"pick one split (one of {sorted(source)}) and pass that Dataset")
    if isinstance(source, datasets.Dataset):
        name = f"Dataset {source.info.dataset_name or ''}".strip()
        return _Raw(source.to_pandas(), name, "row", list(range(len(source))))
    if isinstance(source, (list, tuple)):
        return _read_many(source, split, cache_dir)
    if isinstance(source, NamedDataset):
        return _read_named(source, cache_dir)
    if not isinstance(source, (str, Path)):
        raise CorpusError(type(source).__name__, "expected a path, a list of paths, a pandas DataFrame, a "
                                                 "datasets.Dataset or a NamedDataset")
    path = Path(source)
    if not path.exists():
        raise CorpusFileNotFoundError(path, "no such file or folder")
    if path.is_dir():
        return _read_folder(path, split, cache_dir)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_json_lines(path)
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise CorpusError(path, f"not a readable Parquet file ({e})") from None
        return _Raw(frame, str(path), "row", list(range(len(frame))))
    raise CorpusError(path, f"unknown file type '{path.suffix}': expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def _read_named(source: NamedDataset, cache_dir: str | None) -> _Raw:
    import datasets

    try:
        loaded = datasets.load_dataset(source.name, source.config, split=source.split, cache_dir=cache_dir)
    except Exception as e:  # not found, offline, unknown config or split: datasets raises many types
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise CorpusError(source, f"datasets.load_dataset could not read it ({type(e).__name__}: {first_line})") \
            from None
    return _Raw(loaded.to_pandas(), str(source), "row", list(range(len(loaded))))


def _read_folder(path: Path, split: str | None, cache_dir: str | None) -> _Raw:
    """A folder: a dataset saved with `datasets.save_to_disk`, or else every corpus file in it (all of them, sorted by
    name, read as one corpus). Any other file is refused rather than skipped, so that nothing is left out unseen."""
    import datasets

    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as e:  # a damaged save: datasets and pyarrow raise several types
            raise CorpusError(path, f"not a readable datasets folder ({type(e).__name__}: {e})") from None
        if isinstance(loaded, datasets.DatasetDict):  # saved with all its splits: the one asked for
            if split not in loaded:
                raise CorpusError(path, f"the saved dataset has no split {split!r} (it has {', '.join(sorted(loaded))})")
            loaded = loaded[split]
        return _Raw(loaded.to_pandas(), str(path), "row", list(range(len(loaded))))
    files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    others = [p.name for p in files if p.is_dir() or p.suffix.lower() not in SUPPORTED_SUFFIXES]
    if others:
        raise CorpusError(path, f"the folder holds {others[0]!r}, which is not a corpus file (expected "
                                f"{', '.join(SUPPORTED_SUFFIXES)}): move it out, or name the corpus files")
    if not files:
        raise CorpusError(path, f"the folder holds no corpus file ({', '.join(SUPPORTED_SUFFIXES)})")
    return _read_many(files, split, cache_dir)


def _read_many(sources: list | tuple, split: str | None, cache_dir: str | None) -> _Raw:
    """Several sources as one corpus, in the order given (an author may have messages in several files); every
    row keeps its file and line for error messages."""
    if not sources:
        raise CorpusError("[]", "an empty list of sources")
    parts = [_read_source(source, split, cache_dir) for source in sources]
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    names = [f"{part.source} {part.unit} {name}" for part in parts for name in part.row_names]
    return _Raw(frame, " + ".join(part.source for part in parts), "", names)


# --------------------------------------------------------------------------------------------- checking


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _resolve_columns(raw: _Raw, names: ColumnNames, task: str) -> dict[str, str | None]:
    present = [str(c) for c in raw.frame.columns]
    required = {"user_id", "message"} | ({"label"} if task != "lm" else set())
    resolved: dict[str, str | None] = {}
    for f in fields(ColumnNames):
        name = getattr(names, f.name)
        if name is None or (f.name == "label" and task == "lm"):
            resolved[f.name] = None
            if f.name in required:
                raise raw.error(f"the {f.name} column cannot be turned off for task '{task}'")
            continue
        if name in present:
            resolved[f.name] = name
            continue
        taken = {getattr(names, g.name) for g in fields(ColumnNames) if g.name != f.name}
        candidates = [c for c in present if c not in taken]  # never suggest a column another role uses
        is_default = name == f.default
        cutoff = 0.8 if is_default and f.name not in required else 0.6  # absent optional columns are fine
        close = [c for c in candidates if c.lower() == name.lower()] or difflib.get_close_matches(
            name, candidates, n=1, cutoff=cutoff)
        if f.name in required or not is_default or close:
            hint = f"; did you mean '{close[0]}'? (pass columns={{'{f.name}': '{close[0]}'}})" if close else ""
            off = "" if f.name in required else f" (or columns={{'{f.name}': None}} to go without)"
            raise raw.error(f"no column '{name}' for {f.name}{hint}{off}; columns are {present}", column=name)
        resolved[f.name] = None  # an optional column that is simply absent
    return resolved


def _as_id(value: Any) -> str | None:
    """Authors and message ids as strings; integral floats (an int column that met a NaN) lose the '.0'."""
    if _is_missing(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def _order_key_for_ids(ids: list[str | None]) -> list[str]:
    """A string key that sorts ids numerically when all are non-negative integers, else as strings."""
    present = [i for i in ids if i is not None]
    if present and all(i.isdigit() for i in present):
        width = max(len(i) for i in present)
        return [i.zfill(width) if i is not None else "" for i in ids]
    return [i if i is not None else "" for i in ids]


def _class_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return None


def _parse_labels(raw: _Raw, column: str, values: list[Any], regression: bool, labels: list[str] | None,
                  aliases: dict[str, str]) -> tuple[np.ndarray, dict[int, str] | None]:
    """Labels as floats (class ids or values; NaN where missing) and the id -> name map for classes."""
    out = np.full(len(values), np.nan)
    if regression:
        for i, v in enumerate(values):
            if _is_missing(v):
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise raw.error(f"label {v!r} is not a number (regression)", i, column) from None
            if not math.isfinite(x):
                raise raw.error(f"label {v!r} is not a finite number", i, column)
            if x == -100:  # the ignore value of per-token label tensors: it would silently vanish
                raise raw.error("label -100 is reserved for 'no label'; shift or rescale the values", i, column)
            out[i] = x
        return out, None
    names: list[str | None] = []
    for i, v in enumerate(values):
        if _is_missing(v):
            names.append(None)
            continue
        name = _class_name(v)
        if name is None:
            raise raw.error(f"label {v!r} is neither a class name nor an integer class", i, column)
        name = aliases.get(name, name)
        if labels is not None and name not in labels:
            after = " after aliases" if aliases else ""
            raise raw.error(f"unknown label {v!r}; expected one of {labels}{after}", i, column)
        if labels is None and (not name.strip() or name in _MISSING_MARKERS):
            raise raw.error(f"label {v!r} looks like a missing value written as text; leave the cell empty / null "
                            "for unlabelled rows", i, column)
        names.append(name)
    if labels is None:
        found = set(n for n in names if n is not None)
        labels = sorted(found, key=int) if found and all(n.lstrip("-").isdigit() for n in found) else sorted(found)
    label2id = {name: i for i, name in enumerate(labels)}
    for i, name in enumerate(names):
        if name is not None:
            out[i] = label2id[name]
    return out, dict(enumerate(labels))


_ZONE_SUFFIX = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")


def _has_time_zone(value: Any) -> bool:
    """Whether a timestamp as read (an ISO-8601 string, a datetime or a pandas Timestamp) carries a time zone."""
    if hasattr(value, "tzinfo"):
        return value.tzinfo is not None
    time_part = str(value).strip()[10:]  # after the date: 'T17:32:12+08:00', ' 17:32:12', 'Z', ''
    return bool(_ZONE_SUFFIX.search(time_part))


def _message_problem(value: Any) -> str | None:
    """Why a message cannot be modelled (a reason counted in the report), or None."""
    if _is_missing(value):
        return "missing message"
    if not isinstance(value, str):
        return "message not text"
    if not value.strip():
        return "empty or whitespace-only message"
    return None


# ---------------------------------------------------------------------------------------------- loading


def load_corpus(
    source: Any,
    *,
    columns: ColumnNames | dict[str, str | None] | None = None,
    task: str = "lm",
    labels: list[str] | None = None,
    label_aliases: dict[str, str] | None = None,
    regression: bool = False,
    split: str = "train",
    cache_dir: str | None = None,
) -> Corpus:
    """Read, check and order an author corpus.

    source: a path (.jsonl/.ndjson/.json, .csv, .tsv, .parquet), a folder of such files or one saved with
        `datasets.save_to_disk`, a list of such paths (read as one corpus, in order), a pandas DataFrame, a
        `datasets.Dataset`, or a `NamedDataset` (read with `datasets.load_dataset`, into `cache_dir` if given).
    columns: source column names (ColumnNames or a dict overriding some of its defaults).
    task: "lm" (labels ignored), "message" (a label on some messages; null/NaN = unlabelled history) or
        "author" (one label per author: every non-null label of an author must agree, and each author needs one).
    labels: the class names in id order; unknown labels are errors. Default: the sorted distinct names found
        (numerically when all are integers), so ids are deterministic.
    label_aliases: canonicalise class names before mapping, e.g. SEMEVAL_SENTIMENT_ALIASES.
    regression: labels are real numbers, not classes.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(columns, dict):
        unknown = set(columns) - {f.name for f in fields(ColumnNames)}
        if unknown:
            roles = [f.name for f in fields(ColumnNames)]
            raise ValueError(f"unknown column roles {sorted(unknown)}; roles are {roles}")
        columns = ColumnNames(**columns)
    names = columns or ColumnNames()
    raw = _read_source(source, split, cache_dir)
    report = DataReport(source=raw.source, messages_read=len(raw.frame))
    if len(raw.frame) == 0:
        raise raw.error("the corpus is empty (no rows)")
    col = _resolve_columns(raw, names, task)
    frame = raw.frame

    def values(role: str) -> list[Any]:
        return frame[col[role]].to_numpy(dtype=object).tolist() if col[role] else [None] * len(frame)

    users = [_as_id(v) for v in values("user_id")]
    for i, u in enumerate(users):
        if u is None:
            raise raw.error("missing author id", i, col["user_id"])

    messages = values("message")
    problems = [_message_problem(m) for m in messages]
    for i, m in enumerate(messages):
        if problems[i] is None:
            try:
                m.encode("utf-8")
            except UnicodeEncodeError:
                raise raw.error("text that is not valid UTF-8 (lone surrogates)", i, col["message"]) from None

    ids = [_as_id(v) for v in values("message_id")]
    seen: dict[str, int] = {}
    for i, mid in enumerate(ids):
        if mid is None:
            continue
        if mid in seen:
            raise raw.error(f"duplicate message id {mid!r} (first at {raw.where(seen[mid])})", i, col["message_id"])
        seen[mid] = i

    if col["timestamp"]:
        stamps = [None if _is_missing(v) else v for v in values("timestamp")]
        times = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601", errors="coerce")
        for i in np.flatnonzero(times.isna().to_numpy()):
            if stamps[i] is not None:
                example = "'2015-04-15 17:32:12' or '2023-06-10T15:27:16+08:00'"
                raise raw.error(f"cannot read {stamps[i]!r} as a time (expected ISO-8601, e.g. {example})",
                                i, col["timestamp"])
        lowest, highest = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
        for i in np.flatnonzero(((times < lowest) | (times > highest)).to_numpy()):  # a date, but not a storable one
            raise raw.error(f"the time {stamps[i]!r} lies outside the years 1677 to 2262 that can be ordered", i,
                            col["timestamp"])
        times = times.dt.as_unit("ns")
        zoned = sum(_has_time_zone(v) for v in stamps if v is not None)
        naive = sum(v is not None for v in stamps) - zoned
        if zoned and naive:
            report.notes.append(f"{naive:,} timestamps have no time zone and were read as UTC, {zoned:,} have one: if "
                                "the ones without are local times, messages of different zones are out of order")
    else:
        times = pd.Series(pd.NaT, index=range(len(frame)), dtype="datetime64[ns, UTC]")
        report.notes.append("no timestamp column: messages ordered by message id, then source order")

    label_values = np.full(len(frame), np.nan)
    id2label = None
    if task != "lm":
        label_values, id2label = _parse_labels(raw, col["label"], values("label"), regression, labels,
                                               label_aliases or {})

    keep = np.array([p is None for p in problems])
    report.messages_dropped = dict(Counter(p for p in problems if p is not None))
    if task == "message":
        labelled = ~np.isnan(label_values)
        report.labels_read = int(labelled.sum())
        lost = int((labelled & ~keep).sum())
        report.labels_dropped = {"on dropped messages": lost} if lost else {}
    if task == "author":
        label_values = _author_labels(raw, col["label"], users, label_values, keep, report)

    table = pd.DataFrame({
        "user_id": users, "message_id": ids, "timestamp": times, "message": messages, "label": label_values,
        "_no_time": times.isna(), "_no_id": [i is None for i in ids], "_id_key": _order_key_for_ids(ids),
        "_pos": np.arange(len(frame)),
    })
    first_seen = {u: n for n, u in enumerate(dict.fromkeys(users))}
    table["_author"] = table["user_id"].map(first_seen)
    authors_before = set(users)
    table = table[keep]
    authors_after = set(table["user_id"])
    if len(authors_before - authors_after):
        report.authors_dropped = {"every message dropped": len(authors_before - authors_after)}
    if len(table) == 0:
        raise raw.error("no usable messages: every message was dropped\n" + str(report))
    table = table.sort_values(["_author", "_no_time", "timestamp", "_no_id", "_id_key", "_pos"], kind="stable")
    table = table[["user_id", "message_id", "timestamp", "message", "label"]].reset_index(drop=True)
    report.messages_kept = len(table)
    report.authors_kept = len(authors_after)
    if task == "message":
        report.labels_kept = int(table["label"].notna().sum())
    return Corpus(table, raw.source, task, id2label, regression, report)


def _author_labels(raw: _Raw, column: str, users: list[str], values: np.ndarray, keep: np.ndarray,
                   report: DataReport) -> np.ndarray:
    """One label per author, repeated on each of its rows; every author needs exactly one distinct label."""
    label_of: dict[str, float] = {}
    label_row: dict[str, int] = {}
    first_row: dict[str, int] = {}
    for i, (u, v) in enumerate(zip(users, values)):
        first_row.setdefault(u, i)
        if math.isnan(v):
            continue
        if u in label_of and label_of[u] != v:
            raise raw.error(f"author {u!r} has a second, different label (the first at {raw.where(label_row[u])}); "
                            "an author task needs one label per author", i, column)
        label_of[u], label_row[u] = v, i
    for u, i in first_row.items():
        if u not in label_of:
            raise raw.error(f"author {u!r} has no label (NaN/null on all its rows); drop the author or fill its "
                            "label", i, column)
    kept_authors = set(np.asarray(users, dtype=object)[keep])
    report.labels_read = len(label_of)
    dropped = len(label_of) - len(kept_authors)
    report.labels_dropped = {"authors with every message dropped": dropped} if dropped else {}
    report.labels_kept = len(kept_authors)
    return np.array([label_of[u] for u in users])


# --------------------------------------------------------------------------------------------- splitting


def split_by_author(corpus: Corpus, fractions: dict[str, float] | None = None, seed: int = 0) -> dict[str, Corpus]:
    """Split by author, so no author is in two splits; the same seed gives the same split.

    Authors are sorted by id, shuffled with `seed`, and cut at the cumulative fractions (rounded), so the
    result depends only on the set of authors, not on their order in the source.
    """
    fractions = fractions or {"train": 0.8, "dev": 0.1, "test": 0.1}
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    authors = sorted(corpus.authors)
    random.Random(seed).shuffle(authors)
    out, start, cumulative = {}, 0, 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        end = round(cumulative * len(authors))
        out[name] = corpus.subset(authors[start:end], name)
        start = end
    return out
