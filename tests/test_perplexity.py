"""eval/perplexity.py: the variants score the same tokens, the numbers match the model's own loss, the zeroed-state
ablation, the breakdowns and the paired bootstrap, and the CLI (files written, one-line errors)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config, tiny_llama_config
from hullama.data.blocks import build_blocks
from hullama.data.corpus import load_corpus
from hullama.data.synthetic import synthetic_corpus
from hullama.eval.perplexity import (
    ZEROED, TokenMismatchError, TokenScores, check_same_tokens, evaluate_perplexity, main, paired_bootstrap,
    perplexity_figure, score_variants, summarize,
)
from modeling_hullama import HuLlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
BLOCK = 48



@pytest.fixture(scope="module")
def corpus():
    frame = synthetic_corpus(n_authors=4, messages_per_author=6, seed=3)
    return load_corpus(frame[["user_id", "message_id", "timestamp", "message"]])


def _hullama(trained=True, cls=HuLlamaForCausalLM):
    torch.manual_seed(0)
    model = cls(tiny_hullama_config())
    return perturb_state_modules(model) if trained else model


def test_variants_score_the_same_tokens_and_recurrent_matches_the_model_loss(corpus, tokenizer):
    model = _hullama().train()  # evaluation must switch to eval mode and back
    scores = score_variants(model, tokenizer, corpus, block_size=BLOCK, batch_size=3, progress=False)
    assert model.training
    assert set(scores.nll) == {"recurrent", "in_context", "none", ZEROED} and not scores.skipped
    stream_tokens = sum(len(tokenizer(m)["input_ids"]) + 1 for m in corpus.frame["message"])  # + separators
    assert len(scores.token) == stream_tokens
    assert scores.history.min() == 0 and (scores.block == scores.history // (BLOCK - 1)).all()

    # recurrent: the mean NLL is the model's own loss on the whole recurrent batch
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="lm", block_size=BLOCK, cache_dir=None)
    batch = data.collator()(data.dataset.to_list())
    with torch.no_grad():
        loss = model.eval()(**batch).loss
    assert_close(scores.nll["recurrent"].mean(), loss.item(), rtol=1e-5, atol=1e-5)

    # the ablation equals recurrent on block 1 (both start from U0) and differs once a state was carried
    first = scores.block == 0
    assert_close(scores.nll[ZEROED][first], scores.nll["recurrent"][first], rtol=1e-4, atol=1e-4)
    assert scores.block.max() >= 1
    assert not np.allclose(scores.nll[ZEROED][~first], scores.nll["recurrent"][~first])


def test_chunks_of_blocks_carry_the_state_exactly(corpus, tokenizer, monkeypatch):
    import hullama.eval.perplexity as perplexity
    from hullama.eval.features import model_parts

    model = _hullama()
    kw = dict(block_size=32, batch_size=4, progress=False, variants=["recurrent"])
    whole = score_variants(model, tokenizer, corpus, blocks_per_forward=None, **kw)
    assert whole.block.max() >= 3
    chunked = score_variants(model, tokenizer, corpus, blocks_per_forward=2, **kw)
    monkeypatch.setattr(perplexity, "model_parts", lambda m: replace(model_parts(m), ablate_kwarg=None))
    reset = score_variants(model, tokenizer, corpus, blocks_per_forward=3, **kw)  # every block alone, in chunks
    for v in ("recurrent", ZEROED):
        assert_close(chunked.nll[v], whole.nll[v], rtol=1e-4, atol=1e-4)
        assert_close(reset.nll[v], whole.nll[v], rtol=1e-4, atol=1e-4)


def test_plain_llama_matches_untrained_hullama_and_skips_recurrent(corpus, tokenizer):
    from transformers import LlamaForCausalLM

    hullama = _hullama(trained=False).eval()
    llama = LlamaForCausalLM(tiny_llama_config()).eval()
    llama.load_state_dict(hullama.state_dict(), strict=False)
    kw = dict(block_size=BLOCK, batch_size=4, progress=False)
    ours = score_variants(hullama, tokenizer, corpus, **kw)
    theirs = score_variants(llama, tokenizer, corpus, **kw)
    assert set(theirs.skipped) == {"recurrent", ZEROED} and set(theirs.nll) == {"in_context", "none"}
    for v in ("in_context", "none"):
        assert_close(theirs.nll[v], ours.nll[v], rtol=1e-4, atol=1e-4)
    # an untrained state path adds nothing: recurrent is its own ablation
    assert_close(ours.nll["recurrent"], ours.nll[ZEROED], rtol=1e-4, atol=1e-4)


def test_ablation_by_the_models_switch_equals_running_every_block_alone(corpus, tokenizer, monkeypatch):
    import hullama.eval.perplexity as perplexity
    from hullama.eval.features import model_parts

    model = _hullama()
    assert model_parts(model).ablate_kwarg == "ablate_state"  # HuLlama's own switch is found and used
    kw = dict(block_size=BLOCK, batch_size=4, progress=False, variants=["recurrent"])
    switch = score_variants(model, tokenizer, corpus, **kw).nll[ZEROED]
    # a model without the switch: every block alone, flattened to [authors * blocks, tokens], from U0
    monkeypatch.setattr(perplexity, "model_parts", lambda m: replace(model_parts(m), ablate_kwarg=None))
    assert_close(score_variants(model, tokenizer, corpus, **kw).nll[ZEROED], switch, rtol=1e-4, atol=1e-4)


def test_adapter_is_applied(model_dir, corpus, tmp_path):
    from peft import LoraConfig, TaskType, get_peft_model

    from hullama.eval.features import load_model

    torch.manual_seed(1)
    peft_model = get_peft_model(HuLlamaForCausalLM.from_pretrained(model_dir), LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["author_state"],
        init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter, tok = load_model(model_dir, adapter=tmp_path / "adapter", device="cpu")
    without, _ = load_model(model_dir, device="cpu")
    kw = dict(block_size=BLOCK, max_blocks=2, variants=["recurrent"], zeroed_state=False, progress=False)
    ours = score_variants(with_adapter, tok, corpus, **kw).nll["recurrent"]
    assert not np.allclose(ours, score_variants(without, tok, corpus, **kw).nll["recurrent"])
    data = build_blocks(corpus, tok, variant="recurrent", task="lm", block_size=BLOCK, max_blocks=2, cache_dir=None)
    with torch.no_grad():
        loss = with_adapter(**data.collator()(data.dataset.to_list())).loss  # the PEFT model's own forward
    assert_close(ours.mean(), loss.item(), rtol=1e-5, atol=1e-5)


def test_check_same_tokens_finds_every_kind_of_mismatch():
    author, position, token = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([5, 6, 7])
    check_same_tokens({"a": (author, position, token), "b": (author, position, token.copy())})
    with pytest.raises(TokenMismatchError, match="token"):
        check_same_tokens({"a": (author, position, token), "b": (author, position, np.array([5, 6, 8]))})
    with pytest.raises(TokenMismatchError, match="predicts 2 tokens"):
        check_same_tokens({"a": (author, position, token), "b": (author[:2], position[:2], token[:2])})
    with pytest.raises(TokenMismatchError, match="predicted 2"):
        check_same_tokens({"a": (np.array([0, 0]), np.array([3, 3]), np.array([1, 1]))})


def _toy_scores(rng, n_authors=30, per_author=40, block_size=17):
    author = np.repeat(np.arange(n_authors), per_author)
    history = np.tile(np.arange(per_author) * 10, n_authors)
    a = rng.gamma(2.0, 1.0, len(author))
    b = a + rng.normal(0.05, 0.1, len(author))
    return TokenScores([f"u{i}" for i in range(n_authors)], author, history, np.zeros_like(author), history,
                       history // (block_size - 1), {"recurrent": a, "in_context": b, ZEROED: a.copy()},
                       {"recurrent": 1.0, "in_context": 2.0, ZEROED: 1.0}, {})


def test_summary_breakdowns_and_paired_bootstrap():
    scores = _toy_scores(np.random.default_rng(0))
    report = summarize(scores, history_buckets=(0, 100, 300), bootstrap_samples=300, seed=1)
    rec = report["variants"]["recurrent"]
    assert_close(rec["perplexity"], float(np.exp(scores.nll["recurrent"].mean())))
    for part in ("by_history", "by_block", "by_block_index"):
        assert sum(r["num_tokens"] for r in rec[part].values()) == report["num_tokens"] == len(scores.author)
    assert list(rec["by_history"]) == ["0-99", "100-299", "300+"]
    low = scores.history < 100
    assert_close(rec["by_history"]["0-99"]["perplexity"], float(np.exp(scores.nll["recurrent"][low].mean())))
    assert report["time_ratio_recurrent_over_in_context"] == 0.5

    pairs = {(c["a"], c["b"], c["tokens"]): c for c in report["comparisons"]}
    assert set(pairs) == {("recurrent", "in_context", "all"), ("recurrent", "in_context", "blocks 2+"),
                          ("recurrent", ZEROED, "all"), ("recurrent", ZEROED, "blocks 2+")}
    c = pairs["recurrent", "in_context", "all"]
    assert c["ci95"][0] <= c["delta_perplexity"] <= c["ci95"][1] < 0  # a is better by construction
    assert c["ratio_ci95"][0] <= c["ratio"] <= c["ratio_ci95"][1] < 1 and c["share_a_better"] > 0.95
    same = pairs["recurrent", ZEROED, "all"]
    assert same["delta_perplexity"] == 0 and same["ci95"] == [0, 0]
    again = paired_bootstrap(scores.nll["recurrent"], scores.nll["in_context"], scores.author, samples=300, seed=1)
    assert {k: again[k] for k in ("ci95", "ratio_ci95")} == {k: c[k] for k in ("ci95", "ratio_ci95")}
    json.dumps(report)


def test_each_breakdown_has_an_interval_over_its_authors():
    """ci95 of a subset's perplexity: resample the subset's authors, pool their tokens; checked by hand on a subset
    of three authors, and an author with no token in the subset takes no part."""
    author = np.array([0, 0, 1, 1, 1, 2, 3])
    nll = np.array([1.0, 2.0, 0.5, 0.5, 1.5, 3.0, 9.0])
    block = np.array([0, 1, 0, 0, 1, 0, 1])
    scores = TokenScores(["a", "b", "c", "d"], author, np.zeros(7), np.zeros(7, int), np.zeros(7), block,
                         {"none": nll}, {"none": 1.0}, {})
    report = summarize(scores, history_buckets=(0,), bootstrap_samples=200, seed=3)
    first = report["variants"]["none"]["by_block"]["1"]  # authors 0, 1, 2 (author 3 has no token in block 1)
    sums, counts = np.array([1.0, 1.0, 3.0]), np.array([1.0, 2.0, 1.0])
    draws = np.random.default_rng(3).multinomial(3, [1 / 3] * 3, size=200).astype(float)
    expected = np.exp(np.percentile(draws @ sums / (draws @ counts), [2.5, 97.5]))
    assert first["num_authors"] == 3
    assert_close(first["ci95"], expected.tolist())
    assert first["ci95"][0] <= first["perplexity"] <= first["ci95"][1]
    one = report["variants"]["none"]["by_block_index"]  # one author alone: no spread
    single = summarize(replace(scores, author=np.zeros(7, int), authors=["a"]), history_buckets=(0,),
                       bootstrap_samples=50)["variants"]["none"]["by_history"]["0+"]
    assert_close(single["ci95"], [single["perplexity"]] * 2)
    assert set(one) == {"1", "2"} and all(len(e["ci95"]) == 2 for e in one.values())


def test_the_figure_shows_intervals_counts_a_zero_origin_and_names_model_and_corpus():
    scores = _toy_scores(np.random.default_rng(0))
    report = summarize(scores, history_buckets=(0, 100, 300), bootstrap_samples=100)
    report["settings"] = {"block_size": 17, "model": "runs/my-model", "corpus": "numpy_test.jsonl"}
    fig = perplexity_figure(report)
    left, right = fig.axes
    assert left.get_ylim()[0] == 0 and right.get_ylim()[0] == 0
    assert "axis from 0" in left.get_ylabel() and "interval" in left.get_ylabel()
    assert fig._suptitle.get_text() == "runs/my-model on numpy_test.jsonl"
    ticks = [t.get_text() for t in left.get_xticklabels()]
    assert ticks[0].splitlines() == ["0-99", "30 authors", f"{report['variants']['recurrent']['by_history']['0-99']['num_tokens']:,} tok"]
    # error bars: one line collection per variant on each side, with a segment per bar / point
    bars = [c for c in left.collections if c.__class__.__name__ == "LineCollection"]
    assert len(bars) == len(report["variants"]) and all(len(b.get_segments()) == 3 for b in bars)
    rec = report["variants"]["recurrent"]["by_history"]["0-99"]
    assert_close(sorted(y for _, y in bars[0].get_segments()[0]), rec["ci95"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-hullama")
    _hullama().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_writes_json_and_plot(model_dir, corpus, tmp_path):
    data = tmp_path / "authors.jsonl"
    corpus.frame.assign(timestamp=corpus.frame["timestamp"].astype(str)).to_json(data, orient="records", lines=True)
    out = tmp_path / "out"
    results = main(["--model", str(model_dir), "--data", str(data), "--block_size", "64", "--max_blocks", "2",
                    "--max_authors", "3", "--bootstrap_samples", "50", "--output_dir", str(out), "--device", "cpu"])
    saved = json.loads((out / "perplexity.json").read_text())
    assert saved["num_tokens"] == results["num_tokens"] > 0 and saved["num_authors"] == 3
    assert set(saved["variants"]) == {"recurrent", "in_context", "none", ZEROED}
    assert saved["settings"]["max_blocks"] == 2 and saved["settings"]["block_size"] == 64
    assert (out / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reads_a_dataset_by_name_offline(model_dir, corpus, tmp_path, monkeypatch):
    """--dataset_name: a local dataset folder with train / test files, read by datasets.load_dataset with no network;
    --split picks the authors scored."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    frame = corpus.frame.assign(timestamp=corpus.frame["timestamp"].astype(str))
    first, rest = corpus.authors[:1], corpus.authors[1:]
    frame[frame.user_id.isin(first)].to_json(folder / "train.jsonl", orient="records", lines=True)
    frame[frame.user_id.isin(rest)].to_json(folder / "test.jsonl", orient="records", lines=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    results = main(["--model", str(model_dir), "--dataset_name", str(folder), "--block_size", "64",
                    "--max_blocks", "1", "--variants", "none", "--bootstrap_samples", "10",
                    "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert results["num_authors"] == 3 and str(folder) in results["settings"]["corpus"]
    results = main(["--model", str(model_dir), "--dataset_name", str(folder), "--split", "train", "--block_size",
                    "64", "--max_blocks", "1", "--variants", "none", "--bootstrap_samples", "10",
                    "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert results["num_authors"] == 1


def test_evaluate_perplexity_function_api(model_dir, corpus, tokenizer):
    model = HuLlamaForCausalLM.from_pretrained(model_dir)
    results = evaluate_perplexity(model, tokenizer, corpus, block_size=64, max_blocks=1, variants=["none"],
                                  bootstrap_samples=10, progress=False)
    assert list(results["variants"]) == ["none"] and results["comparisons"] == []


def test_cli_bad_input_is_one_line(model_dir, tmp_path):
    missing = tmp_path / "nope.jsonl"
    run = subprocess.run([sys.executable, "eval/perplexity.py", "--model", str(model_dir), "--data", str(missing)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"no such file or folder: {missing}" in run.stderr.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "no-model"), "--data", "synthetic"])


@pytest.mark.slow
def test_real_commit_corpus_all_variants(shared_data, tokenizer):
    corpus = load_corpus(shared_data / "commits" / "numpy_test.jsonl")
    results = evaluate_perplexity(_hullama(), tokenizer, corpus, block_size=32, context_window=64, max_blocks=3,
                                  batch_size=8, bootstrap_samples=200, progress=False)
    assert results["num_authors"] == 24 and set(results["variants"]) == {"recurrent", "in_context", "none", ZEROED}
    tokens = {v: r["num_tokens"] for v, r in results["variants"].items()}
    assert len(set(tokens.values())) == 1 and sum(r["num_tokens"] for r in
                                                  results["variants"]["none"]["by_block_index"].values()) == tokens["none"]
