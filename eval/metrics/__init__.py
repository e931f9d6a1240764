"""The repository's `evaluate` metric modules, loaded by path so nothing is fetched from the Hub.

    from hullama.eval.metrics import load_metric
    f1 = load_metric("weighted_f1")          # same as evaluate.load("<repo>/eval/metrics/weighted_f1")
    f1.compute(predictions=[...], references=[...])
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("weighted_f1", "pearson_r", "perplexity_from_loss")


def metric_path(name: str) -> str:
    """Absolute path of the folder holding metric module `name`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the repository has {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of the repository's module `name` by its path; kwargs go to `evaluate.load`."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
