"""Pearson's correlation coefficient, as an `evaluate` metric module kept in the repository.

Load it by path (never from the Hub): ``evaluate.load("eval/metrics/pearson_r")`` or
``eval.metrics.load_metric("pearson_r")``.
"""

import warnings

import datasets
import evaluate
import numpy as np
from scipy import stats

_DESCRIPTION = """
Pearson's product-moment correlation r between predictions and references:
r = sum((x - mean x)(y - mean y)) / sqrt(sum((x - mean x)^2) sum((y - mean y)^2)), computed in float64.
Optionally the two-sided p-value of r = 0 under bivariate normality (t test with n - 2 degrees of freedom).
If either input is constant, r is undefined: the result is NaN and a RuntimeWarning says why.
Fewer than two pairs, or non-finite values, raise a ValueError.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted values.
    references (`list` of `float`): gold values, same length as `predictions`.
    return_pvalue (`bool`, default False): also return the two-sided p-value.
Returns:
    pearson_r (`float`): in [-1, 1], or NaN for constant input.
    p_value (`float`): only if `return_pvalue=True`.
Examples:
    >>> metric = evaluate.load("eval/metrics/pearson_r")
    >>> metric.compute(predictions=[1, 2, 3], references=[2, 4, 6])["pearson_r"]
    1.0
"""

_CITATION = """
@article{pearson1895regression,
  title   = {Notes on Regression and Inheritance in the Case of Two Parents},
  author  = {Pearson, Karl},
  journal = {Proceedings of the Royal Society of London},
  volume  = {58},
  pages   = {240--242},
  year    = {1895}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PearsonR(evaluate.Metric):
    """Pearson's r between two real-valued sequences."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Pearson_correlation_coefficient"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        x = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references, dtype=np.float64)
        n = x.size
        if n < 2:
            raise ValueError(f"pearson_r needs at least 2 prediction/reference pairs; got {n}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("pearson_r: predictions and references must be finite (found NaN or inf)")
        dx, dy = x - x.mean(), y - y.mean()
        constant = [name for name, v in (("predictions", x), ("references", y)) if np.all(v == v[0])]
        if constant:
            warnings.warn(
                f"pearson_r: {' and '.join(constant)} are constant, so r is undefined; returning NaN",
                RuntimeWarning,
            )
            r = float("nan")
        else:
            r = float(np.clip((dx @ dy) / np.sqrt(float(dx @ dx) * float(dy @ dy)), -1.0, 1.0))
        out = {"pearson_r": r}
        if return_pvalue:
            if np.isnan(r):
                p = float("nan")
            elif n == 2:  # two points always lie on a line: no evidence against r = 0 (as scipy)
                p = 1.0
            elif abs(r) == 1.0:
                p = 0.0
            else:
                t = r * np.sqrt((n - 2) / (1.0 - r * r))
                p = float(2.0 * stats.t.sf(abs(t), df=n - 2))
            out["p_value"] = p
        return out
