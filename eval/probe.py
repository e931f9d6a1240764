"""Linear probes on frozen models over the eight downstream tasks: "linear task classifier training alone".

For every model and task the model stays frozen and features are extracted once per split (eval/features.py):
  message tasks: the hidden state (`layer`; default the last, after the final norm) at the last text token of each
                 labelled message, read in the author's recurrent timeline for a HuLlama model and from the message
                 alone for a plain Llama (`message_context` "auto"; or force recurrent / in_context / none);
  author tasks:  the mean author state over the author's real blocks for HuLlama, the mean over the author's
                 messages of the last-token hidden state for a plain Llama (`author_features` "auto"; or force
                 state / messages / state+messages).
On top: features standardised on train, then a logistic regression (classes; C chosen on dev by the task's
metric) or a ridge regression (regression; alpha chosen on dev), fitted on train and scored on dev and test.
Metrics are the repository's evaluate modules (eval/metrics): weighted F1, Pearson r.

Python:
    from hullama.eval.probe import probe_tasks, format_table
    results = probe_tasks({"llama": (llama, tok), "hulm": (hullama, tok)}, ["stance_abortion", "commit_region"])
    print(format_table(results))

Command line (writes probe.json and probe.md to --output_dir):
    hullama-probe --model_name_or_path ~/.cache/hullama/smollm2-135m ~/.cache/hullama/smollm2-135m \\
        --name base hulm --as_hullama no yes --adapter none runs/hulm/adapter --output_dir outputs/probe
    hullama-probe --model_name_or_path runs/hullama-tiny --tasks stance_abortion sentiment --layer -2 \\
        --data_dir ../shared/data --max_blocks 16 --output_dir outputs/probe-tiny
--adapter and --as_hullama take one value for all models or one per model, in order ("none" as an adapter means
no adapter); --name takes one per model.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hullama.command_line import check_common_args
from hullama.data.corpus import Corpus
from hullama.eval.commands import TASK_NAMES, probe_parser
from hullama.eval.features import (
    AUTHOR_SOURCES, MESSAGE_CONTEXTS, Features, author_features, message_features, model_parts,
)
from hullama.eval.tasks import SPLITS, TaskSpec, get_task, load_task

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
ALPHA_GRID = (10000.0, 1000.0, 100.0, 10.0, 1.0, 0.1)  # strongest regularisation first: ties keep it

_METRICS: dict[str, Any] = {}


def _metric(name: str):
    if name not in _METRICS:
        from hullama.eval.metrics import load_metric

        _METRICS[name] = load_metric(name)
    return _METRICS[name]


def score(metric: str, predictions: np.ndarray, references: np.ndarray) -> float:
    """The task metric through the repository's evaluate module; NaN when undefined (constant predictions)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = _metric(metric).compute(predictions=predictions.tolist(), references=references.tolist())
    return float(out[metric])


def fit_probe(train: Features, dev: Features, test: Features, *, metric: str, regression: bool,
              grid: Sequence[float] | None = None, seed: int = 0) -> dict[str, Any]:
    """Standardise on train; fit logistic (C) or ridge (alpha) regression on train for every grid value; keep the
    best on dev (ties: the first, i.e. the most regularised); report dev and test metrics."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    for split, f in (("train", train), ("dev", dev), ("test", test)):
        if len(f.y) == 0:
            raise ValueError(f"the {split} split has no labelled example")
    scaler = StandardScaler().fit(train.X)
    Xtr, Xdv, Xte = (scaler.transform(f.X) for f in (train, dev, test))
    name = "alpha" if regression else "C"
    grid = tuple(grid or (ALPHA_GRID if regression else C_GRID))
    single_class = not regression and len(np.unique(train.y)) < 2
    best, tried = None, []
    for value in grid:
        if regression:
            model = Ridge(alpha=value).fit(Xtr, train.y)
        elif single_class:  # nothing to learn: predict the one class seen
            model = _Constant(train.y[0])
        else:
            model = LogisticRegression(C=value, max_iter=2000, random_state=seed).fit(Xtr, train.y)
        dev_score = score(metric, model.predict(Xdv), dev.y)
        tried.append({name: value, "dev": dev_score})
        if best is None or (not math.isnan(dev_score) and (math.isnan(best[0]) or dev_score > best[0])):
            best = (dev_score, value, model)
        if single_class:
            break
    dev_score, value, model = best
    return {"metric": metric, "test": score(metric, model.predict(Xte), test.y), "dev": dev_score,
            "hyperparameter": {name: value}, "grid": tried, "n_train": len(train.y), "n_dev": len(dev.y),
            "n_test": len(test.y), "dim": int(train.X.shape[1]), "features": train.description,
            **({"note": "train has a single class: constant prediction"} if single_class else {})}


class _Constant:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)


def _block_size_for(model, requested: int | None) -> int:
    config = model_parts(model).model.config
    size = requested or getattr(config, "block_size", None) or 1024
    return min(size, config.max_position_embeddings)


def extract(model, tokenizer, spec: TaskSpec, corpus: Corpus, *, layer: int = -1, message_context: str = "auto",
            author_source: str = "auto", block_size: int | None = None, max_blocks: int | None = None,
            batch_size: int = 4, blocks_per_forward: int | None = 16, progress: bool = True) -> Features:
    """The features of one split of one task (see the module docstring)."""
    common = dict(layer=layer, block_size=_block_size_for(model, block_size), max_blocks=max_blocks,
                  batch_size=batch_size, blocks_per_forward=blocks_per_forward, progress=progress)
    if spec.level == "message":
        return message_features(model, tokenizer, corpus, context=message_context, **common)
    return author_features(model, tokenizer, corpus, source=author_source, **common)


def relabel(features: Features, corpus: Corpus) -> Features:
    """The same author features with the labels of another author task on the same authors."""
    label = dict(zip(corpus.frame["user_id"], corpus.frame["label"]))
    y = np.asarray([label[u] for u in features.user_ids], dtype=np.float64 if corpus.regression else np.int64)
    return replace(features, y=y)


def _label_count(spec: TaskSpec, corpus: Corpus) -> int:
    if spec.level == "author":
        return corpus.frame["user_id"].nunique()
    return int(corpus.frame["label"].notna().sum())


def _resolve_tasks(tasks, data_dir) -> dict[str, tuple[TaskSpec, dict[str, Corpus]]]:
    if isinstance(tasks, Mapping):
        return dict(tasks)
    return {name: (get_task(name), load_task(name, data_dir)) for name in tasks}


def probe_tasks(models: Mapping[str, tuple[Any, Any]],
                tasks: Sequence[str] | Mapping[str, tuple[TaskSpec, dict[str, Corpus]]] = TASK_NAMES, *,
                data_dir: str | Path | None = None, layer: int = -1, message_context: str = "auto",
                author_features: str = "auto", block_size: int | None = None, max_blocks: int | None = None,
                batch_size: int = 4, blocks_per_forward: int | None = 16, seed: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """Linear probes for every model on every task; returns a JSON-ready dict:

      models  {name: {hullama, message_context, author_features, layer, block_size}}
      tasks   {task: {level, metric, description}}
      results {task: {model: {metric, test, dev, hyperparameter {"C" | "alpha": v}, grid [{C|alpha, dev}],
                              n_train, n_dev, n_test, dim, features, labels_dropped {split: n}, seconds}}}
    labels_dropped counts labels the features could not reach (outside the max_blocks window, untokenizable).
    models: {name: (model, tokenizer)}; each model is frozen (eval mode, no gradients) for the call.
    tasks: registered task names (loaded from `data_dir`), or {name: (TaskSpec, {"train"|"dev"|"test": Corpus})}.
    block_size: None = each model's config.block_size (capped at max_position_embeddings).
    batch_size: authors (recurrent) or rows per forward; blocks_per_forward: recurrent blocks per forward.
    """
    import datasets
    import torch

    if not models:
        raise ValueError("probe_tasks needs at least one model")
    if message_context not in MESSAGE_CONTEXTS:
        raise ValueError(f"message_context must be one of {MESSAGE_CONTEXTS}, got {message_context!r}")
    if author_features not in AUTHOR_SOURCES:
        raise ValueError(f"author_features must be one of {AUTHOR_SOURCES}, got {author_features!r}")
    loaded = _resolve_tasks(tasks, data_dir)
    report: dict[str, Any] = {"models": {}, "tasks": {}, "results": {}}
    for name, (model, _) in models.items():
        hullama = model_parts(model).hullama
        report["models"][name] = {
            "hullama": hullama, "layer": layer, "block_size": _block_size_for(model, block_size),
            "message_context": message_context if message_context != "auto" else ("recurrent" if hullama else "none"),
            "author_features": author_features if author_features != "auto" else ("state" if hullama else "messages"),
        }
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # tokenization bars for every split would drown the probe's own
    modes = {name: model.training for name, (model, _) in models.items()}
    shared: dict[tuple, Features] = {}
    try:
        for task, (spec, splits) in loaded.items():
            missing = [s for s in SPLITS if s not in splits]
            if missing:
                raise ValueError(f"task {task}: missing splits {missing}")
            report["tasks"][task] = {"level": spec.level, "metric": spec.metric, "description": spec.description}
            report["results"][task] = {}
            for name, (model, tokenizer) in models.items():
                model.eval()
                t0 = time.perf_counter()
                feats = {}
                for s in SPLITS:
                    # author tasks on the same files (region, first year) share one forward pass per split
                    key = (name, spec.level, tuple(sorted(spec.files.items())), s)
                    if spec.level == "author" and key in shared:
                        feats[s] = relabel(shared[key], splits[s])
                        continue
                    with torch.inference_mode():
                        feats[s] = shared[key] = extract(
                            model, tokenizer, spec, splits[s], layer=layer, message_context=message_context,
                            author_source=author_features, block_size=block_size, max_blocks=max_blocks,
                            batch_size=batch_size, blocks_per_forward=blocks_per_forward, progress=progress)
                result = fit_probe(feats["train"], feats["dev"], feats["test"], metric=spec.metric,
                                   regression=spec.regression, seed=seed)
                # labels the features could not reach (max_blocks truncation, messages with no tokens)
                result["labels_dropped"] = {s: _label_count(spec, splits[s]) - len(feats[s].y) for s in SPLITS}
                result["seconds"] = time.perf_counter() - t0
                report["results"][task][name] = result
                if progress:
                    print(f"{task} / {name}: test {spec.metric} {result['test']:.4f} (dev {result['dev']:.4f})",
                          flush=True)
    finally:
        for name, (model, _) in models.items():
            model.train(modes[name])
        if bars_were_on:
            datasets.enable_progress_bars()
    return report


def format_table(results: dict[str, Any]) -> str:
    """A markdown table: one row per task, the test metric per model, and the last model minus the first."""
    names = list(results["models"])
    header = ["task", "metric", *names] + ([f"{names[-1]} - {names[0]}"] if len(names) > 1 else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, per_model in results["results"].items():
        values = [per_model[n]["test"] for n in names]
        cells = [task, results["tasks"][task]["metric"], *(f"{v:.4f}" for v in values)]
        if len(names) > 1:
            cells.append(f"{values[-1] - values[0]:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- CLI


def _per_model(parser, values: list[str] | None, n: int, flag: str, default: Any) -> list[Any]:
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        parser.error(f"{flag} has {len(values)} values for {n} models: give one for all, or one per model")
    return values


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = probe_parser()
    (args,) = parser.parse(argv)
    args.model = args.model_name_or_path
    check_common_args(parser, args, ("batch_size", "blocks_per_forward", "max_blocks"))
    n = len(args.model)
    adapters = [None if a in (None, "none") else a for a in _per_model(parser, args.adapter, n, "--adapter", None)]
    as_hullama = [a == "yes" for a in _per_model(parser, args.as_hullama, n, "--as_hullama", "no")]
    names = args.name or ([Path(m).name for m in args.model] if n > 1 else [Path(args.model[0]).name])
    if len(names) != n:
        parser.error(f"--name has {len(names)} values for {n} models: give one per model")
    if len(set(names)) != n:
        names = [f"{i + 1}:{name}" for i, name in enumerate(names)]
    for task in args.tasks:
        try:
            get_task(task)
        except ValueError as e:
            parser.error(str(e))
    from tqdm.auto import tqdm

    from hullama.eval.features import load_model

    try:
        tasks = {t: (get_task(t), load_task(t, args.data_dir)) for t in tqdm(args.tasks, desc="loading tasks")}
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e).splitlines()[0])
    models = {}
    for name, path, adapter, hullama in zip(names, args.model, adapters, as_hullama):
        try:
            models[name] = load_model(path, adapter=adapter, tokenizer=args.tokenizer, as_hullama=hullama,
                                      dtype=args.dtype, device=args.device)
        except (FileNotFoundError, OSError, ValueError) as e:
            parser.error(str(e).splitlines()[0])
    try:
        results = probe_tasks(models, tasks, layer=args.layer, message_context=args.message_context,
                              author_features=args.author_features, block_size=args.block_size,
                              max_blocks=args.max_blocks, batch_size=args.batch_size,
                              blocks_per_forward=args.blocks_per_forward, seed=args.seed)
    except ValueError as e:
        parser.error(str(e).splitlines()[0])
    for name, path, adapter in zip(names, args.model, adapters):
        results["models"][name].update(path=path, adapter=adapter)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(results)
    (out / "probe.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "probe.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'probe.json'} and {out / 'probe.md'}")
    return results


if __name__ == "__main__":
    main()
