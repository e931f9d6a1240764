"""The real corpora in ../shared/data load with the counts a direct read of the files gives (skipped without them)."""

import json
from collections import Counter

import pandas as pd
import pytest

from hullama.data.blocks import VARIANTS, build_blocks
from hullama.data.corpus import SEMEVAL_SENTIMENT_ALIASES, load_corpus, split_by_author
from hullama.data.tokenizer import train_byte_bpe

STANCE = [f"{t}_{s}" for t in ("abo", "ath", "clim", "clin", "fem") for s in ("train", "dev")]
COMMITS = {"numpy_train": 189, "numpy_dev": 24, "numpy_test": 24}


def direct(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name", STANCE)
def test_stance_files(shared_data, name):
    path = shared_data / "hart" / f"{name}.jsonl"
    rows = direct(path)
    corpus = load_corpus(path, task="message", labels=["against", "none", "favor"])
    assert corpus.id2label == {0: "against", 1: "none", 2: "favor"}
    assert len(corpus.authors) == len({r["user_id"] for r in rows})
    assert len(corpus) == len(rows) and corpus.report.messages_dropped == {}
    labelled = Counter(r["label"] for r in rows if r["label"] is not None)
    assert Counter(corpus.id2label[int(y)] for y in corpus.frame["label"].dropna()) == labelled
    assert corpus.report.labels_kept == sum(labelled.values())
    assert set(labelled) == {"against", "none", "favor"}


def test_sentiment_maps_five_strings_to_three_classes(shared_data):
    path = shared_data / "hart" / "sent_dev.jsonl"
    rows = direct(path)
    assert len({r["label"] for r in rows if r["label"]}) == 5
    corpus = load_corpus(path, task="message", label_aliases=SEMEVAL_SENTIMENT_ALIASES)
    assert corpus.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    expected = Counter(SEMEVAL_SENTIMENT_ALIASES.get(r["label"], r["label"]) for r in rows if r["label"])
    assert Counter(corpus.id2label[int(y)] for y in corpus.frame["label"].dropna()) == expected
    assert len(corpus.authors) == len({r["user_id"] for r in rows})


@pytest.mark.parametrize("name", list(COMMITS))
def test_commit_corpus(shared_data, name):
    path = shared_data / "commits" / f"{name}.jsonl"
    rows = direct(path)
    corpus = load_corpus(path)
    assert len(corpus.authors) == COMMITS[name] == len({r["user_id"] for r in rows})
    assert len(corpus) == len(rows)
    times = corpus.frame.groupby("user_id", sort=False)["timestamp"]
    assert times.apply(lambda t: t.is_monotonic_increasing).all()  # sorted by parsed UTC time, not file order
    original = pd.Series([r["message_id"] for r in rows])
    assert not original.equals(corpus.frame["message_id"])  # the file's commit order is not author-time order


@pytest.mark.slow
def test_real_stance_builds_are_consistent_across_variants(shared_data):
    corpus = load_corpus(shared_data / "hart" / "abo_train.jsonl", task="message")
    tokenizer = train_byte_bpe(corpus.frame["message"], vocab_size=2048)
    targets, labelled = {}, {}
    for variant in VARIANTS:
        lm = build_blocks(corpus, tokenizer, variant=variant, task="lm", block_size=128, max_blocks=4, cache_dir=None)
        rows = lm.dataset.to_list()
        if variant == "recurrent":
            targets[variant] = Counter((r["user_id"], t) for r in rows for b in r["labels"] for t in b if t != -100)
        else:
            targets[variant] = Counter((r["user_id"], t) for r in rows for t in r["labels"] if t != -100)
        message = build_blocks(corpus, tokenizer, variant=variant, block_size=128, max_blocks=4, cache_dir=None)
        rows = message.dataset.to_list()
        ids = [m for r in rows for m in r["message_ids"]] if variant == "recurrent" else [r["message_id"] for r in rows]
        labelled[variant] = sorted(ids)
        assert message.report.labels_kept == len(ids) and message.report.labels_kept > 0.9 * corpus.report.labels_kept
    assert targets["recurrent"] == targets["in_context"] == targets["none"]
    assert labelled["recurrent"] == labelled["in_context"] == labelled["none"]


@pytest.mark.slow
def test_numpy_commits_split_and_build(shared_data, tmp_path):
    frames = [load_corpus(shared_data / "commits" / f"{name}.jsonl").frame for name in COMMITS]
    corpus = load_corpus(pd.concat(frames, ignore_index=True))
    splits = split_by_author(corpus, seed=0)
    assert sum(len(c.authors) for c in splits.values()) == 237
    tokenizer = train_byte_bpe(splits["train"].frame["message"], vocab_size=4096)
    data = build_blocks(splits["dev"], tokenizer, block_size=256, cache_dir=tmp_path, num_proc=2)
    assert data.report.tokens_kept == sum(sum(len(b) - 1 for b in r) for r in data.dataset["input_ids"])
    assert data.report.messages_kept == len(splits["dev"])
