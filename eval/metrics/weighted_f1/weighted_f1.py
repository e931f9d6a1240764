"""Support-weighted F1 over classes, as an `evaluate` metric module kept in the repository.

Load it by path (never from the Hub): ``evaluate.load("eval/metrics/weighted_f1")`` or
``eval.metrics.load_metric("weighted_f1")``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Weighted F1: the F1 score of every class, averaged with weights proportional to the class's support
(its number of occurrences among the references). For class c, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c).
Classes that occur only among the predictions get weight 0 but still count as false positives of the
classes they were confused with. Equals scikit-learn's `f1_score(average="weighted")`.
Labels may be integers or strings.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int` or `str`): predicted labels.
    references (`list` of `int` or `str`): gold labels, same length as `predictions`.
    labels (`list`, *optional*): restrict the average to these classes (weights are their supports,
        renormalised over this set); by default every class present in `references`.
Returns:
    weighted_f1 (`float`): in [0, 1].
Examples:
    >>> metric = evaluate.load("eval/metrics/weighted_f1")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])["weighted_f1"]
    0.75
"""

_CITATION = """
@book{vanrijsbergen1979information,
  title     = {Information Retrieval},
  author    = {van Rijsbergen, C. J.},
  edition   = {2nd},
  publisher = {Butterworth-Heinemann},
  address   = {London},
  year      = {1979}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WeightedF1(evaluate.Metric):
    """Support-weighted mean of per-class F1 scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            reference_urls=["https://en.wikipedia.org/wiki/F-score"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Weighted F1 of the given and the added predictions/references."""  # evaluate appends to it
        # With two feature sets (int, string), evaluate infers the set from the first element and fails
        # on an empty batch with a bare IndexError; say what is wrong instead.
        if predictions is not None and references is not None and len(predictions) == 0 and len(references) == 0:
            if self.writer is None:
                raise ValueError("weighted_f1 needs at least one prediction/reference pair; got none")
            predictions = references = None  # nothing new: compute on what add_batch collected
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, labels=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if references.size == 0:
            raise ValueError("weighted_f1 needs at least one prediction/reference pair; got none")
        if predictions.shape != references.shape:
            raise ValueError(f"{predictions.shape[0]} predictions but {references.shape[0]} references")
        classes = np.unique(references) if labels is None else np.asarray(list(labels))
        if classes.size == 0:
            raise ValueError("weighted_f1: `labels` is empty")
        support = np.array([(references == c).sum() for c in classes], dtype=np.float64)
        if support.sum() == 0:
            raise ValueError(f"weighted_f1: none of labels={list(classes)} occurs among the references")
        f1 = np.zeros(len(classes), dtype=np.float64)
        for i, c in enumerate(classes):
            pred_c, ref_c = predictions == c, references == c
            tp = float(np.sum(pred_c & ref_c))
            denom = 2 * tp + float(np.sum(pred_c & ~ref_c)) + float(np.sum(~pred_c & ref_c))
            f1[i] = 2 * tp / denom if denom > 0 else 0.0
        return {"weighted_f1": float(np.sum(f1 * support) / support.sum())}
