"""Loading, checking, ordering, labelling and splitting author corpora (data/corpus.py)."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest

from hullama.data.corpus import (
    SEMEVAL_SENTIMENT_ALIASES, ColumnNames, CorpusError, CorpusFileNotFoundError, load_corpus, split_by_author,
)

RECORDS = [
    {"message_id": 3, "user_id": 7, "timestamp": "2020-01-02 10:00:00", "message": "second of seven", "label": "favor"},
    {"message_id": 1, "user_id": 8, "timestamp": "2020-01-01T00:00:00+00:00", "message": "eight alone", "label": None},
    {"message_id": 2, "user_id": 7, "timestamp": "2020-01-01 09:00:00", "message": "first of seven", "label": None},
    {"message_id": 4, "user_id": 7, "timestamp": None, "message": "untimed of seven", "label": "against"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def canonical(corpus):
    return corpus.frame.astype(object).where(corpus.frame.notna(), None).to_dict("records")


# ------------------------------------------------------------------------------------------------ formats


def test_every_source_kind_loads_the_same_corpus(tmp_path):
    frame = pd.DataFrame(RECORDS)
    reference = canonical(load_corpus(frame, task="message"))
    csv_frame = frame.copy()
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_csv(tmp_path / "c.tsv", index=False, sep="\t")
    csv_frame.astype(str).replace("None", None).to_parquet(tmp_path / "c.parquet")
    write_jsonl(tmp_path / "c.jsonl", RECORDS)
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", RECORDS)
    sources = [tmp_path / "c.csv", tmp_path / "c.tsv", tmp_path / "c.parquet", tmp_path / "c.jsonl",
               datasets.Dataset.from_pandas(frame.astype({"user_id": str, "message_id": str})), folder]
    for source in sources:
        corpus = load_corpus(source, task="message", cache_dir=str(tmp_path / "hf"))
        assert canonical(corpus) == reference, source


def test_columns_are_mapped_by_name():
    frame = pd.DataFrame(RECORDS).rename(columns={"user_id": "author", "message": "text", "label": "stance"})
    corpus = load_corpus(frame, task="message", columns={"user_id": "author", "message": "text", "label": "stance"})
    assert len(corpus) == 4 and corpus.id2label == {0: "against", 1: "favor"}
    same = load_corpus(frame, task="message", columns=ColumnNames(user_id="author", message="text", label="stance"))
    assert canonical(same) == canonical(corpus)


# ----------------------------------------------------------------------------------------------- ordering


def test_order_is_time_then_untimed_by_id_then_file_order():
    rows = [
        {"user_id": "a", "message_id": 10, "timestamp": None, "message": "untimed id 10"},
        {"user_id": "b", "message_id": 1, "timestamp": "2021-05-01 00:00:00", "message": "b only"},
        {"user_id": "a", "message_id": 9, "timestamp": None, "message": "untimed id 9"},
        {"user_id": "a", "message_id": 5, "timestamp": "2021-01-01T08:00:00+08:00", "message": "00:00 UTC"},
        {"user_id": "a", "message_id": 2, "timestamp": "2021-01-01 00:00:00", "message": "00:00 UTC, smaller id"},
        {"user_id": "a", "message_id": 3, "timestamp": "2020-12-31T23:30:00-01:00", "message": "00:30 UTC"},
        {"user_id": "a", "message_id": None, "timestamp": None, "message": "no id, later in file"},
        {"user_id": "a", "message_id": None, "timestamp": None, "message": "no id, last in file"},
    ]
    corpus = load_corpus(pd.DataFrame(rows))
    assert corpus.frame["message"].tolist() == [
        "00:00 UTC, smaller id", "00:00 UTC", "00:30 UTC", "untimed id 9", "untimed id 10",
        "no id, later in file", "no id, last in file", "b only"]
    assert str(corpus.frame["timestamp"].dt.tz) == "UTC"


def test_string_ids_sort_as_strings_and_digit_ids_numerically():
    rows = [{"user_id": "a", "message_id": i, "timestamp": None, "message": f"m{i}"} for i in ["b", "a", "c"]]
    assert load_corpus(pd.DataFrame(rows)).frame["message"].tolist() == ["ma", "mb", "mc"]
    rows = [{"user_id": "a", "message_id": i, "timestamp": None, "message": f"m{i}"} for i in ["10", "9", "100"]]
    assert load_corpus(pd.DataFrame(rows)).frame["message"].tolist() == ["m9", "m10", "m100"]


def test_no_timestamp_column_orders_by_id_and_says_so():
    frame = pd.DataFrame(RECORDS).drop(columns="timestamp")
    corpus = load_corpus(frame)
    assert corpus.frame["message_id"].tolist() == ["2", "3", "4", "1"]
    assert "no timestamp column" in str(corpus.report)


# ------------------------------------------------------------------------------------------------- labels


def test_string_labels_map_to_sorted_ids_and_aliases_merge_classes():
    rows = [{"user_id": i, "message": f"m{i}", "label": label} for i, label in
            enumerate(["positive", "objective", "negative", "objective-OR-neutral", "neutral", None])]
    corpus = load_corpus(pd.DataFrame(rows), task="message", label_aliases=SEMEVAL_SENTIMENT_ALIASES)
    assert corpus.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert corpus.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert corpus.frame["label"].tolist()[:5] == [2, 1, 0, 1, 1] and np.isnan(corpus.frame["label"].iloc[5])


def test_explicit_label_order_and_integer_classes():
    rows = [{"user_id": 1, "message": "x", "label": "none"}, {"user_id": 2, "message": "y", "label": "favor"}]
    corpus = load_corpus(pd.DataFrame(rows), task="message", labels=["against", "none", "favor"])
    assert corpus.frame["label"].tolist() == [1, 2]
    rows = [{"user_id": i, "message": "x", "label": v} for i, v in enumerate([10, 2, 1.0])]
    assert load_corpus(pd.DataFrame(rows), task="message").id2label == {0: "1", 1: "2", 2: "10"}


def test_regression_and_author_labels():
    rows = [{"user_id": "a", "message": "x", "label": 0.5}, {"user_id": "a", "message": "y", "label": None},
            {"user_id": "b", "message": "z", "label": "2.25"}]
    corpus = load_corpus(pd.DataFrame(rows), task="author", regression=True)
    assert corpus.frame["label"].tolist() == [0.5, 0.5, 2.25] and corpus.id2label is None
    assert corpus.report.labels_kept == 2


def test_lm_task_ignores_labels():
    corpus = load_corpus(pd.DataFrame(RECORDS).assign(label="whatever"))
    assert corpus.frame["label"].isna().all() and corpus.id2label is None


# ----------------------------------------------------------------------------------------------- splitting


def test_split_by_author_is_disjoint_complete_and_reproducible():
    frame = pd.DataFrame([{"user_id": f"u{i % 50}", "message": f"m{i}", "message_id": i} for i in range(300)])
    corpus = load_corpus(frame)
    splits = split_by_author(corpus, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=3)
    authors = {name: set(c.authors) for name, c in splits.items()}
    assert sorted(len(a) for a in authors.values()) == [10, 10, 30]
    assert not (authors["train"] & authors["dev"]) and not (authors["train"] & authors["test"])
    assert set().union(*authors.values()) == set(corpus.authors)
    assert sum(len(c) for c in splits.values()) == len(corpus)
    again = split_by_author(load_corpus(frame.iloc[::-1]), {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=3)
    assert {n: set(c.authors) for n, c in again.items()} == authors  # independent of row order
    other = split_by_author(corpus, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=4)
    assert set(other["train"].authors) != authors["train"]
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_author(corpus, {"train": 0.5})


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_column_suggests_the_closest_name():
    frame = pd.DataFrame(RECORDS).rename(columns={"message": "mesage"})
    with pytest.raises(CorpusError, match=r"column 'message'.*did you mean 'mesage'"):
        load_corpus(frame)
    frame = pd.DataFrame(RECORDS).rename(columns={"timestamp": "timestmp"})  # an optional column, misspelled
    with pytest.raises(CorpusError, match=r"did you mean 'timestmp'"):
        load_corpus(frame)
    with pytest.raises(CorpusError, match="column 'label'"):
        load_corpus(pd.DataFrame(RECORDS).drop(columns="label"), task="message")
    with pytest.raises(CorpusError, match="no column 'stamp'"):
        load_corpus(pd.DataFrame(RECORDS), columns={"timestamp": "stamp"})


def test_unusable_messages_are_skipped_and_counted(tmp_path):
    rows = RECORDS + [
        {"user_id": 7, "message_id": 20, "message": "", "label": "favor"},
        {"user_id": 7, "message_id": 21, "message": "  \n\t ", "label": None},
        {"user_id": 7, "message_id": 22, "message": None, "label": None},
        {"user_id": 7, "message_id": 23, "message": 42, "label": None},
        {"user_id": 9, "message_id": 24, "message": " ", "label": None},  # author 9 loses every message
    ]
    corpus = load_corpus(write_jsonl(tmp_path / "c.jsonl", rows), task="message")
    r = corpus.report
    assert (r.messages_read, r.messages_kept) == (9, 4)
    assert r.messages_dropped == {"empty or whitespace-only message": 3, "missing message": 1, "message not text": 1}
    assert r.authors_dropped == {"every message dropped": 1} and r.authors_kept == 2
    assert (r.labels_read, r.labels_kept, r.labels_dropped) == (3, 2, {"on dropped messages": 1})
    text = str(r)
    assert "9 read, 4 kept, 5 dropped" in text and "1 missing message" in text


def test_every_message_dropped_and_empty_sources_are_errors(tmp_path):
    with pytest.raises(CorpusError, match="every message was dropped"):
        load_corpus(pd.DataFrame([{"user_id": 1, "message": " "}]))
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(write_jsonl(tmp_path / "e.jsonl", []))
    (tmp_path / "h.csv").write_text("user_id,message\n")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(tmp_path / "h.csv")
    (tmp_path / "z.csv").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(tmp_path / "z.csv")


def test_label_errors_name_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", RECORDS[:2] + [{**RECORDS[2], "label": "agianst"}])
    with pytest.raises(CorpusError, match=r"c\.jsonl, line 3, column 'label': unknown label 'agianst'"):
        load_corpus(path, task="message", labels=["against", "none", "favor"])
    path = write_jsonl(tmp_path / "n.jsonl", [{**RECORDS[0], "label": "nan"}])
    with pytest.raises(CorpusError, match=r"line 1, column 'label': label 'nan' looks like a missing value"):
        load_corpus(path, task="message")
    with pytest.raises(CorpusError, match="not a number"):
        load_corpus(pd.DataFrame([{"user_id": 1, "message": "x", "label": "high"}]), task="message", regression=True)
    with pytest.raises(CorpusError, match="not a finite number"):
        load_corpus(pd.DataFrame([{"user_id": 1, "message": "x", "label": np.inf}]), task="message", regression=True)
    with pytest.raises(CorpusError, match="reserved"):
        load_corpus(pd.DataFrame([{"user_id": 1, "message": "x", "label": -100}]), task="message", regression=True)


def test_author_label_errors():
    rows = [{"user_id": "a", "message": "x", "label": "p"}, {"user_id": "b", "message": "y", "label": None}]
    with pytest.raises(CorpusError, match=r"index 1, column 'label': author 'b' has no label"):
        load_corpus(pd.DataFrame(rows), task="author")
    rows[1] = {"user_id": "a", "message": "y", "label": "q"}
    with pytest.raises(CorpusError, match=r"index 1, column 'label': author 'a' has a second, different label"):
        load_corpus(pd.DataFrame(rows), task="author")


def test_duplicate_ids_and_bad_times_name_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS + [{**RECORDS[1], "message": "again"}])
    with pytest.raises(CorpusError, match=r"line 5, column 'message_id': duplicate message id '1' \(first at line 2\)"):
        load_corpus(path)
    path = write_jsonl(tmp_path / "t.jsonl", RECORDS[:3] + [{**RECORDS[3], "timestamp": "yesterday"}])
    with pytest.raises(CorpusError, match=r"t\.jsonl, line 4, column 'timestamp': cannot read 'yesterday'"):
        load_corpus(path)
    with pytest.raises(CorpusError, match="index 0, column 'user_id': missing author id"):
        load_corpus(pd.DataFrame([{"user_id": None, "message": "x"}]))


def test_non_utf8_bytes_name_file_line_and_column(tmp_path):
    good = (json.dumps(RECORDS[0]) + "\n").encode()
    bad = b'{"message_id": 9, "user_id": 1, "timestamp": null, "message": "caf\xe9", "label": null}\n'
    (tmp_path / "b.jsonl").write_bytes(good + bad)
    with pytest.raises(CorpusError, match=r"b\.jsonl, line 2, column 'message': bytes that are not UTF-8"):
        load_corpus(tmp_path / "b.jsonl")
    (tmp_path / "b.csv").write_bytes(b"user_id,message\n1,fine\n2,\"multi\nline caf\xe9\"\n")
    with pytest.raises(CorpusError, match=r"b\.csv, line 3, column 'message': bytes that are not UTF-8"):
        load_corpus(tmp_path / "b.csv")
    frame = pd.DataFrame([{"user_id": 1, "message": "caf\udce9"}], dtype=object)  # what surrogateescape decoding leaves
    with pytest.raises(CorpusError, match="index 0, column 'message'"):
        load_corpus(frame)


def test_bad_files(tmp_path):
    with pytest.raises(CorpusFileNotFoundError, match="no such file"):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.csv")
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(CorpusError, match=r"unknown file type '\.txt'"):
        load_corpus(tmp_path / "c.txt")
    (tmp_path / "j.jsonl").write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(CorpusError, match=r"line 2: not valid JSON"):
        load_corpus(tmp_path / "j.jsonl")
    (tmp_path / "f.csv").write_text("user_id,message\n1,a,b\n")
    with pytest.raises(CorpusError, match=r"line 2: 3 fields where the header has 2"):
        load_corpus(tmp_path / "f.csv")
    (tmp_path / "p.parquet").write_bytes(b"not parquet")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        load_corpus(tmp_path / "p.parquet")
    with pytest.raises(CorpusError, match="pick one split"):
        load_corpus(datasets.DatasetDict({"train": datasets.Dataset.from_pandas(pd.DataFrame(RECORDS[:1]))}))
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(CorpusError, match="empty_folder.*holds no corpus file"):
        load_corpus(tmp_path / "empty_folder", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="task must be"):
        load_corpus(pd.DataFrame(RECORDS), task="stance")


def test_a_list_of_files_is_one_corpus_in_time_order(tmp_path):
    commits, tweets = tmp_path / "commits.jsonl", tmp_path / "tweets.csv"
    commits.write_text(
        '{"user_id": "a", "message": "second", "timestamp": "2020-01-02T00:00:00+00:00"}\n'
        '{"user_id": "b", "message": "only", "timestamp": "2020-01-01T00:00:00+00:00"}\n')
    tweets.write_text("user_id,message,timestamp,label\na,first,2020-01-01 00:00:00,\na,third,,\n")
    corpus = load_corpus([commits, tweets], task="lm")
    assert corpus.source == f"{commits} + {tweets}"
    frame = corpus.frame
    assert frame[frame.user_id == "a"].message.tolist() == ["first", "second", "third"]
    assert sorted(corpus.authors) == ["a", "b"]


def test_a_bad_row_in_the_second_file_names_that_file_and_line(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"user_id": 1, "message": "fine"}\n')
    bad.write_text('{"user_id": 2, "message": "fine"}\n{"user_id": null, "message": "who?"}\n')
    with pytest.raises(CorpusError) as info:
        load_corpus([good, bad], task="lm")
    assert f"{bad} line 2" in str(info.value) and "missing author id" in str(info.value)
    with pytest.raises(CorpusError, match="empty list"):
        load_corpus([], task="lm")
