"""Perplexity from summed token negative log-likelihoods, as an `evaluate` metric module.

Unlike evaluate's own `perplexity` module, this one runs no model: it aggregates losses the caller has
already computed. Load it by path: ``evaluate.load("eval/metrics/perplexity_from_loss")`` or
``eval.metrics.load_metric("perplexity_from_loss")``.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Perplexity of a language model from its losses: exp(sum of token NLLs / number of tokens), where each
input row holds the summed negative log-likelihood (natural log) of some tokens (a sequence, a message,
a batch) and how many tokens that was. Rows are pooled by token, not averaged per row, so long and short
sequences count by their length. Also returns the pooled NLL per token (nats) and bits per token.
"""

_KWARGS_DESCRIPTION = """
Args:
    nll_sums (`list` of `float`): summed token negative log-likelihoods (nats), one per row; >= 0.
    token_counts (`list` of `int`): number of tokens behind each row; >= 0, total > 0.
Returns:
    perplexity (`float`): exp(total NLL / total tokens); inf if that overflows.
    nll_per_token (`float`): total NLL / total tokens (nats).
    bits_per_token (`float`): nll_per_token / ln 2.
    num_tokens (`int`): total tokens.
Examples:
    >>> metric = evaluate.load("eval/metrics/perplexity_from_loss")
    >>> metric.compute(nll_sums=[2.0, 4.0], token_counts=[1, 2])["perplexity"]  # exp(6 / 3)
    7.38905609893065
"""

_CITATION = """
@article{jelinek1977perplexity,
  title   = {Perplexity---a measure of the difficulty of speech recognition tasks},
  author  = {Jelinek, Frederick and Mercer, Robert L. and Bahl, Lalit R. and Baker, James K.},
  journal = {The Journal of the Acoustical Society of America},
  volume  = {62},
  number  = {S1},
  pages   = {S63},
  year    = {1977}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerplexityFromLoss(evaluate.Metric):
    """exp(total NLL / total tokens) from per-row summed NLLs and token counts."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"nll_sums": datasets.Value("float64"), "token_counts": datasets.Value("int64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Perplexity"],
        )

    def _compute(self, nll_sums, token_counts):
        nll = np.asarray(nll_sums, dtype=np.float64)
        counts = np.asarray(token_counts, dtype=np.int64)
        if not np.all(np.isfinite(nll)):
            raise ValueError("perplexity_from_loss: nll_sums must be finite (found NaN or inf)")
        if np.any(nll < 0):
            raise ValueError("perplexity_from_loss: nll_sums must be >= 0 (negative log-likelihoods)")
        if np.any(counts < 0):
            raise ValueError("perplexity_from_loss: token_counts must be >= 0")
        total_tokens = int(counts.sum())
        if total_tokens == 0:
            raise ValueError("perplexity_from_loss: no tokens (token_counts sum to 0); perplexity is undefined")
        nll_per_token = float(nll.sum()) / total_tokens
        try:
            ppl = math.exp(nll_per_token)
        except OverflowError:
            ppl = float("inf")
        return {
            "perplexity": ppl,
            "nll_per_token": nll_per_token,
            "bits_per_token": nll_per_token / math.log(2),
            "num_tokens": total_tokens,
        }
