"""The embedded synthetic corpus: deterministic, in the real corpora's shape, with persistent author signal."""

import re

import numpy as np
import pandas as pd
import pytest

from hullama.data.blocks import build_blocks
from hullama.data.corpus import load_corpus
from hullama.data.synthetic import FORMAL, STANCE_LABELS, TOPICS, synthetic_corpus


@pytest.fixture(scope="module")
def frame():
    return synthetic_corpus(n_authors=120, messages_per_author=30, seed=0)


def test_deterministic_by_seed(frame):
    pd.testing.assert_frame_equal(frame, synthetic_corpus(n_authors=120, messages_per_author=30, seed=0))
    assert not frame["message"].equals(synthetic_corpus(n_authors=120, messages_per_author=30, seed=1)["message"])


def test_shape_and_columns(frame):
    assert list(frame.columns) == ["user_id", "message_id", "timestamp", "message", "label", "target", "persona", "age"]
    assert frame["user_id"].nunique() == 120 and 20 < frame.groupby("user_id").size().mean() < 40
    assert set(frame["label"].dropna()) == set(STANCE_LABELS)
    assert frame["message_id"].is_unique
    times = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    assert times.is_monotonic_increasing  # a feed: sorted by time, authors interleaved
    assert frame.groupby("user_id")[["persona", "age"]].nunique().max().max() == 1  # author attributes are constant
    assert (frame["target"].notna() == frame["label"].notna()).all()


def test_default_size_is_small():
    default = synthetic_corpus()
    assert default["user_id"].nunique() == 200 and 6000 < len(default) < 10000


def test_signature_persists_and_is_personal(frame):
    tags = frame["message"].str.extract(r"(#\w+)")[0]
    owners = tags.dropna().groupby(tags.dropna()).apply(lambda t: frame.loc[t.index, "user_id"].nunique())
    assert (owners == 1).mean() > 0.95  # a hashtag belongs to one author
    share = tags.notna().groupby(frame["user_id"]).mean()
    assert share.mean() > 0.35  # and recurs across the author's messages


def test_stance_is_consistent_per_author(frame):
    labelled = frame.dropna(subset=["label"])
    majority = labelled.groupby(["user_id", "target"])["label"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert majority.mean() > 0.85
    implicit = labelled["message"].str.contains("news about|meeting about|talking about|report on|came up at")
    assert 0.3 < implicit.mean() < 0.7  # half the labels need the author's other messages


def test_age_shows_in_register_and_topics_drift(frame):
    openers = tuple(o.lower() for o in FORMAL)
    formal = frame["message"].str.lower().apply(lambda m: any(o in m for o in openers))
    age, formal_share = frame.groupby("user_id")["age"].first(), formal.groupby(frame["user_id"]).mean()
    assert np.corrcoef(age, formal_share.loc[age.index])[0, 1] > 0.7

    def main_topic_share(part):
        words = {topic: re.compile("|".join(map(re.escape, nouns))) for topic, nouns in TOPICS.items()}
        hits = part.apply(lambda r: bool(words[r["persona"]].search(r["message"])), axis=1)
        return hits.mean()

    ordered = frame.sort_values("message_id")
    position = ordered.groupby("user_id").cumcount() / ordered.groupby("user_id")["message_id"].transform("size")
    early, late = main_topic_share(ordered[position < 0.25]), main_topic_share(ordered[position > 0.75])
    assert early > late + 0.1  # authors drift away from the hobby they started with


def test_loads_and_builds_for_every_task(frame, tokenizer):
    message = load_corpus(frame, task="message")
    assert message.id2label == {0: "against", 1: "favor", 2: "none"}
    persona = load_corpus(frame, task="author", columns={"label": "persona"})
    assert sorted(persona.id2label.values()) == sorted(TOPICS)
    age = load_corpus(frame, task="author", columns={"label": "age"}, regression=True)
    data = build_blocks(age, tokenizer, block_size=64, cache_dir=None)
    assert len(data.dataset) == 120 and data.report.labels_kept == 120
    data = build_blocks(message, tokenizer, block_size=64, variant="none", cache_dir=None)
    assert len(data.dataset) == frame["label"].notna().sum()
