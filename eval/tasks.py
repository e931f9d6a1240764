"""The eight downstream tasks, defined as data, and their loader.

Message level (tweets with author histories, ../shared/data/hart; metric: weighted F1 over labelled tweets):
  stance_abortion, stance_atheism, stance_climate, stance_clinton, stance_feminism
      classes against / none / favor. The train file's authors are split 80/20 into train and dev (for model
      selection; by author, seed 0); the dev file is the test split (the public SemEval test split is held out).
  sentiment
      classes negative / neutral / positive (objective and objective-OR-neutral count as neutral). There is no
      train file: sent_dev.jsonl's authors are split 60/20/20 into train / dev / test (by author, seed 0).
Author level (the commit messages of numpy, scipy and ipython pooled, ../shared/data/commits: a person has one
user_id in every project and is in the same split in each; an author's messages are all their commits in time order
and their labels come from all of them; splits: the corpus's own train/dev/test authors, 556 in all):
  commit_region       weighted F1. Each commit's UTC offset gives a region; the author's label is the region of
                      most of their commits (ties: the region of their earliest commit among the tied ones):
                        Americas       offset <= -02:00             (UTC-10 .. UTC-2: the Americas, Hawaii)
                        Europe-Africa  -02:00 < offset < +05:00     (UTC-1 .. UTC+4:30: Europe, Africa, Middle
                                                                      East, Moscow, Iran, Afghanistan)
                        Asia-Pacific   offset >= +05:00             (Pakistan, India, China, Japan, Australia, NZ)
                      Voting over regions, not raw offsets, keeps daylight-saving switches (+1/+2, -5/-4) in one
                      region. Caveat: +00:00 is also what a machine left on UTC reports.
  commit_first_year   Pearson r; the (UTC) calendar year of the author's first commit, as a float.
Timestamps order each author's messages and derive the author labels; after that every corpus's timestamp
column is blanked (NaT), so nothing downstream can put a time into the model's input (only `message` is
tokenized in any case).

Python:
    from hullama.eval.tasks import TASKS, load_task
    splits = load_task("stance_abortion")             # {"train": Corpus, "dev": Corpus, "test": Corpus}
    splits = load_task("commit_region", "../shared/data")

Command line (prints authors, messages and label counts of every split):
    python eval/tasks.py
    python eval/tasks.py --data_dir ../shared/data --tasks stance_abortion commit_region --json tasks.json
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from hullama.data.corpus import SEMEVAL_SENTIMENT_ALIASES, Corpus, CorpusError, load_corpus, split_by_author
from hullama.eval.commands import DEFAULT_DATA_DIR, TASK_NAMES, tasks_parser

SPLITS = ("train", "dev", "test")
STANCE_LABELS = ("against", "none", "favor")
SENTIMENT_LABELS = ("negative", "neutral", "positive")
REGIONS = ("Americas", "Europe-Africa", "Asia-Pacific")
AMERICAS_MAX_OFFSET_MIN = -120  # offset <= -02:00
ASIA_PACIFIC_MIN_OFFSET_MIN = 300  # offset >= +05:00
DERIVATIONS = ("region", "first_year")


class UnknownTaskError(ValueError):
    """A task name not in the registry; the message lists the valid ones."""


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task.

    files: file role -> path relative to the data folder, or several paths read as one file (author level: a
    person's rows pooled over them, labels derived from all of them). split_from: file role -> {split: fraction of that file's
    authors} (by author, `seed`), e.g. {"train": {"train": 0.8, "dev": 0.2}, "dev": {"test": 1.0}}.
    labels: class names in id order (None: regression). label_column: the files' label column (message level).
    derive: how an author-level label comes from the timestamps ("region" or "first_year").
    """

    name: str
    level: str  # "message" | "author"
    metric: str  # "weighted_f1" | "pearson_r" (modules in eval/metrics)
    files: dict[str, str | tuple[str, ...]]
    split_from: dict[str, dict[str, float]]
    description: str = ""
    labels: tuple[str, ...] | None = None
    label_aliases: dict[str, str] = field(default_factory=dict)
    label_column: str | None = "label"
    derive: str | None = None
    seed: int = 0

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def task(self) -> str:
        """The corpus task (train.corpus.load_corpus's `task`)."""
        return self.level


_STANCE_TARGETS = {"abortion": ("abo", "Legalization of Abortion"), "atheism": ("ath", "Atheism"),
                   "climate": ("clim", "Climate Change is a Real Concern"), "clinton": ("clin", "Hillary Clinton"),
                   "feminism": ("fem", "Feminist Movement")}
COMMIT_PROJECTS = ("numpy", "scipy", "ipython")
_COMMIT_FILES = {s: tuple(f"commits/{project}_{s}.jsonl" for project in COMMIT_PROJECTS) for s in SPLITS}
_COMMIT_SPLITS = {s: {s: 1.0} for s in SPLITS}

TASKS: dict[str, TaskSpec] = {
    **{f"stance_{name}": TaskSpec(
        name=f"stance_{name}", level="message", metric="weighted_f1",
        files={"train": f"hart/{code}_train.jsonl", "dev": f"hart/{code}_dev.jsonl"},
        split_from={"train": {"train": 0.8, "dev": 0.2}, "dev": {"test": 1.0}},
        description=f"SemEval-2016 stance toward '{target}' (against / none / favor), tweets with author histories",
        labels=STANCE_LABELS) for name, (code, target) in _STANCE_TARGETS.items()},
    "sentiment": TaskSpec(
        name="sentiment", level="message", metric="weighted_f1", files={"dev": "hart/sent_dev.jsonl"},
        split_from={"dev": {"train": 0.6, "dev": 0.2, "test": 0.2}},
        description="SemEval-2013 message sentiment, 3 classes (objective -> neutral), tweets with author histories",
        labels=SENTIMENT_LABELS, label_aliases=dict(SEMEVAL_SENTIMENT_ALIASES)),
    "commit_region": TaskSpec(
        name="commit_region", level="author", metric="weighted_f1", files=_COMMIT_FILES, split_from=_COMMIT_SPLITS,
        description="region of a numpy, scipy or ipython committer from the UTC offset of most of their commits", labels=REGIONS,
        label_column=None, derive="region"),
    "commit_first_year": TaskSpec(
        name="commit_first_year", level="author", metric="pearson_r", files=_COMMIT_FILES,
        split_from=_COMMIT_SPLITS, description="year of a numpy, scipy or ipython committer's first commit (regression)",
        label_column=None, derive="first_year"),
}
if tuple(TASKS) != TASK_NAMES:  # the commands list the tasks without importing this module
    raise ImportError(f"eval/commands.py's TASK_NAMES {TASK_NAMES} differ from the registry {tuple(TASKS)}")


def get_task(name: str) -> TaskSpec:
    """The registered task `name`; UnknownTaskError lists the valid names."""
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(name, TASK_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}{hint}; valid tasks: {', '.join(TASK_NAMES)}")


# ------------------------------------------------------------------------------------------ author labels


def region_of_offset(minutes: float) -> str:
    """The region of a UTC offset in minutes (boundaries in the module docstring)."""
    if minutes <= AMERICAS_MAX_OFFSET_MIN:
        return "Americas"
    if minutes < ASIA_PACIFIC_MIN_OFFSET_MIN:
        return "Europe-Africa"
    return "Asia-Pacific"


def _parse_time(value: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: cannot read timestamp {value!r} (expected ISO-8601 with a UTC offset)") from None


def derive_author_labels(rows: list[dict], derive: str, source: str) -> dict[str, str | float]:
    """{user_id: label} from raw rows' `timestamp` (see the module docstring for both derivations)."""
    if derive not in DERIVATIONS:
        raise ValueError(f"derive must be one of {DERIVATIONS}, got {derive!r}")
    times: dict[str, list[datetime]] = {}
    for number, row in enumerate(rows, start=1):
        stamp = row.get("timestamp")
        if stamp is None:
            continue
        when = _parse_time(stamp, f"{source}, record {number}")
        if when.utcoffset() is None:
            raise ValueError(f"{source}, record {number}: timestamp {stamp!r} has no UTC offset")
        times.setdefault(str(row["user_id"]), []).append(when)
    authors = list(dict.fromkeys(str(r["user_id"]) for r in rows))
    missing = [u for u in authors if u not in times]
    if missing:
        raise ValueError(f"{source}: author {missing[0]!r} has no timestamp to derive a {derive} label from")
    labels: dict[str, str | float] = {}
    for user in authors:
        ordered = sorted(times[user], key=lambda t: t.astimezone(timezone.utc))
        if derive == "first_year":
            labels[user] = float(ordered[0].astimezone(timezone.utc).year)
            continue
        regions = [region_of_offset(t.utcoffset().total_seconds() / 60) for t in ordered]
        counts = Counter(regions)
        best = max(counts.values())
        labels[user] = next(r for r in regions if counts[r] == best)  # ties: the earliest commit's region
    return labels


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
    return rows


# ---------------------------------------------------------------------------------------------- loading


def _blank_timestamps(corpus: Corpus, source: str) -> Corpus:
    """The corpus (already time-ordered) with its timestamp column emptied and its source named."""
    frame = corpus.frame.copy()
    frame["timestamp"] = pd.Series(pd.NaT, index=frame.index, dtype=frame["timestamp"].dtype)
    report = replace(corpus.report, source=source, notes=[*corpus.report.notes, "timestamps blanked after ordering"])
    return replace(corpus, frame=frame, source=source, report=report)


def file_paths(spec: TaskSpec, role: str, folder: Path) -> list[Path]:
    """The files of one role of a task, under the data folder."""
    rel = spec.files[role]
    return [folder / r for r in ((rel,) if isinstance(rel, str) else rel)]


def _load_file(spec: TaskSpec, paths: list[Path]) -> Corpus:
    source = " + ".join(map(str, paths))
    if spec.level == "message":
        if len(paths) != 1:
            raise ValueError(f"task {spec.name}: a message-level task reads one file per role, got {source}")
        (path,) = paths
        corpus = load_corpus(path, task="message", labels=list(spec.labels) if spec.labels else None,
                             label_aliases=spec.label_aliases, regression=spec.regression,
                             columns={"label": spec.label_column})
    else:
        rows = []
        for path in paths:
            part = _read_jsonl(path)
            if not part:
                raise ValueError(f"{path}: the file holds no records")
            rows.extend(part)
        labels = derive_author_labels(rows, spec.derive, source)
        frame = pd.DataFrame({
            "user_id": [str(r["user_id"]) for r in rows],
            "message_id": [r.get("message_id") for r in rows],
            "timestamp": [r.get("timestamp") for r in rows],  # for ordering only; blanked below
            "message": [r.get("message") for r in rows],
            "label": [labels[str(r["user_id"])] for r in rows],
        })
        corpus = load_corpus(frame, task="author", labels=list(spec.labels) if spec.labels else None,
                             regression=spec.regression)
    return _blank_timestamps(corpus, source)


def load_task(name: str, data_dir: str | Path | None = None) -> dict[str, Corpus]:
    """{"train", "dev", "test": Corpus} of task `name` (see the module docstring), split by author.

    data_dir: the folder holding hart/ and commits/ (default: ../shared/data next to the repository).
    Raises UnknownTaskError (lists the valid names), FileNotFoundError (names the missing path) or ValueError
    (an empty split, unreadable data).
    """
    spec = get_task(name)
    folder = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    paths = {role: file_paths(spec, role, folder) for role in spec.files}
    for path in (p for role_paths in paths.values() for p in role_paths):
        if not path.is_file():
            raise FileNotFoundError(f"task {name}: data file not found: {path} (data_dir={folder})")
    parts: dict[str, list[Corpus]] = {}
    for role, role_paths in paths.items():
        try:
            corpus = _load_file(spec, role_paths)
        except CorpusError as e:
            raise ValueError(f"task {name}: {e}") from None
        for split, piece in split_by_author(corpus, spec.split_from[role], seed=spec.seed).items():
            parts.setdefault(split, []).append(piece)
    splits: dict[str, Corpus] = {}
    for split in SPLITS:
        if split not in parts:
            raise ValueError(f"task {name}: no file feeds split {split!r}")
        pieces = parts[split]
        corpus = pieces[0]
        if len(pieces) > 1:
            frame = pd.concat([p.frame for p in pieces], ignore_index=True)
            corpus = replace(corpus, frame=frame, source=" + ".join(p.source for p in pieces))
        splits[split] = replace(corpus, source=f"{name} [{split}] {corpus.source}")
    # No author in two splits: the test split wins, then dev (the registered files never overlap; others might).
    taken: set[str] = set()
    for split in ("test", "dev", "train"):
        corpus = splits[split]
        overlap = set(corpus.authors) & taken
        if overlap:
            corpus = corpus.subset([a for a in corpus.authors if a not in taken], split)
            corpus.report.notes.append(f"{len(overlap)} authors dropped: they are in a later-priority split")
            splits[split] = corpus
        taken |= set(corpus.authors)
    for split, corpus in splits.items():
        labelled = corpus.frame["label"].notna().sum()
        if len(corpus) == 0 or labelled == 0:
            raise ValueError(f"task {name}: split {split!r} is empty ({len(corpus)} messages, {labelled} labels)")
    return splits


def label_counts(spec: TaskSpec, corpus: Corpus) -> dict[str, int] | dict[str, float]:
    """Class name -> count of labels (messages or authors), or summary statistics for a regression task."""
    if spec.level == "author":
        values = corpus.frame.groupby("user_id", sort=False)["label"].first()
    else:
        values = corpus.frame["label"].dropna()
    if spec.regression:
        return {"n": int(len(values)), "mean": float(values.mean()), "min": float(values.min()),
                "max": float(values.max())}
    counts = Counter(corpus.id2label[int(v)] for v in values)
    return {name: counts.get(name, 0) for name in spec.labels}


def describe(names: Sequence[str] = TASK_NAMES, data_dir: str | Path | None = None) -> dict[str, dict]:
    """{task: {level, metric, description, splits: {split: {authors, messages, labels}}}}."""
    out = {}
    for name in names:
        spec = get_task(name)
        splits = load_task(name, data_dir)
        out[name] = {"level": spec.level, "metric": spec.metric, "description": spec.description,
                     "splits": {s: {"authors": len(c.authors), "messages": len(c), "labels": label_counts(spec, c)}
                                for s, c in splits.items()}}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = tasks_parser()
    (args,) = parser.parse(argv)
    from tqdm.auto import tqdm

    for name in args.tasks:
        try:
            get_task(name)
        except UnknownTaskError as e:
            parser.error(str(e))
    summary = {}
    for name in tqdm(args.tasks, desc="loading tasks"):
        try:
            summary.update(describe([name], args.data_dir))
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e).splitlines()[0])
    for name, info in summary.items():
        print(f"{name} ({info['level']}, {info['metric']}): {info['description']}")
        for split, s in info["splits"].items():
            labels = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s["labels"].items())
            print(f"  {split:<5} {s['authors']:>5} authors {s['messages']:>6} messages | {labels}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
