"""The probe protocol's statistics: folds split by author, features and regularisation chosen on inner folds only,
and paired bootstrap intervals over authors.

No torch here: everything works on feature matrices (eval/features.py extracts them, eval/probe.py runs the protocol).

- `author_folds`: k folds in which no author is in two folds (stratified by class where every class has enough
  authors), reproducible from the seed.
- `nested_predictions`: for every outer fold, the feature candidate (layer, pooling, ...) and the regularisation are
  chosen by cross-validation over the other folds' authors only (inner folds, again split by author); the chosen
  probe is refitted on all of them and predicts the held-out fold. The result: one out-of-fold prediction for every
  labelled row, no row ever predicted by a probe whose choices saw it.
- `paired_bootstrap`: two models' scores on the same rows and their difference, with 95 % percentile intervals over
  authors drawn with replacement (an author's rows go together: they are not independent).

The metrics take per-row weights, so that a bootstrap resample (an author drawn twice counts twice) is a weighting:
`metric_value("weighted_f1", ...)` is scikit-learn's support-weighted F1 and `metric_value("pearson_r", ...)` the
Pearson correlation, both equal to the repository's evaluate modules (eval/metrics) with unit weights.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
ALPHA_GRID = (10000.0, 1000.0, 100.0, 10.0, 1.0)  # strongest regularisation first: ties keep it
METRICS = ("weighted_f1", "pearson_r")


# ------------------------------------------------------------------------------------------------ metrics


def metric_value(metric: str, references: np.ndarray, predictions: np.ndarray,
                 weights: np.ndarray | None = None) -> float:
    """The task metric with per-row weights (None: every row once); NaN where undefined (a constant prediction)."""
    references, predictions = np.asarray(references), np.asarray(predictions)
    if weights is not None:
        keep = np.asarray(weights) > 0
        references, predictions, weights = references[keep], predictions[keep], np.asarray(weights)[keep]
    if metric == "weighted_f1":
        from sklearn.metrics import f1_score

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(f1_score(references, predictions, average="weighted", sample_weight=weights))
    if metric == "pearson_r":
        if len(references) < 2:
            return math.nan
        counts = None if weights is None else np.rint(weights).astype(int)
        if counts is not None and not np.allclose(counts, weights):
            cov = np.cov(references, predictions, aweights=weights)
        else:
            cov = np.cov(references, predictions, fweights=counts)
        denominator = math.sqrt(cov[0, 0] * cov[1, 1])
        return float(cov[0, 1] / denominator) if denominator > 0 else math.nan
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


# -------------------------------------------------------------------------------------------------- folds


def author_folds(authors: Sequence[str], n_folds: int, *, seed: int = 0,
                 labels: np.ndarray | None = None) -> list[np.ndarray]:
    """The row indices of each of `n_folds` folds; every author's rows in one fold.

    `labels` (class ids, one per row): folds stratified by class (scikit-learn's StratifiedGroupKFold) when every
    class has at least `n_folds` authors, else grouped only (GroupKFold, shuffled by the seed).
    Raises ValueError when there are fewer authors than folds.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    authors = np.asarray([str(a) for a in authors])
    n_authors = len(np.unique(authors))
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if n_authors < n_folds:
        raise ValueError(f"{n_authors} authors cannot fill {n_folds} folds split by author")
    placeholder = np.zeros((len(authors), 1))
    stratify = labels is not None and min(
        len(np.unique(authors[labels == c])) for c in np.unique(labels)) >= n_folds
    if stratify:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(placeholder, labels, groups=authors)
    else:
        splits = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(placeholder, groups=authors)
    return [np.sort(test) for _, test in splits]


# ------------------------------------------------------------------------------------------------- probes


def _fit(X: np.ndarray, y: np.ndarray, value: float, regression: bool, seed: int):
    """A standardised linear probe fitted on (X, y): logistic regression (C = value) or ridge (alpha = value)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not regression and len(np.unique(y)) < 2:
        return _Constant(y[0])
    model = Ridge(alpha=value) if regression else LogisticRegression(C=value, max_iter=2000, random_state=seed)
    return make_pipeline(StandardScaler(), model).fit(X, y)


class _Constant:
    """The probe of a training part holding one class: it predicts that class."""

    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)


def _out_of_fold(X, y, folds, value, regression, seed) -> np.ndarray:
    predictions = np.empty(len(y), dtype=y.dtype)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        predictions[test] = _fit(X[train], y[train], value, regression, seed).predict(X[test])
    return predictions


@dataclass
class NestedResult:
    """Out-of-fold predictions (one per row) and what each outer fold chose on its inner folds."""

    predictions: np.ndarray
    folds: list[np.ndarray]
    # per outer fold: the chosen candidate, its hyperparameter and inner score, and every candidate's best inner score
    choices: list[dict[str, Any]] = field(default_factory=list)

    def most_chosen(self) -> str:
        names = [c["candidate"] for c in self.choices]
        return max(dict.fromkeys(names), key=names.count)

    def candidate_scores(self) -> dict[str, float]:
        """Every candidate's inner cross-validated score (its best regularisation), averaged over the outer folds:
        what the probe sees in each layer and pooling, on training authors only."""
        names = list(self.choices[0]["by_candidate"]) if self.choices else []
        return {name: float(np.nanmean([c["by_candidate"][name] for c in self.choices])) for name in names}


def choose(candidates: Mapping[str, np.ndarray], y: np.ndarray, authors: np.ndarray, *, metric: str,
           regression: bool, n_folds: int, seed: int = 0, grid: Sequence[float] | None = None) -> dict[str, Any]:
    """The (candidate, hyperparameter) with the best cross-validated score over these rows' authors (folds split by
    author; ties: the earlier candidate, then the stronger regularisation). Returns candidate, hyperparameter,
    score and every tried score."""
    grid = tuple(grid or (ALPHA_GRID if regression else C_GRID))
    folds = author_folds(authors, n_folds, seed=seed, labels=None if regression else y)
    best, tried = None, []
    for name, X in candidates.items():
        for value in grid:
            score = metric_value(metric, y, _out_of_fold(X, y, folds, value, regression, seed))
            tried.append({"candidate": name, "hyperparameter": value, "score": score})
            if not math.isnan(score) and (best is None or score > best["score"]):
                best = {"candidate": name, "hyperparameter": value, "score": score}
    if best is None:  # every score undefined (constant predictions): the first candidate, most regularised
        best = {"candidate": next(iter(candidates)), "hyperparameter": grid[0], "score": math.nan}
    return {**best, "tried": tried}


def nested_predictions(candidates: Mapping[str, np.ndarray], y: np.ndarray, authors: Sequence[str], *, metric: str,
                       regression: bool, n_folds: int = 5, inner_folds: int = 3, seed: int = 0,
                       grid: Sequence[float] | None = None, folds: list[np.ndarray] | None = None) -> NestedResult:
    """Out-of-fold predictions of every row, each outer fold's probe chosen (candidate and regularisation) on the
    other folds only, by `inner_folds`-fold cross-validation split by author (see the module docstring).

    candidates: {name: X [rows, dim]}, the same rows in the same order for each.
    folds: the outer folds (row indices; default `author_folds` of these authors, stratified by class).
    """
    if not candidates:
        raise ValueError("nested_predictions needs at least one feature candidate")
    authors = np.asarray([str(a) for a in authors])
    for name, X in candidates.items():
        if len(X) != len(y):
            raise ValueError(f"candidate {name!r} has {len(X)} rows for {len(y)} labels")
    if folds is None:
        folds = author_folds(authors, n_folds, seed=seed, labels=None if regression else y)
    predictions = np.empty(len(y), dtype=y.dtype)
    choices = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        choice = choose({n: X[train] for n, X in candidates.items()}, y[train], authors[train], metric=metric,
                        regression=regression, n_folds=inner_folds, seed=seed, grid=grid)
        probe = _fit(candidates[choice["candidate"]][train], y[train], choice["hyperparameter"], regression, seed)
        predictions[test] = probe.predict(candidates[choice["candidate"]][test])
        by_candidate: dict[str, float] = {}
        for tried in choice["tried"]:
            best = by_candidate.get(tried["candidate"], -math.inf)
            by_candidate[tried["candidate"]] = max(best, tried["score"]) if not math.isnan(tried["score"]) else best
        choices.append({**{k: choice[k] for k in ("candidate", "hyperparameter", "score")},
                        "by_candidate": {k: (v if v > -math.inf else math.nan) for k, v in by_candidate.items()}})
    return NestedResult(predictions, folds, choices)


# -------------------------------------------------------------------------------------------------- bootstrap


@functools.lru_cache(maxsize=64)
def author_resamples(n_authors: int, samples: int, seed: int) -> np.ndarray:
    """[samples, n_authors]: how often each author is drawn in each resample (authors with replacement). The same
    arguments give the same draws, so they are drawn once per report (the perplexity report's dozens of breakdowns
    share an author count); read-only, shared by the callers."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_authors, np.full(n_authors, 1 / n_authors), size=samples).astype(float)
    weights.flags.writeable = False
    return weights


def _interval_of(values: np.ndarray) -> dict[str, Any]:
    """The 95 % percentile interval of the defined values (NaN where none is) and the count of undefined ones."""
    defined = values[~np.isnan(values)]
    ci95 = np.percentile(defined, [2.5, 97.5]).tolist() if len(defined) else [math.nan, math.nan]
    return {"ci95": ci95, "undefined_resamples": int(len(values) - len(defined))}


def paired_bootstrap(metric: str, references: np.ndarray, predictions: Mapping[str, np.ndarray],
                     authors: Sequence[str], *, reference: str, samples: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """Every model's score on the same rows and each model's difference from `reference`, with 95 % percentile
    intervals from the same author resamples (an author drawn k times counts k times).

    Returns {"scores": {model: {score, ci95, undefined_resamples}}, "differences": {model: {difference, ci95,
    share_better, undefined_resamples}}, "num_rows", "num_authors", "samples", "seed"}; share_better: the share of
    resamples in which the model beats the reference; undefined_resamples: how many resamples had no value (Pearson
    r of a resample whose predictions or labels are all equal), left out of the interval and counted so that a
    reader can see it.
    """
    if reference not in predictions:
        raise ValueError(f"reference model {reference!r} is not among {list(predictions)}")
    authors = np.asarray([str(a) for a in authors])
    _, who = np.unique(authors, return_inverse=True)
    draws = author_resamples(int(who.max()) + 1, samples, seed)  # [samples, authors]
    drawn = {name: np.array([metric_value(metric, references, p, w[who]) for w in draws])
             for name, p in predictions.items()}
    scores = {name: {"score": metric_value(metric, references, p), **_interval_of(drawn[name])}
              for name, p in predictions.items()}
    differences = {}
    for name in predictions:
        if name == reference:
            continue
        delta = drawn[name] - drawn[reference]
        defined = delta[~np.isnan(delta)]
        differences[name] = {"difference": scores[name]["score"] - scores[reference]["score"], **_interval_of(delta),
                             "share_better": float(np.mean(defined > 0)) if len(defined) else math.nan}
    return {"scores": scores, "differences": differences, "reference": reference, "num_rows": len(references),
            "num_authors": int(who.max()) + 1, "samples": samples, "seed": seed}
