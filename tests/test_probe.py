"""eval/features.py + eval/probe.py: frozen features land on the right messages and authors, the linear probes
select on dev and score on test, two models compare in one table, and the CLI runs end to end on task files."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config, tiny_llama_config
from hullama.data.corpus import load_corpus, split_by_author
from hullama.data.synthetic import synthetic_corpus
from hullama.data.tokenizer import train_byte_bpe
from hullama.eval.features import Features, author_features, message_features
from hullama.eval.probe import fit_probe, format_table, main, probe_tasks
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
    whole = message_features(hullama, tokenizer, stance, block_size=24, blocks_per_forward=None, progress=False)
    chunked = message_features(hullama, tokenizer, stance, block_size=24, blocks_per_forward=1, progress=False)
    assert chunked.ids == whole.ids and chunked.y.tolist() == whole.y.tolist()
    np.testing.assert_allclose(chunked.X, whole.X, rtol=1e-4, atol=1e-4)
    for model, context in ((hullama, "auto"), (hullama, "in_context"), (llama, "auto")):
        f = message_features(model, tokenizer, stance, context=context, block_size=BLOCK, progress=False)
        assert sorted(f.ids) == sorted(labelled.index) and f.X.shape == (len(labelled), 64)
        assert f.y.tolist() == [int(labelled[i]) for i in f.ids]
        assert np.isfinite(f.X).all()
    # the plain Llama reads each message alone: its feature is the hidden state at the message's last text token
    row = stance.frame.dropna(subset=["label"]).iloc[0]
    ids = [tokenizer.eos_token_id] + tokenizer(row["message"])["input_ids"]  # start token = the separator here
    assert len(ids) <= BLOCK
    with torch.no_grad():
        expected = llama.model(torch.tensor([ids])).last_hidden_state[0, -1]
    assert_close(torch.from_numpy(f.X[f.ids.index(row["message_id"])]), expected, rtol=1e-4, atol=1e-4)
    # a chosen layer: hidden_states[1] is the output of decoder layer 0
    f1 = message_features(llama, tokenizer, stance, layer=1, block_size=BLOCK, progress=False)
    with torch.no_grad():
        expected = llama.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, -1]
    assert_close(torch.from_numpy(f1.X[f1.ids.index(row["message_id"])]), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs a HuLlama model"):
        message_features(llama, tokenizer, stance, context="recurrent", block_size=BLOCK, progress=False)


def test_author_features_from_states_and_pooled_messages(age, tokenizer, models):
    hullama, llama = models
    n = len(age.authors)
    state = author_features(hullama, tokenizer, age, block_size=BLOCK, max_blocks=3, progress=False)
    chunked = author_features(hullama, tokenizer, age, block_size=BLOCK, max_blocks=3, blocks_per_forward=1,
                              progress=False)
    np.testing.assert_allclose(chunked.X, state.X, rtol=1e-4, atol=1e-5)
    assert state.X.shape == (n, hullama.config.state_size) and state.ids == age.authors
    label = age.frame.groupby("user_id")["label"].first()
    np.testing.assert_allclose(state.y, label[state.ids].to_numpy())
    pooled = author_features(llama, tokenizer, age, block_size=BLOCK, progress=False)
    assert pooled.X.shape == (n, 64) and "messages" in pooled.description
    both = author_features(hullama, tokenizer, age, source="state+messages", block_size=BLOCK, max_blocks=3,
                           progress=False)
    assert both.X.shape == (n, hullama.config.state_size + 64)
    np.testing.assert_allclose(both.X[:, : hullama.config.state_size], state.X)
    with pytest.raises(ValueError, match="need a HuLlama model"):
        author_features(llama, tokenizer, age, source="state", progress=False)


def _features(X, y):
    return Features(np.asarray(X, dtype=np.float32), np.asarray(y), [str(i) for i in range(len(y))], [], "toy")


def test_fit_probe_selects_on_dev_and_scores_test():
    rng = np.random.default_rng(0)

    def classes(n):
        y = rng.integers(0, 3, n)
        return _features(np.eye(3)[y] * 3 + rng.normal(0, 0.3, (n, 3)), y)

    result = fit_probe(classes(60), classes(30), classes(30), metric="weighted_f1", regression=False)
    best = max(g["dev"] for g in result["grid"])
    assert result["test"] == 1.0 and result["dev"] == best
    assert result["hyperparameter"]["C"] == next(g["C"] for g in result["grid"] if g["dev"] == best)  # ties: first
    assert len(result["grid"]) == 6 and (result["n_train"], result["n_dev"], result["n_test"]) == (60, 30, 30)

    def linear(n):
        X = rng.normal(size=(n, 4))
        return _features(X, X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(0, 0.01, n))

    result = fit_probe(linear(80), linear(40), linear(40), metric="pearson_r", regression=True)
    assert result["test"] > 0.99 and result["hyperparameter"]["alpha"] <= 10
    one_class = fit_probe(_features(np.ones((4, 3)), [1, 1, 1, 1]), classes(6), classes(6), metric="weighted_f1",
                          regression=False)
    assert "single class" in one_class["note"]
    with pytest.raises(ValueError, match="the dev split has no labelled example"):
        fit_probe(classes(5), _features(np.zeros((0, 3)), []), classes(5), metric="weighted_f1", regression=False)


def test_probe_tasks_compares_two_models_in_one_table(stance, age, tokenizer, models):
    hullama, llama = models
    tasks = {
        "stance": (TaskSpec("stance", "message", "weighted_f1", {}, {}, labels=STANCE_LABELS),
                   split_by_author(stance, FRACTIONS, seed=1)),
        "age": (TaskSpec("age", "author", "pearson_r", {}, {}), split_by_author(age, FRACTIONS)),
    }
    hullama.train()
    results = probe_tasks({"llama": (llama, tokenizer), "hullama": (hullama, tokenizer)}, tasks, block_size=BLOCK,
                          max_blocks=3, progress=False)
    assert hullama.training and not llama.training  # modes restored
    assert results["models"]["hullama"]["message_context"] == "recurrent"
    assert results["models"]["llama"]["author_features"] == "messages"
    for task, metric in (("stance", "weighted_f1"), ("age", "pearson_r")):
        for name in ("llama", "hullama"):
            r = results["results"][task][name]
            assert r["metric"] == metric and -1 <= r["test"] <= 1 and r["n_test"] > 0
    table = format_table(results).splitlines()
    assert table[0] == "| task | metric | llama | hullama | hullama - llama |" and len(table) == 4
    assert table[2].startswith("| stance | weighted_f1 |")
    json.dumps(results)


def _write_task_files(root: Path, frame):
    """hart/abo_{train,dev}.jsonl and commits/numpy_{train,dev,test}.jsonl in the real files' format."""
    (root / "hart").mkdir(parents=True)
    (root / "commits").mkdir()
    authors = sorted(frame["user_id"].unique())
    files = {"hart/abo_train.jsonl": authors[:8], "hart/abo_dev.jsonl": authors[8:],
             "commits/numpy_train.jsonl": authors[:6], "commits/numpy_dev.jsonl": authors[6:9],
             "commits/numpy_test.jsonl": authors[9:]}
    for rel, users in files.items():
        part = frame[frame["user_id"].isin(users)][["user_id", "message_id", "timestamp", "message", "label"]]
        if rel.startswith("commits"):
            part = part.drop(columns="label").assign(source="numpy")
        part.to_json(root / rel, orient="records", lines=True)


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
            str(BLOCK), "--max_blocks", "2", "--output_dir", str(out), "--device", "cpu"]
    results = main(args)
    assert json.loads((out / "probe.json").read_text()) == json.loads(json.dumps(results))
    table = (out / "probe.md").read_text()
    assert "| task | metric | base | hulm | hulm - base |" in table and "| commit_first_year | pearson_r |" in table
    assert results["models"]["hulm"]["hullama"] and not results["models"]["base"]["hullama"]
    with pytest.raises(SystemExit):  # three adapters for two models
        main(args[:3] + ["--adapter", "none", "none", "none"])
    with pytest.raises(SystemExit):  # a flag given twice is refused, not the last one kept
        main(["--model", str(tmp_path / "llama"), "--model", str(tmp_path / "hullama")])
    with pytest.raises(SystemExit):
        main(args[:2] + ["--tasks", "no_such_task"])


@pytest.mark.slow
def test_real_stance_task_with_tiny_models(shared_data, tokenizer, models):
    hullama, llama = models
    both = {"llama": (llama, tokenizer), "hullama": (hullama, tokenizer)}
    stance = probe_tasks(both, ["stance_abortion"], data_dir=shared_data, block_size=BLOCK, batch_size=8,
                         progress=False)["results"]["stance_abortion"]
    region = probe_tasks(both, ["commit_region"], data_dir=shared_data, block_size=BLOCK, max_blocks=4,
                         batch_size=8, progress=False)["results"]["commit_region"]
    splits = load_task("stance_abortion", shared_data)
    n_test = int(splits["test"].frame["label"].notna().sum())
    for name in both:
        assert stance[name]["n_test"] == n_test and stance[name]["labels_dropped"] == {"train": 0, "dev": 0, "test": 0}
        assert 0 <= stance[name]["test"] <= 1
        assert region[name]["n_test"] == 24 and 0 <= region[name]["test"] <= 1


def test_author_tasks_on_the_same_files_share_one_forward_pass(age, tokenizer, models):
    hullama, _ = models
    splits = split_by_author(age, FRACTIONS)
    negated = {s: replace(c, frame=c.frame.assign(label=-c.frame["label"])) for s, c in splits.items()}
    spec = TaskSpec("age", "author", "pearson_r", {"train": "same.jsonl"}, {})
    calls = []
    hook = hullama.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        one = probe_tasks({"m": (hullama, tokenizer)}, {"age": (spec, splits)}, block_size=BLOCK, progress=False)
        alone = len(calls)
        both = probe_tasks({"m": (hullama, tokenizer)}, {"age": (spec, splits), "minus_age": (spec, negated)},
                           block_size=BLOCK, progress=False)
    finally:
        hook.remove()
    assert alone > 0 and len(calls) == 2 * alone  # the second task reused the first one's features
    assert both["results"]["age"]["m"]["test"] == pytest.approx(one["results"]["age"]["m"]["test"])
    # ridge on -y predicts -prediction: Pearson r is unchanged, so the relabelled features are the same ones
    assert both["results"]["minus_age"]["m"]["test"] == pytest.approx(one["results"]["age"]["m"]["test"], abs=1e-6)
