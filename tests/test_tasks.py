"""eval/tasks.py: the task registry, the author-label derivations, clear errors, and the real files (skipped without
../shared/data): label counts as a direct count of the files, no author in two splits, no time in the model input."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from hullama.data.blocks import build_blocks
from hullama.data.corpus import SEMEVAL_SENTIMENT_ALIASES
from hullama.eval.metrics import METRIC_NAMES
from hullama.eval.tasks import (
    REGIONS, TASK_NAMES, TASKS, UnknownTaskError, derive_author_labels, file_paths, get_task, label_counts, load_task,
    main, region_of_offset,
)

REPO = Path(__file__).resolve().parents[1]


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_registry_holds_the_eight_tasks():
    assert TASK_NAMES == ("stance_abortion", "stance_atheism", "stance_climate", "stance_clinton", "stance_feminism",
                          "sentiment", "commit_region", "commit_first_year")
    for spec in TASKS.values():
        assert spec.metric in METRIC_NAMES and spec.level in ("message", "author")
        assert spec.regression == (spec.metric == "pearson_r")
        assert set(spec.split_from) == set(spec.files)
        assert {s for parts in spec.split_from.values() for s in parts} == {"train", "dev", "test"}
    assert [t for t in TASK_NAMES if TASKS[t].level == "author"] == ["commit_region", "commit_first_year"]


@pytest.mark.parametrize("minutes, region", [(-600, "Americas"), (-180, "Americas"), (-120, "Americas"),
                                             (-60, "Europe-Africa"), (0, "Europe-Africa"), (120, "Europe-Africa"),
                                             (270, "Europe-Africa"), (300, "Asia-Pacific"), (330, "Asia-Pacific"),
                                             (480, "Asia-Pacific"), (780, "Asia-Pacific")])
def test_region_boundaries(minutes, region):
    assert region_of_offset(minutes) == region


def test_author_labels_vote_by_region_break_ties_by_time_and_use_utc_years():
    rows = [
        # daylight saving: +01:00 and +02:00 are one region, outvoting two Americas commits
        {"user_id": "eu", "timestamp": "2019-07-01T10:00:00+02:00"},
        {"user_id": "eu", "timestamp": "2019-01-01T10:00:00+01:00"},
        {"user_id": "eu", "timestamp": "2018-06-01T10:00:00-04:00"},
        {"user_id": "eu", "timestamp": "2018-05-01T10:00:00-04:00"},
        {"user_id": "eu", "timestamp": "2019-03-01T10:00:00+01:00"},
        # a tie: the region of the earliest commit (listed last, files are not in time order)
        {"user_id": "tie", "timestamp": "2021-01-01T00:00:00+08:00"},
        {"user_id": "tie", "timestamp": "2020-01-02T00:00:00-05:00"},
        # first year in UTC: 2015-01-01 01:00 at +05:00 is 2014-12-31 in UTC
        {"user_id": "new_year", "timestamp": "2015-01-01T01:00:00+05:00"},
    ]
    assert derive_author_labels(rows, "region", "rows") == {"eu": "Europe-Africa", "tie": "Americas",
                                                            "new_year": "Asia-Pacific"}
    assert derive_author_labels(rows, "first_year", "rows") == {"eu": 2018.0, "tie": 2020.0, "new_year": 2014.0}
    with pytest.raises(ValueError, match="no UTC offset"):
        derive_author_labels([{"user_id": "x", "timestamp": "2015-01-01 01:00:00"}], "region", "rows")
    with pytest.raises(ValueError, match="record 1: cannot read timestamp"):
        derive_author_labels([{"user_id": "x", "timestamp": "yesterday"}], "region", "rows")


def test_unknown_task_and_missing_file_errors(tmp_path):
    with pytest.raises(UnknownTaskError, match="did you mean 'stance_clinton'.*valid tasks: stance_abortion, "):
        get_task("stance_clintn")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "hart" / "sent_dev.jsonl")):
        load_task("sentiment", tmp_path)
    (tmp_path / "hart").mkdir()
    (tmp_path / "hart" / "sent_dev.jsonl").write_text(
        json.dumps({"user_id": 1, "message_id": 1, "message": "hi", "label": "positive"}) + "\n")
    with pytest.raises(ValueError, match="split 'dev' is empty"):  # one author: nothing left for dev and test
        load_task("sentiment", tmp_path)


def test_cli_unknown_task_is_one_line():
    run = subprocess.run([sys.executable, "eval/tasks.py", "--tasks", "stance"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "unknown task 'stance'" in last and ", ".join(TASK_NAMES) in last


# ------------------------------------------------------------------------------------- the real files


def _direct_message_counts(spec, shared_data):
    """{split: Counter(label)} straight from the files, following the registry's file -> split routing."""
    counts = {}
    for role, rel in spec.files.items():
        labels = [SEMEVAL_SENTIMENT_ALIASES.get(r["label"], r["label"]) for r in _rows(shared_data / rel) if r["label"]]
        targets = spec.split_from[role]
        key = "test" if list(targets) == ["test"] else "+".join(sorted(targets))
        counts[key] = Counter(labels)
    return counts


def _direct_author_labels(paths, derive):
    """An independent derivation with pandas over the files' rows pooled: offsets from the string's last 6
    characters."""
    frame = pd.DataFrame([row for path in paths for row in _rows(path)])
    offset = frame["timestamp"].str[-6:]
    minutes = offset.str[0].map({"+": 1, "-": -1}) * (offset.str[1:3].astype(int) * 60 + offset.str[4:6].astype(int))
    frame["utc"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    if derive == "first_year":
        return frame.groupby("user_id")["utc"].min().dt.year.astype(float).to_dict()
    frame["region"] = pd.cut(minutes, [-10_000, -120, 299, 10_000], labels=list(REGIONS)).astype(str)
    frame = frame.sort_values("utc", kind="stable")
    labels = {}
    for user, group in frame.groupby("user_id", sort=False):
        counts = group["region"].value_counts()
        best = counts[counts == counts.max()].index
        labels[user] = group["region"][group["region"].isin(best)].iloc[0]
    return labels


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_loads_from_the_shared_data(shared_data, name):
    spec = get_task(name)
    splits = load_task(name, shared_data)
    assert list(splits) == ["train", "dev", "test"]
    authors = {s: set(c.authors) for s, c in splits.items()}
    assert not (authors["train"] & authors["dev"] or authors["train"] & authors["test"] or authors["dev"] & authors["test"])
    for corpus in splits.values():
        assert corpus.task == spec.level and corpus.frame["timestamp"].isna().all()
        assert corpus.frame["label"].notna().any()

    if spec.level == "message":
        direct = _direct_message_counts(spec, shared_data)
        ours = {s: Counter(label_counts(spec, c)) for s, c in splits.items()}
        if "test" in direct:  # stance: train file -> train + dev, dev file -> test
            assert ours["test"] == +direct["test"]
            assert ours["train"] + ours["dev"] == direct["dev+train"]
        else:  # sentiment: one file -> all three splits
            assert ours["train"] + ours["dev"] + ours["test"] == direct["dev+test+train"]
        source_authors = {str(r["user_id"]) for role in spec.files for p in file_paths(spec, role, shared_data)
                          for r in _rows(p)}
        assert set().union(*authors.values()) == source_authors
    else:
        assert spec.files["test"] == tuple(f"commits/{p}_test.jsonl" for p in ("numpy", "scipy", "ipython"))
        assert sum(len(c.authors) for c in splits.values()) == 556  # every person once, pooled over the projects
        for split, corpus in splits.items():
            paths = file_paths(spec, split, shared_data)
            expected = _direct_author_labels(paths, spec.derive)
            got = corpus.frame.groupby("user_id")["label"].first()
            if spec.regression:
                assert got.to_dict() == expected
            else:
                assert {u: corpus.id2label[int(y)] for u, y in got.items()} == expected
            assert len(corpus) == sum(len(_rows(path)) for path in paths)


def test_timestamps_never_reach_the_tokenized_text(shared_data, tokenizer):
    splits = load_task("commit_region", shared_data)
    corpus = splits["test"]
    raw = [r for p in ("numpy", "scipy", "ipython") for r in _rows(shared_data / "commits" / f"{p}_test.jsonl")]
    stamps = {r["timestamp"] for r in raw}
    assert not any(stamp in message for message in corpus.frame["message"] for stamp in stamps)
    # Everything the model reads is the messages and separators, in the corpus's (time) order, nothing else.
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="author", block_size=512, cache_dir=None)
    sep = tokenizer.eos_token
    for row in data.dataset:
        stream = [t for block in row["input_ids"] for t in block[1:]]  # drop each block's start token
        messages = corpus.frame.loc[corpus.frame["user_id"] == row["user_id"], "message"]
        assert tokenizer.decode(stream) == "".join(m + sep for m in messages)
    # the order is author time, not file order (the timestamps did their job before being blanked)
    by_id = {r["message_id"]: pd.Timestamp(r["timestamp"]).tz_convert("UTC") for r in raw}
    times = corpus.frame["message_id"].map(by_id)
    assert times.groupby(corpus.frame["user_id"], sort=False).apply(lambda t: t.is_monotonic_increasing).all()


def test_splits_are_reproducible_and_the_cli_summarises(shared_data, tmp_path):
    first, second = load_task("sentiment", shared_data), load_task("sentiment", shared_data)
    assert all(first[s].authors == second[s].authors for s in first)
    out = tmp_path / "tasks.json"
    summary = main(["--data_dir", str(shared_data), "--tasks", "sentiment", "--json", str(out)])
    assert json.loads(out.read_text()) == summary
    assert summary["sentiment"]["splits"]["test"]["authors"] == len(first["test"].authors)
