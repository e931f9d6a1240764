"""The repository's evaluate metric modules: agreement with sklearn/scipy, edge cases, offline loading."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import f1_score

from hullama.eval.metrics import METRIC_NAMES, load_metric, metric_path

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(5)

# Run in a fresh interpreter (the offline flags are read at import), with a fresh HF cache, and with every
# socket call blocked: evaluate.load(path) must still work and fetch nothing.
_OFFLINE_CHECK = textwrap.dedent(
    """
    import json, socket
    def _blocked(*args, **kwargs):
        raise RuntimeError("network access attempted")
    socket.socket.connect = _blocked
    socket.create_connection = _blocked
    socket.getaddrinfo = _blocked
    import evaluate
    from hullama.eval.metrics import METRIC_NAMES, metric_path
    out = {}
    for name in METRIC_NAMES:
        m = evaluate.load(metric_path(name))
        assert isinstance(m, evaluate.Metric) and m.citation.strip() and m.description.strip(), name
        out[name] = type(m).__name__
    out["f1"] = evaluate.load(metric_path("weighted_f1")).compute(predictions=[0, 1], references=[0, 1])
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def offline_run(tmp_path_factory):
    """Start the offline check first, so that it runs while the in-process tests do."""
    hf_home = tmp_path_factory.mktemp("offline") / "hf_home"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_MODULES_CACHE", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", _OFFLINE_CHECK],
        cwd=hf_home.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc, hf_home
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def f1():
    return load_metric("weighted_f1", keep_in_memory=True)


@pytest.fixture(scope="module")
def pearson():
    return load_metric("pearson_r", keep_in_memory=True)


@pytest.fixture(scope="module")
def ppl():
    return load_metric("perplexity_from_loss", keep_in_memory=True)


# ---------------------------------------------------------------------------------------- weighted F1


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_f1_matches_sklearn(f1, seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(20, 300)), int(rng.integers(2, 7))
    refs = rng.integers(0, k, n)
    # mostly right, sometimes a class the references never use
    preds = np.where(rng.random(n) < 0.6, refs, rng.integers(0, k + 1, n))
    got = f1.compute(predictions=preds, references=refs)["weighted_f1"]
    assert got == pytest.approx(f1_score(refs, preds, average="weighted", zero_division=0), abs=1e-12)
    names = np.array(["AGAINST", "FAVOR", "NONE", "x", "y", "z", "w"])
    got = f1.compute(predictions=names[preds].tolist(), references=names[refs].tolist())["weighted_f1"]
    assert got == pytest.approx(f1_score(names[refs], names[preds], average="weighted", zero_division=0), abs=1e-12)
    subset = [0, 1]
    got = f1.compute(predictions=preds, references=refs, labels=subset)["weighted_f1"]
    assert got == pytest.approx(
        f1_score(refs, preds, labels=subset, average="weighted", zero_division=0), abs=1e-12
    )


def test_weighted_f1_edge_cases(f1):
    assert f1.compute(predictions=[3, 3, 3], references=[3, 3, 3])["weighted_f1"] == 1.0  # single class, right
    assert f1.compute(predictions=[1, 1], references=[0, 0])["weighted_f1"] == 0.0  # single class, all wrong
    assert f1.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])["weighted_f1"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least one"):
        f1.compute(predictions=[], references=[])
    f1.add_batch(predictions=["a", "b"], references=["a", "a"])
    assert f1.compute(predictions=[], references=[])["weighted_f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="none of labels"):
        f1.compute(predictions=[0, 1], references=[0, 1], labels=[5])


# ------------------------------------------------------------------------------------------ Pearson r


@pytest.mark.parametrize("seed", SEEDS)
def test_pearson_matches_scipy(pearson, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    x = rng.normal(size=n)
    y = rng.normal(scale=0.5, size=n) + (seed - 2) * 0.3 * x  # correlations from negative to positive
    out = pearson.compute(predictions=x, references=y, return_pvalue=True)
    ref = stats.pearsonr(x, y)
    assert out["pearson_r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert set(pearson.compute(predictions=x, references=y)) == {"pearson_r"}


def test_pearson_edge_cases(pearson):
    assert pearson.compute(predictions=[1, 2, 3], references=[2, 4, 6])["pearson_r"] == pytest.approx(1.0)
    assert pearson.compute(predictions=[1, 2, 3], references=[3, 2, 1])["pearson_r"] == pytest.approx(-1.0)
    two = pearson.compute(predictions=[0.0, 1.0], references=[5.0, 2.0], return_pvalue=True)
    assert two["pearson_r"] == pytest.approx(-1.0) and two["p_value"] == stats.pearsonr([0, 1], [5, 2]).pvalue
    with pytest.warns(RuntimeWarning, match="predictions are constant"):
        out = pearson.compute(predictions=[0.1, 0.1, 0.1], references=[1.0, 2.0, 4.0], return_pvalue=True)
    assert math.isnan(out["pearson_r"]) and math.isnan(out["p_value"])
    with pytest.warns(RuntimeWarning, match="references are constant"):
        assert math.isnan(pearson.compute(predictions=[1, 2, 4], references=[7, 7, 7])["pearson_r"])
    with pytest.raises(ValueError, match="at least 2"):
        pearson.compute(predictions=[1.0], references=[2.0])
    with pytest.raises(ValueError, match="at least 2"):
        pearson.compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="finite"):
        pearson.compute(predictions=[1.0, float("nan"), 3.0], references=[1.0, 2.0, 3.0])


# -------------------------------------------------------------------------------- perplexity from loss


@pytest.mark.parametrize("seed", SEEDS)
def test_perplexity_matches_token_level_nll(ppl, seed):
    rng = np.random.default_rng(seed)
    vocab, lengths = 50, rng.integers(1, 40, size=int(rng.integers(1, 12)))
    nll_sums, all_token_nll = [], []
    for length in lengths:  # ragged sequences: pooled by token, not averaged per sequence
        logits = rng.normal(scale=3.0, size=(length, vocab))
        targets = rng.integers(0, vocab, length)
        token_nll = special.logsumexp(logits, axis=1) - logits[np.arange(length), targets]
        nll_sums.append(token_nll.sum())
        all_token_nll.append(token_nll)
    expected = np.exp(np.concatenate(all_token_nll).mean())
    out = ppl.compute(nll_sums=nll_sums, token_counts=lengths)
    assert out["perplexity"] == pytest.approx(expected, rel=1e-12)
    assert out["num_tokens"] == int(lengths.sum())
    assert out["bits_per_token"] == pytest.approx(out["nll_per_token"] / math.log(2))
    # streamed in batches, the same result
    for i in range(0, len(lengths), 3):
        ppl.add_batch(nll_sums=nll_sums[i : i + 3], token_counts=lengths[i : i + 3])
    assert ppl.compute()["perplexity"] == pytest.approx(expected, rel=1e-12)


def test_perplexity_edge_cases(ppl):
    assert ppl.compute(nll_sums=[0.0], token_counts=[5])["perplexity"] == 1.0  # a certain model
    assert ppl.compute(nll_sums=[2.0, 4.0], token_counts=[1, 2])["perplexity"] == pytest.approx(math.exp(2.0))
    assert ppl.compute(nll_sums=[1e6], token_counts=[1])["perplexity"] == math.inf  # overflow -> inf
    assert ppl.compute(nll_sums=[3.0, 0.0], token_counts=[3, 0])["perplexity"] == pytest.approx(math.e)
    with pytest.raises(ValueError, match="no tokens"):
        ppl.compute(nll_sums=[0.0], token_counts=[0])
    with pytest.raises(ValueError, match=">= 0"):
        ppl.compute(nll_sums=[-1.0], token_counts=[2])
    with pytest.raises(ValueError, match="finite"):
        ppl.compute(nll_sums=[float("nan")], token_counts=[2])


# ------------------------------------------------------------------------------------- loading offline


def test_metric_folders_and_helper():
    for name in METRIC_NAMES:
        assert (Path(metric_path(name)) / f"{name}.py").is_file()
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("f1")


def test_metrics_load_by_path_fully_offline(offline_run):
    proc, hf_home = offline_run
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out == {
        "weighted_f1": "WeightedF1",
        "pearson_r": "PearsonR",
        "perplexity_from_loss": "PerplexityFromLoss",
        "f1": {"weighted_f1": 1.0},
    }
    # evaluate copied the modules into the fresh cache: they came from the repository, not the Hub
    cached = {p.name for p in hf_home.rglob("*.py")}
    assert {f"{name}.py" for name in METRIC_NAMES} <= cached
