"""eval/protocol.py: folds split by author, choices made on inner folds only, and the paired bootstrap of a difference
checked against a hand computation."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hullama.eval.metrics import load_metric
from hullama.eval.protocol import (
    _fit, author_folds, author_resamples, choose, metric_value, nested_predictions, paired_bootstrap,
)


def _authors(n_authors: int, rows_per_author: int) -> np.ndarray:
    return np.repeat([f"a{i}" for i in range(n_authors)], rows_per_author)


@pytest.mark.parametrize("stratified", [False, True])
def test_folds_split_by_author_partition_the_rows_and_repeat_from_the_seed(stratified):
    rng = np.random.default_rng(0)
    authors = _authors(40, 3)[rng.permutation(120)]
    labels = np.asarray([int(a[1:]) % 3 for a in authors]) if stratified else None
    folds = author_folds(authors, 5, seed=1, labels=labels)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))  # every row in exactly one fold
    owners = [set(authors[f]) for f in folds]
    assert all(not (owners[i] & owners[j]) for i in range(5) for j in range(i + 1, 5))  # no author in two folds
    assert all(len(o) == 8 for o in owners)
    assert [f.tolist() for f in author_folds(authors, 5, seed=1, labels=labels)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in author_folds(authors, 5, seed=2, labels=labels)] != [f.tolist() for f in folds]
    if stratified:  # each class spread over the folds as evenly as whole authors allow
        assert all(sorted(np.bincount(labels[f], minlength=3).tolist()) == [6, 9, 9] for f in folds)
    with pytest.raises(ValueError, match="3 authors cannot fill 5 folds"):
        author_folds(_authors(3, 4), 5)


def test_weighted_metrics_equal_the_repository_metrics_and_row_repetition():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
    f1 = load_metric("weighted_f1").compute(predictions=p.tolist(), references=y.tolist())["weighted_f1"]
    assert metric_value("weighted_f1", y, p) == pytest.approx(f1)
    r, q = rng.normal(size=30), rng.normal(size=30)
    pearson = load_metric("pearson_r").compute(predictions=q.tolist(), references=r.tolist())["pearson_r"]
    assert metric_value("pearson_r", r, q) == pytest.approx(pearson)
    weights = rng.integers(0, 4, 30)
    for metric, refs, preds in (("weighted_f1", y, p), ("pearson_r", r, q)):
        repeated = metric_value(metric, np.repeat(refs, weights), np.repeat(preds, weights))
        assert metric_value(metric, refs, preds, weights) == pytest.approx(repeated)
    with pytest.raises(ValueError, match="metric must be one of"):
        metric_value("accuracy", y, p)


def test_paired_bootstrap_of_a_difference_matches_a_hand_computation():
    """Five authors; every resample redrawn by hand as repeated rows, each score from the repository's metric."""
    authors = np.asarray(["u1", "u1", "u2", "u3", "u3", "u3", "u4", "u5", "u5"])
    y = np.asarray([0, 1, 1, 2, 0, 0, 1, 2, 2])
    a = np.asarray([0, 1, 1, 2, 0, 1, 1, 2, 0])
    b = np.asarray([0, 0, 1, 1, 0, 0, 2, 2, 2])
    result = paired_bootstrap("weighted_f1", y, {"b": b, "a": a}, authors, reference="b", samples=50, seed=3)
    draws = author_resamples(5, 50, 3)  # [resample, author u1..u5 in sorted order]
    assert draws.sum(1).tolist() == [5] * 50
    metric = load_metric("weighted_f1")
    deltas = []
    for counts in draws:
        rows = np.concatenate([np.flatnonzero(authors == f"u{i + 1}").repeat(int(c)) for i, c in enumerate(counts)])
        score = {name: metric.compute(predictions=p[rows].tolist(), references=y[rows].tolist())["weighted_f1"]
                 for name, p in (("a", a), ("b", b))}
        deltas.append(score["a"] - score["b"])
    hand = np.percentile(deltas, [2.5, 97.5])
    diff = result["differences"]["a"]
    assert diff["ci95"] == pytest.approx(hand.tolist())
    assert diff["difference"] == pytest.approx(f1_score(y, a, average="weighted") - f1_score(y, b, average="weighted"))
    assert diff["share_better"] == pytest.approx(np.mean(np.asarray(deltas) > 0))
    assert result["num_authors"] == 5 and result["num_rows"] == 9 and "b" not in result["differences"]
    with pytest.raises(ValueError, match="reference model 'c'"):
        paired_bootstrap("weighted_f1", y, {"a": a}, authors, reference="c")


def test_paired_bootstrap_counts_the_resamples_where_the_metric_is_undefined():
    """Pearson r over three one-row authors is undefined exactly on the resamples that draw a single author three
    times; those are counted, and the interval comes from the others alone."""
    authors = np.asarray(["u1", "u2", "u3"])
    y = np.asarray([1.0, 2.0, 4.0])
    a, b = np.asarray([1.0, 3.0, 2.0]), np.asarray([2.0, 1.0, 5.0])
    result = paired_bootstrap("pearson_r", y, {"b": b, "a": a}, authors, reference="b", samples=400, seed=1)
    draws = author_resamples(3, 400, 1)
    single = (draws > 0).sum(1) == 1
    assert 0 < single.sum() < 400
    diff = result["differences"]["a"]
    assert diff["undefined_resamples"] == result["scores"]["a"]["undefined_resamples"] == int(single.sum())

    def r(p, counts):
        rows = np.arange(3).repeat(counts.astype(int))
        return np.corrcoef(y[rows], p[rows])[0, 1]

    deltas = [r(a, c) - r(b, c) for c in draws[~single]]
    assert diff["ci95"] == pytest.approx(np.percentile(deltas, [2.5, 97.5]).tolist())


def _fold_signal_data(seed: int = 0):
    """60 authors x 4 rows, 3 classes. Candidate "steady" carries the class everywhere; candidate "leaky" carries it
    more weakly, except on the rows of the first outer fold, where it carries it perfectly."""
    rng = np.random.default_rng(seed)
    authors = _authors(60, 4)
    y = rng.integers(0, 3, len(authors))
    folds = author_folds(authors, 4, seed=seed, labels=y)
    steady = np.eye(3)[y] + rng.normal(0, 0.8, (len(y), 3))
    leaky = np.eye(3)[y] * 0.3 + rng.normal(0, 1, (len(y), 3))
    leaky[folds[0]] = np.eye(3)[y[folds[0]]] * 5
    return authors, y, folds, {"steady": steady, "leaky": leaky}


def test_the_feature_search_chooses_on_inner_folds_only():
    authors, y, folds, candidates = _fold_signal_data()
    result = nested_predictions(candidates, y, authors, metric="weighted_f1", regression=False, n_folds=4,
                                inner_folds=3, seed=0)
    assert [f.tolist() for f in result.folds] == [f.tolist() for f in folds]
    # a choice that looked at the first fold's rows would take "leaky": fitted on the others, it is perfect there
    others = np.setdiff1d(np.arange(len(y)), folds[0])
    on_fold = {name: metric_value("weighted_f1", y[folds[0]], _fit(X[others], y[others], 1.0, False, 0).predict(
        X[folds[0]])) for name, X in candidates.items()}
    assert on_fold["leaky"] == 1.0 > on_fold["steady"]
    # the protocol chose without them: on the other folds' authors "leaky" is the weaker candidate
    assert result.choices[0]["candidate"] == "steady"
    # the fold's own labels cannot move its choice (the same outer folds: they are stratified by all labels)
    shuffled = y.copy()
    shuffled[folds[0]] = np.random.default_rng(1).permutation(y[folds[0]])
    again = nested_predictions(candidates, shuffled, authors, metric="weighted_f1", regression=False, inner_folds=3,
                               seed=0, folds=folds)
    assert again.choices[0] == result.choices[0]
    # and every row was predicted exactly once, by a probe fitted without its author
    assert len(result.predictions) == len(y) and result.most_chosen() == "steady"
    seen = result.candidate_scores()  # on training authors only: "leaky" looks weaker there
    assert list(seen) == ["steady", "leaky"] and seen["steady"] > seen["leaky"]


def test_choose_prefers_the_earlier_candidate_and_stronger_regularisation_on_ties():
    authors = _authors(12, 2)
    y = np.tile([0, 1], 12)
    same = np.eye(2)[y] * 4
    picked = choose({"first": same, "second": same.copy()}, y, authors, metric="weighted_f1", regression=False,
                    n_folds=3, grid=(0.1, 1.0))
    assert (picked["candidate"], picked["hyperparameter"], picked["score"]) == ("first", 0.1, 1.0)
    assert len(picked["tried"]) == 4
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3))
    target = X @ [1.0, -2.0, 0.5] + rng.normal(0, 0.01, 24)
    ridge = choose({"x": X}, target, authors, metric="pearson_r", regression=True, n_folds=3)
    assert ridge["score"] > 0.99 and ridge["hyperparameter"] <= 10
