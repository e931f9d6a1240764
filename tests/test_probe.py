"""eval/features.py + eval/probe.py: frozen feature candidates land on the right messages and authors, the probe
protocol scores every model over all authors and compares them with intervals, and the CLI runs end to end on task
files (the protocol's statistics: tests/test_protocol.py)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config, tiny_llama_config
from hullama.data.corpus import load_corpus, split_by_author
from hullama.data.synthetic import synthetic_corpus
from hullama.data.tokenizer import train_byte_bpe
from hullama.eval.features import MessagePooling, author_features, message_features
from hullama.eval.probe import format_table, main, probe_tasks
from hullama.eval.tasks import STANCE_LABELS, TaskSpec, load_task
from modeling_hullama import HuLlamaForCausalLM

BLOCK = 64
FRACTIONS = {"train": 0.5, "dev": 0.25, "test": 0.25}



@pytest.fixture(scope="module")
def frame():
    """12 synthetic authors; every other message labelled with a stance tied to the author's persona."""
    frame = synthetic_corpus(n_authors=12, messages_per_author=5, seed=2)
    stance = frame["persona"].map(lambda p: STANCE_LABELS[sorted(set(frame["persona"])).index(p) % 3])
    return frame.assign(label=stance.where(frame.index % 2 == 0, None))


@pytest.fixture(scope="module")
def tokenizer(frame):
    """A tokenizer of the synthetic texts: short messages, fast tests."""
    return train_byte_bpe(frame["message"], vocab_size=512)


@pytest.fixture(scope="module")
def stance(frame):
    return load_corpus(frame[["user_id", "message_id", "timestamp", "message", "label"]], task="message",
                       labels=list(STANCE_LABELS))


@pytest.fixture(scope="module")
def age(frame):
    return load_corpus(frame[["user_id", "message_id", "timestamp", "message"]].assign(label=frame["age"]),
                       task="author", regression=True)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    hullama = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(tiny_llama_config()).eval()
    return hullama, llama


def test_message_features_sit_on_the_labelled_messages(stance, tokenizer, models):
    hullama, llama = models
    labelled = stance.frame.dropna(subset=["label"]).set_index("message_id")["label"]
    # blocks of 24 tokens: messages straddle blocks, and one block a forward carries a message's mean across chunks
    whole = message_features(hullama, tokenizer, stance, block_size=24, blocks_per_forward=None, progress=False)
    chunked = message_features(hullama, tokenizer, stance, block_size=24, blocks_per_forward=1, progress=False)
    assert chunked.ids == whole.ids and chunked.y.tolist() == whole.y.tolist() and whole.context == "recurrent"
    assert list(whole.candidates) == [f"layer {i}, {p}" for i in (1, 2, 3, 4) for p in ("last token", "mean of tokens")]
    for name, X in whole.candidates.items():
        np.testing.assert_allclose(chunked.candidates[name], X, rtol=1e-4, atol=1e-4)
    for model, context in ((hullama, "auto"), (hullama, "in_context"), (llama, "auto")):
        f = message_features(model, tokenizer, stance, context=context, block_size=BLOCK, progress=False)
        assert sorted(f.ids) == sorted(labelled.index) and f.y.tolist() == [int(labelled[i]) for i in f.ids]
        assert all(X.shape == (len(labelled), 64) and np.isfinite(X).all() for X in f.candidates.values())
    # the plain Llama reads each message alone: its features are the hidden states at the message's last text
    # token and their mean over the message's text tokens (after the start token)
    row = stance.frame.dropna(subset=["label"]).iloc[0]
    ids = [tokenizer.eos_token_id] + tokenizer(row["message"])["input_ids"]  # start token = the separator here
    assert len(ids) <= BLOCK
    with torch.no_grad():
        hidden = llama.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    at = f.ids.index(row["message_id"])
    for layer in (1, 4):
        assert_close(torch.from_numpy(f.candidates[f"layer {layer}, last token"][at]), hidden[layer][0, -1],
                     rtol=1e-4, atol=1e-4)
        assert_close(torch.from_numpy(f.candidates[f"layer {layer}, mean of tokens"][at]),
                     hidden[layer][0, 1:].mean(0), rtol=1e-4, atol=1e-4)
    only = message_features(llama, tokenizer, stance, layers=[-1], block_size=BLOCK, progress=False)
    assert list(only.candidates) == ["layer 4, last token", "layer 4, mean of tokens"]  # -1: the last hidden state
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        message_features(llama, tokenizer, stance, layers=[5], block_size=BLOCK, progress=False)
    with pytest.raises(ValueError, match="needs a HuLlama model"):
        message_features(llama, tokenizer, stance, context="recurrent", block_size=BLOCK, progress=False)


def test_message_pooling_carries_a_message_across_pieces():
    """Tokens 5 6 | 7 SEP 8 9 SEP 4: read in one piece or cut anywhere, the same means of the same messages."""
    sep = 0
    ids = torch.tensor([5, 6, 7, sep, 8, 9, sep, 4])
    hidden = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    ends = [2, 5]  # the last text tokens of the two finished messages
    expected_mean = torch.stack([hidden[0:3].mean(0), hidden[4:6].mean(0)])
    last, mean = MessagePooling(sep).pool(ids, hidden, torch.tensor(ends))
    assert_close(last, hidden[ends])
    assert_close(mean, expected_mean)
    for cut in range(1, 8):
        pooling = MessagePooling(sep)
        got = [pooling.pool(ids[lo:hi], hidden[lo:hi], torch.tensor([e - lo for e in ends if lo <= e < hi]))[1]
               for lo, hi in ((0, cut), (cut, 8))]
        assert_close(torch.cat(got), expected_mean)


def test_author_features_from_states_and_pooled_messages(age, tokenizer, models):
    hullama, llama = models
    n = len(age.authors)
    state = author_features(hullama, tokenizer, age, block_size=BLOCK, max_blocks=3, progress=False)
    chunked = author_features(hullama, tokenizer, age, block_size=BLOCK, max_blocks=3, blocks_per_forward=1,
                              progress=False)
    assert state.ids == age.authors
    for name, X in state.candidates.items():
        np.testing.assert_allclose(chunked.candidates[name], X, rtol=1e-4, atol=1e-5)
    size = hullama.config.state_size
    assert state.candidates["state, final"].shape == state.candidates["state, mean over blocks"].shape == (n, size)
    label = age.frame.groupby("user_id")["label"].first()
    np.testing.assert_allclose(state.y, label[state.ids].to_numpy())
    both = state.candidates["state mean + messages' layer 4, mean of tokens"]
    np.testing.assert_allclose(both, np.concatenate([state.candidates["state, mean over blocks"],
                                                     state.candidates["layer 4, mean of tokens"]], axis=1))
    # the final state is the state after the author's last real block
    from hullama.data.blocks import build_blocks

    data = build_blocks(age, tokenizer, variant="recurrent", task="author", block_size=BLOCK, max_blocks=3,
                        cache_dir=None)
    first = data.collator()([data.dataset[0]])
    with torch.no_grad():
        final = hullama.model(input_ids=first["input_ids"], attention_mask=first["attention_mask"]).final_author_state
    assert_close(torch.from_numpy(state.candidates["state, final"][0]), final[0], rtol=1e-4, atol=1e-5)
    pooled = author_features(llama, tokenizer, age, block_size=BLOCK, progress=False)
    assert list(pooled.candidates) == [f"layer {i}, {p}" for i in (1, 2, 3, 4) for p in ("last token", "mean of tokens")]
    assert all(X.shape == (n, 64) for X in pooled.candidates.values())


def test_probe_tasks_compares_two_models_with_intervals(stance, age, tokenizer, models, tmp_path):
    hullama, llama = models
    tasks = {
        "stance": (TaskSpec("stance", "message", "weighted_f1", {}, {}, labels=STANCE_LABELS),
                   split_by_author(stance, FRACTIONS, seed=1)),
        "age": (TaskSpec("age", "author", "pearson_r", {}, {}), split_by_author(age, FRACTIONS)),
    }
    hullama.train()
    results = probe_tasks({"llama": (llama, tokenizer), "hullama": (hullama, tokenizer)}, tasks, block_size=BLOCK,
                          max_blocks=3, folds=3, inner_folds=2, bootstrap_samples=200, progress=False)
    assert hullama.training and not llama.training  # modes restored
    assert results["models"]["hullama"]["message_context"] == "recurrent"
    assert results["protocol"]["reference"] == "llama"
    labelled = int(stance.frame["label"].notna().sum())
    for task, metric, rows in (("stance", "weighted_f1", labelled), ("age", "pearson_r", len(age.authors))):
        r = results["tasks"][task]
        assert r["metric"] == metric and r["num_rows"] == rows and r["num_authors"] == 12  # all authors scored
        for name in ("llama", "hullama"):
            score = r["scores"][name]
            assert -1 <= score["score"] <= 1 and score["ci95"][0] <= score["ci95"][1] and len(score["choices"]) == 3
            assert score["chosen"] in score["candidate_scores"] and "layer 4, last token" in score["candidate_scores"]
        diff = r["differences"]["hullama"]
        assert diff["difference"] == pytest.approx(r["scores"]["hullama"]["score"] - r["scores"]["llama"]["score"])
        assert list(r["differences"]) == ["hullama"]
    assert results["summary"]["hullama"]["tasks"] == 2
    table = format_table(results).splitlines()
    assert table[0] == "| task | metric | authors | llama | hullama | hullama - llama |"
    assert table[2].startswith("| stance | weighted_f1 | 12 |") and "hullama vs llama: better on" in table[-1]
    # the real-run report gathers probes run in parts (scripts/smollm2_real_run.sh: tweets and commits side by side)
    from scripts.real_run_report import probe_table

    for part in ("probe_commits", "probe_tweets"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "probe.json").write_text(json.dumps(results))
    lines, rows = probe_table(tmp_path)
    assert lines.count(table[0]) == 2 and len(rows) == 2 * 2 * 2  # parts x tasks x models
    with pytest.raises(ValueError, match="reference 'base' is not one of the models"):
        probe_tasks({"llama": (llama, tokenizer)}, tasks, reference="base", progress=False)


def _write_task_files(root: Path, frame):
    """hart/abo_{train,dev}.jsonl and commits/{numpy,scipy,ipython}_{train,dev,test}.jsonl in the real files' format
    (each author's commits dealt over the three projects, as one person commits to several)."""
    (root / "hart").mkdir(parents=True)
    (root / "commits").mkdir()
    authors = sorted(frame["user_id"].unique())
    for rel, users in {"hart/abo_train.jsonl": authors[:8], "hart/abo_dev.jsonl": authors[8:]}.items():
        part = frame[frame["user_id"].isin(users)][["user_id", "message_id", "timestamp", "message", "label"]]
        part.to_json(root / rel, orient="records", lines=True)
    nth = frame.groupby("user_id").cumcount() % 3
    for split, users in {"train": authors[:6], "dev": authors[6:9], "test": authors[9:]}.items():
        for i, project in enumerate(("numpy", "scipy", "ipython")):
            part = frame[frame["user_id"].isin(users) & (nth == i)]
            part = part[["user_id", "message_id", "timestamp", "message"]].assign(source=project)
            part.to_json(root / "commits" / f"{project}_{split}.jsonl", orient="records", lines=True)


def test_cli_two_models_on_registered_tasks(frame, tokenizer, models, tmp_path):
    hullama, llama = models
    for name, model in (("hullama", hullama), ("llama", llama)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    data = tmp_path / "data"
    _write_task_files(data, frame)
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(tmp_path / "llama"), str(tmp_path / "hullama"), "--name", "base", "hulm",
            "--tasks", "stance_abortion", "commit_first_year", "--data_dir", str(data), "--block_size",
            str(BLOCK), "--max_blocks", "2", "--folds", "3", "--inner_folds", "2", "--bootstrap_samples", "100",
            "--output_dir", str(out), "--device", "cpu"]
    results = main(args)
    assert json.loads((out / "probe.json").read_text()) == json.loads(json.dumps(results))
    table = (out / "probe.md").read_text()
    assert "| task | metric | authors | base | hulm | hulm - base |" in table
    assert "| commit_first_year | pearson_r | 12 |" in table
    assert results["models"]["hulm"]["hullama"] and not results["models"]["base"]["hullama"]
    with pytest.raises(SystemExit):  # three adapters for two models
        main(args[:3] + ["--adapter", "none", "none", "none"])
    with pytest.raises(SystemExit):  # a flag given twice is refused, not the last one kept
        main(["--model", str(tmp_path / "llama"), "--model", str(tmp_path / "hullama")])
    with pytest.raises(SystemExit):
        main(args[:2] + ["--tasks", "no_such_task"])
    for wrong in (["--folds", "1"], ["--reference", "nobody"]):
        with pytest.raises(SystemExit):
            main(args + wrong)


@pytest.mark.slow
def test_real_tasks_with_tiny_models_score_every_author(shared_data, tokenizer, models):
    hullama, llama = models
    both = {"llama": (llama, tokenizer), "hullama": (hullama, tokenizer)}
    results = probe_tasks(both, ["stance_abortion", "commit_region"], data_dir=shared_data, block_size=BLOCK,
                          max_blocks=4, batch_size=8, bootstrap_samples=200, progress=False)["tasks"]
    splits = load_task("stance_abortion", shared_data)
    labelled = sum(int(c.frame["label"].notna().sum()) for c in splits.values())
    stance, region = results["stance_abortion"], results["commit_region"]
    # the 4-block window keeps each author's last labelled tweets: every label is scored or counted as dropped
    dropped = stance["labels_dropped"]["llama"]
    assert stance["num_rows"] + dropped == labelled and stance["labels_dropped"]["hullama"] == dropped
    assert region["num_rows"] == region["num_authors"] == 556  # the three projects' authors, pooled
    for task in (stance, region):
        for name in both:
            assert 0 <= task["scores"][name]["score"] <= 1


def test_author_tasks_on_the_same_files_share_one_forward_pass(age, tokenizer, models):
    hullama, _ = models
    splits = split_by_author(age, FRACTIONS)
    negated = {s: replace(c, frame=c.frame.assign(label=-c.frame["label"])) for s, c in splits.items()}
    spec = TaskSpec("age", "author", "pearson_r", {"train": "same.jsonl"}, {})
    calls = []
    hook = hullama.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        quick = dict(block_size=BLOCK, folds=3, inner_folds=2, bootstrap_samples=50, progress=False)
        one = probe_tasks({"m": (hullama, tokenizer)}, {"age": (spec, splits)}, **quick)
        alone = len(calls)
        both = probe_tasks({"m": (hullama, tokenizer)}, {"age": (spec, splits), "minus_age": (spec, negated)}, **quick)
    finally:
        hook.remove()
    assert alone > 0 and len(calls) == 2 * alone  # the second task reused the first one's features
    age = one["tasks"]["age"]["scores"]["m"]["score"]
    assert both["tasks"]["age"]["scores"]["m"]["score"] == pytest.approx(age)
    # ridge on -y predicts -prediction: Pearson r is unchanged, so the relabelled features are the same ones
    assert both["tasks"]["minus_age"]["scores"]["m"]["score"] == pytest.approx(age, abs=1e-6)


def test_a_piece_holding_only_its_separator_adds_nothing_to_the_mean_of_tokens(tokenizer, models):
    """A message exactly one row long is read as two pieces, its text and then its separator alone: the mean-of-tokens
    feature averages the text only; the last-token feature takes both pieces' last tokens."""
    _, llama = models
    message = "the quick brown fox jumps over the lazy dog"
    tokens = tokenizer(message)["input_ids"]
    block = len(tokens) + 1  # the start token and the text fill the first row; the separator gets a row of its own
    frame = pd.DataFrame({"user_id": ["u"], "message_id": ["m"], "timestamp": [None], "message": [message],
                          "label": [1.0]})
    corpus = load_corpus(frame, task="author", regression=True)
    f = author_features(llama, tokenizer, corpus, layers=[4], block_size=block, progress=False)
    start = tokenizer.eos_token_id
    with torch.no_grad():
        text = llama.model(torch.tensor([[start, *tokens]]), output_hidden_states=True).hidden_states[4][0]
        alone = llama.model(torch.tensor([[start, start]]), output_hidden_states=True).hidden_states[4][0]
    assert_close(torch.from_numpy(f.candidates["layer 4, mean of tokens"][0]), text[1:].mean(0), rtol=1e-4, atol=1e-4)
    assert_close(torch.from_numpy(f.candidates["layer 4, last token"][0]), (text[-1] + alone[-1]) / 2, rtol=1e-4,
                 atol=1e-4)
