"""Streams, blocks, variants, truncation, caching and collation (data/blocks.py, data/collator.py)."""

import copy
import math
from collections import Counter

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hullama.data.blocks as blocks
from hullama.data.blocks import IGNORE_INDEX, Plan, build_blocks, keep_window, layout_author
from hullama.data.collator import HuLMCollator, padding_fraction
from hullama.data.corpus import load_corpus

START, SEP = 1, 0
WORDS = "the a author writes about data models time people code numpy array fix bug good bad happy".split()


# ------------------------------------------------------------------------------------------------ helpers


def stream_of(messages):
    """Concatenate token lists, each followed by SEP: (stream, sep_pos)."""
    stream, seps = [], []
    for tokens in messages:
        stream += tokens + [SEP]
        seps.append(len(stream) - 1)
    return stream, seps


def predicted(rows, variant, start):
    """(user, stream position, token) of every lm target, and of every input token after the start token."""
    targets, inputs = [], []
    for row in rows:
        user = row.get("user_id")
        blocks_ = row["input_ids"] if variant == "recurrent" else [row["input_ids"]]
        labels = row["labels"] if variant == "recurrent" else [row["labels"]]
        for k, (ids, labs) in enumerate(zip(blocks_, labels)):
            first = row["stream_start"] + (k * (len(blocks_[0]) - 1) if variant == "recurrent" else 0)
            assert ids[0] == start and labs[0] == IGNORE_INDEX  # the start token is never a target
            targets += [(user, first + p - 1, y) for p, y in enumerate(labs) if y != IGNORE_INDEX]
            inputs += [(user, first + p - 1, t) for p, t in enumerate(ids) if p]
    return Counter(targets), inputs


def labelled_positions(rows, variant):
    """(user, message id, label, stream position of the labelled token) for message tasks."""
    out = []
    for row in rows:
        if variant == "recurrent":
            C = len(row["input_ids"][0]) - 1
            hits = [(k, p, y) for k, labs in enumerate(row["labels"]) for p, y in enumerate(labs) if y != IGNORE_INDEX]
            assert len(hits) == len(row["message_ids"])
            out += [(row.get("user_id"), mid, y, row["stream_start"] + k * C + p - 1)
                    for (k, p, y), mid in zip(hits, row["message_ids"])]
        else:
            out.append((row.get("user_id"), row["message_id"], row["labels"],
                        row["stream_start"] + len(row["input_ids"]) - 2))
    return sorted(out)


# --------------------------------------------------------------------------------- per-author properties

token_lists = st.lists(st.lists(st.integers(2, 60), min_size=1, max_size=30), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(messages=token_lists, block_size=st.integers(2, 12), extra_window=st.integers(0, 9),
       max_blocks=st.one_of(st.none(), st.integers(1, 4)), truncation=st.sampled_from(["oldest", "newest"]),
       label_flags=st.lists(st.booleans(), min_size=12, max_size=12))
def test_variants_predict_the_same_tokens_and_labels(messages, block_size, extra_window, max_blocks, truncation,
                                                     label_flags):
    stream, seps = stream_of(messages)
    ids = [f"m{i}" for i in range(len(messages))]
    window = block_size + extra_window
    max_tokens = None if max_blocks is None else max_blocks * (block_size - 1)
    triples, labelled = {}, {}
    for variant in blocks.VARIANTS:
        plan = Plan(variant, "lm", block_size, window, max_tokens, truncation, START, False)
        rows = layout_author(stream, seps, [math.nan] * len(seps), ids, plan)
        triples[variant], inputs = predicted(rows, variant, START)
        assert all(stream[pos] == token for _, pos, token in inputs)  # inputs are the author's own stream
        for row in rows:
            n = [len(b) for b in row["input_ids"]] if variant == "recurrent" else [len(row["input_ids"])]
            assert max(n) <= (block_size if variant == "recurrent" else window)
        # message task: labels on the last text token of the message, same messages in every variant
        labels = [float(i % 3) if flag else math.nan for i, flag in enumerate(label_flags[: len(seps)])]
        plan = Plan(variant, "message", block_size, window, max_tokens, "labels", START, False)
        rows = layout_author(stream, seps, labels, ids, plan)
        labelled[variant] = labelled_positions(rows, variant)
        for _, mid, label, pos in labelled[variant]:
            i = ids.index(mid)
            assert pos == seps[i] - 1 and label == labels[i]
    ws, we = keep_window(len(stream), [], max_tokens, truncation)
    assert triples["recurrent"] == Counter((None, p, stream[p]) for p in range(ws, we))  # each exactly once
    assert triples["recurrent"] == triples["in_context"] == triples["none"]
    assert labelled["recurrent"] == labelled["in_context"] == labelled["none"]
    if max_tokens is None or len(stream) <= max_tokens:
        assert len(labelled["recurrent"]) == sum(not math.isnan(y) for y in labels)


def test_in_context_rows_carry_earlier_context_and_none_rows_stay_in_one_message():
    stream, seps = stream_of([[10, 11, 12], [20, 21], [30, 31, 32, 33, 34, 35, 36]])
    plan = Plan("in_context", "lm", 4, 6, None, "oldest", START, False)
    rows = layout_author(stream, seps, [math.nan] * 3, ["a", "b", "c"], plan)
    assert rows[0]["input_ids"] == [START, 10, 11, 12] and rows[0]["labels"] == [-100, 10, 11, 12]
    assert rows[1]["input_ids"] == [START, 11, 12, SEP, 20, 21] and rows[1]["labels"] == [-100, -100, -100, SEP, 20, 21]
    plan = Plan("none", "lm", 4, 4, None, "oldest", START, False)
    rows = layout_author(stream, seps, [math.nan] * 3, ["a", "b", "c"], plan)
    assert [r["input_ids"] for r in rows] == [[START, 10, 11, 12], [START, SEP], [START, 20, 21, SEP],
                                              [START, 30, 31, 32], [START, 33, 34, 35], [START, 36, SEP]]
    plan = Plan("none", "message", 4, 4, None, "labels", START, False)
    rows = layout_author(stream, seps, [math.nan, 1.0, 2.0], ["a", "b", "c"], plan)
    assert [(r["input_ids"], r["labels"], r["message_id"]) for r in rows] == [
        ([START, 20, 21], 1, "b"), ([START, 34, 35, 36], 2, "c")]  # ends at the last text token


def test_truncation_policies():
    assert keep_window(10, [], None, "oldest") == (0, 10)
    assert keep_window(10, [], 4, "oldest") == (0, 4)
    assert keep_window(10, [], 4, "newest") == (6, 10)
    # labels at positions 1, 5, 6 and 20 (separators right after): the window of 6 ending after 6 holds two
    assert keep_window(30, [1, 5, 6, 20], 6, "labels") == (2, 8)
    assert keep_window(30, [1, 20], 6, "labels") == (16, 22)  # tie: the later window
    assert keep_window(30, [1], 6, "labels") == (0, 6)  # at the start: topped up with later tokens


# ------------------------------------------------------------------------------------------- end to end


def random_corpus(draw_seed, n_authors, labelled_share):
    import random

    rng = random.Random(draw_seed)
    rows = []
    for m in range(n_authors * 6):
        author = rng.randrange(n_authors)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        label = rng.choice(["against", "none", "favor"]) if rng.random() < labelled_share else None
        rows.append({"user_id": f"a{author}", "message_id": m, "timestamp": f"2020-01-01 00:{rng.randrange(60):02d}:00",
                     "message": text, "label": label})
    return pd.DataFrame(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_authors=st.integers(1, 6), block_size=st.sampled_from([8, 16, 32]),
       max_blocks=st.one_of(st.none(), st.integers(1, 3)))
def test_built_datasets_keep_every_token_once_in_order(tokenizer, seed, n_authors, block_size, max_blocks):
    frame = random_corpus(seed, n_authors, 0.3)
    corpus = load_corpus(frame, task="message")
    sep = tokenizer.eos_token_id
    streams = {}
    for user, group in corpus.frame.groupby("user_id", sort=False):
        stream = []
        for text in group["message"]:
            stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [sep]
        streams[user] = stream
    triples, labelled = {}, {}
    for variant in blocks.VARIANTS:
        data = build_blocks(corpus, tokenizer, variant=variant, task="lm", block_size=block_size, cache_dir=None,
                            max_blocks=max_blocks)
        rows = data.dataset.to_list()
        triples[variant], inputs = predicted(rows, variant, sep)  # no bos: the separator starts every row
        assert all(streams[u][p] == t for u, p, t in inputs)  # no row mixes authors; order is the stream's
        message = build_blocks(corpus, tokenizer, variant=variant, block_size=block_size, cache_dir=None,
                               max_blocks=max_blocks)
        labelled[variant] = labelled_positions(message.dataset.to_list(), variant)
        r = message.report
        assert r.labels_read == r.labels_kept + sum(r.labels_dropped.values()) + r.labels_truncated
        assert r.messages_read == r.messages_kept + sum(r.messages_dropped.values()) + r.messages_truncated
    if max_blocks is None:  # every token of every message, exactly once
        assert triples["recurrent"] == Counter((u, p, t) for u, s in streams.items() for p, t in enumerate(s))
    assert triples["recurrent"] == triples["in_context"] == triples["none"]
    assert labelled["recurrent"] == labelled["in_context"] == labelled["none"]
    ids = {mid: (u, y) for u, mid, y in corpus.frame[["user_id", "message_id", "label"]].itertuples(index=False)}
    for user, mid, label, pos in labelled["recurrent"]:
        text = corpus.frame.loc[corpus.frame["message_id"] == mid, "message"].item()
        last = tokenizer(text, add_special_tokens=False)["input_ids"][-1]
        assert ids[mid] == (user, label) and streams[user][pos] == last and streams[user][pos + 1] == sep
    if max_blocks is None:
        assert len(labelled["recurrent"]) == corpus.frame["label"].notna().sum()


def test_start_token_is_bos_when_the_tokenizer_has_one(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.bos_token = tok.convert_ids_to_tokens(100)
    corpus = load_corpus(pd.DataFrame({"user_id": ["a"], "message": ["the author writes"]}))
    data = build_blocks(corpus, tok, block_size=8, cache_dir=None)
    assert data.start_id == 100 and data.dataset[0]["input_ids"][0][0] == 100
    assert data.dataset[0]["input_ids"][0][-1] == tok.eos_token_id


def test_a_message_longer_than_the_tokenizer_maximum_is_cut_into_blocks_without_a_warning(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.model_max_length = 12
    tok.deprecation_warnings.clear()  # transformers warns once per tokenizer: make this one unwarned
    text = "the author writes a long message that goes on and on and on about many things at once"
    corpus = load_corpus(pd.DataFrame({"user_id": ["a"], "message": [text]}))
    data = build_blocks(corpus, tok, block_size=8, cache_dir=None)
    assert len(data.dataset[0]["input_ids"]) > 1  # the message spans several blocks
    # transformers records the warning it gave ("... will result in indexing errors") in this dict
    assert not tok.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")


def test_author_task_and_report(tokenizer):
    frame = random_corpus(1, 4, 0).assign(label=lambda f: f["user_id"].str[1:].astype(float) / 2)
    corpus = load_corpus(frame, task="author", regression=True)
    rec = build_blocks(corpus, tokenizer, block_size=16, cache_dir=None)
    assert sorted(rec.dataset["labels"]) == sorted(frame.groupby("user_id")["label"].first())
    rows = build_blocks(corpus, tokenizer, block_size=16, variant="in_context", cache_dir=None).dataset
    assert set(zip(rows["user_id"], rows["labels"])) == set(zip(rec.dataset["user_id"], rec.dataset["labels"]))
    assert rec.report.labels_kept == 4 and rec.report.examples == 4 and "4 kept" in str(rec.report)


def test_untokenizable_messages_and_unlabelled_authors_are_counted(tokenizer):
    class Dropper:
        """Wraps a tokenizer and tokenizes one magic message to nothing."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

        def __call__(self, texts, **kw):
            out = self.inner(texts, **kw)
            out["input_ids"] = [[] if t == "vanish" else ids for t, ids in zip(texts, out["input_ids"])]
            return out

    frame = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "message": ["the", "vanish", "vanish", "bad"],
                          "label": [None, "x", None, None]})
    data = build_blocks(load_corpus(frame, task="message"), Dropper(tokenizer), cache_dir=None, block_size=8)
    r = data.report
    assert r.messages_dropped == {"no tokens after tokenization": 2, "author has no labelled message (message task)": 2}
    assert r.authors_dropped == {"no tokens after tokenization": 1, "no labelled message (message task)": 2}
    assert r.labels_dropped == {"on messages with no tokens": 1} and len(data.dataset) == 0


def test_config_errors(tokenizer):
    corpus = load_corpus(pd.DataFrame({"user_id": ["a"], "message": ["x"]}))
    cases = [({"context_window": 4, "block_size": 8}, "context_window"), ({"task": "message"}, "needs a corpus"),
             ({"truncation": "labels"}, "truncation"), ({"separator": "no-such-token"}, "not a token"),
             ({"separator": 10**6}, "outside the vocabulary"), ({"variant": "rnn"}, "variant"),
             ({"block_size": 1}, "block_size"), ({"max_blocks": 0}, "max_blocks")]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            build_blocks(corpus, tokenizer, cache_dir=None, **kwargs)
    data = build_blocks(corpus, tokenizer, cache_dir=None, separator="<|pad|>")
    assert data.separator_id == tokenizer.pad_token_id


# ------------------------------------------------------------------------------------------------ caching


def test_second_build_is_served_from_cache_files(tokenizer, tmp_path, monkeypatch):
    corpus = load_corpus(random_corpus(5, 5, 0.3), task="message")
    first = build_blocks(corpus, tokenizer, block_size=16, cache_dir=tmp_path)
    assert all(f["filename"].startswith(str(tmp_path)) for f in first.dataset.cache_files)

    def boom(*args, **kwargs):
        raise AssertionError("re-tokenized despite the cache")

    monkeypatch.setattr(blocks, "_tokenize_batch", boom)
    monkeypatch.setattr(blocks, "_layout_batch", boom)
    second = build_blocks(corpus, tokenizer, block_size=16, cache_dir=tmp_path)
    assert second.dataset.to_list() == first.dataset.to_list() and str(second.report) == str(first.report)
    assert second.dataset.cache_files == first.dataset.cache_files
    with pytest.raises(AssertionError, match="re-tokenized"):  # a new layout reuses tokens but lays out anew
        build_blocks(corpus, tokenizer, block_size=32, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="re-tokenized"):  # a changed corpus is tokenized anew
        changed = load_corpus(random_corpus(6, 5, 0.3), task="message")
        build_blocks(changed, tokenizer, block_size=16, cache_dir=tmp_path)


def test_worker_processes_give_the_same_dataset(tokenizer, tmp_path):
    corpus = load_corpus(random_corpus(9, 6, 0.3), task="message")
    one = build_blocks(corpus, tokenizer, block_size=16, cache_dir=None)
    two = build_blocks(corpus, tokenizer, block_size=16, cache_dir=tmp_path, num_proc=2, batch_size=2)
    assert two.dataset.to_list() == one.dataset.to_list() and str(two.report) == str(one.report)


# ----------------------------------------------------------------------------------------------- collator


def built(tokenizer, **kwargs):
    corpus = load_corpus(random_corpus(7, 5, 0.3), task=kwargs.pop("corpus_task", "message"), **kwargs.pop("load", {}))
    return build_blocks(corpus, tokenizer, cache_dir=None, **kwargs)


@pytest.mark.parametrize("variant", blocks.VARIANTS)
@pytest.mark.parametrize("task", ["lm", "message"])
def test_collator_layout(tokenizer, variant, task):
    data = built(tokenizer, variant=variant, task=task, block_size=16)
    features = data.dataset.to_list()[:4]
    batch = HuLMCollator(data.pad_token_id)(features)
    if variant == "recurrent":
        A, K, T = batch["input_ids"].shape
        assert (A, K) == (4, max(f["n_blocks"] for f in features)) and T == 16
        for a, f in enumerate(features):
            assert batch["attention_mask"][a, f["n_blocks"]:].sum() == 0  # appended all-padding blocks
            assert batch["attention_mask"][a].sum() == f["length"]
        assert batch["labels"].shape == (A, K, T)
    else:
        R, T = batch["input_ids"].shape
        assert R == 4 and T % 8 == 0 and T >= max(f["length"] for f in features)
        assert batch["attention_mask"].sum() == sum(f["length"] for f in features)
        assert batch["labels"].shape == ((R, T) if task == "lm" else (R,))
    assert (batch["input_ids"][batch["attention_mask"] == 0] == data.pad_token_id).all()
    if batch["labels"].dim() == batch["input_ids"].dim():
        assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
        real = batch["labels"] != IGNORE_INDEX
        if task == "lm":
            assert (batch["labels"][real] == batch["input_ids"][real]).all()
        else:
            assert real.sum() == sum(len(f["message_ids"]) for f in features)
    assert batch["labels"].dtype == torch.long


def test_collator_regression_labels_and_rounding(tokenizer):
    frame = random_corpus(3, 4, 0.5)
    frame["label"] = frame["label"].map({"against": -1.5, "none": 0.0, "favor": 2.0})
    corpus = load_corpus(frame, task="message", regression=True)
    data = build_blocks(corpus, tokenizer, block_size=12, cache_dir=None)
    batch = HuLMCollator(data.pad_token_id)(data.dataset.to_list())
    labels = batch["labels"]
    assert labels.dtype == torch.float32 and labels.shape == batch["input_ids"].shape
    assert set(labels[labels != IGNORE_INDEX].tolist()) <= {-1.5, 0.0, 2.0}
    assert (labels != IGNORE_INDEX).sum() == sum(len(m) for m in data.dataset["message_ids"])
    assert batch["input_ids"].shape[-1] == 16  # 12 rounded up to a multiple of 8
    assert HuLMCollator(data.pad_token_id, max_length=12)(data.dataset.to_list())["input_ids"].shape[-1] == 12
    rows = build_blocks(corpus, tokenizer, variant="none", block_size=12, cache_dir=None).dataset.to_list()
    assert HuLMCollator(0)(rows)["labels"].dtype == torch.float32


def test_padding_fraction_matches_the_collator(tokenizer):
    for variant in blocks.VARIANTS:
        data = built(tokenizer, variant=variant, task="lm", block_size=16)
        features = data.dataset.to_list()
        for batch_size in (1, 3):
            cells = real = 0
            for b in range(0, len(features), batch_size):
                batch = HuLMCollator(0)(features[b : b + batch_size])
                cells += batch["attention_mask"].numel()
                real += batch["attention_mask"].sum().item()
            assert padding_fraction(data.dataset, batch_size) == pytest.approx(1 - real / cells)
    many = load_corpus(random_corpus(8, 60, 0))  # enough rows for the sampler's mega-batches to sort
    none = build_blocks(many, tokenizer, variant="none", block_size=64, cache_dir=None).dataset
    assert padding_fraction(none, 8, group_by_length=True) < padding_fraction(none, 8) / 2
