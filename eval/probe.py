"""Linear probes on frozen models over the downstream tasks: "linear task classifier training alone", with
statistics that can tell two models apart.

For every model and task the model stays frozen and features are extracted once over all of the task's labelled
authors (its train, dev and test files together; eval/features.py), as several candidates:
  message tasks: the hidden state at the labelled message's last text token, or the mean over its text tokens, at
                 each of `layers`; the message read in the author's recurrent timeline for a HuLlama model and alone
                 for a plain Llama (`message_context` "auto"; or force recurrent / in_context / none);
  author tasks:  the mean over the author's messages (each read alone) of those message features; for HuLlama also
                 the final author state, the mean state over the author's blocks, and the mean state beside each
                 message candidate.
The protocol (eval/protocol.py): k folds split by author; for every fold, the candidate and the regularisation
(logistic regression C for classes, ridge alpha for regression, features standardised) are chosen by an inner
cross-validation over the other folds' authors only; the chosen probe, refitted on them, predicts the fold. Every
labelled row gets one such out-of-fold prediction, so a task is scored over all its authors. Every model is then
compared with the reference model (the first) on the same rows: the difference of the task metric (weighted F1,
Pearson r) with a 95 % paired bootstrap interval over authors.

Python:
    from hullama.eval.probe import probe_tasks, format_table
    results = probe_tasks({"base": (llama, tok), "hulm": (hullama, tok)}, ["stance_abortion", "commit_region"])
    print(format_table(results))

Command line (writes probe.json and probe.md to --output_dir):
    hullama-probe --model_name_or_path ~/.cache/hullama/smollm2-135m ~/.cache/hullama/smollm2-135m \\
        --name base hulm --as_hullama no yes --adapter none runs/hulm/adapter --output_dir outputs/probe
    hullama-probe --model_name_or_path runs/hullama-tiny --tasks stance_abortion sentiment --layers 2 4 \\
        --data_dir ../shared/data --max_blocks 16 --output_dir outputs/probe-tiny
--adapter and --as_hullama take one value for all models or one per model, in order ("none" as an adapter means
no adapter); --name takes one per model.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hullama.command_line import check_common_args
from hullama.data.corpus import Corpus
from hullama.eval.commands import TASK_NAMES, probe_parser
from hullama.eval.features import (
    MESSAGE_CONTEXTS, FeatureSet, author_features, message_features, model_parts, resolve_layers,
    resolve_message_context,
)
from hullama.eval.protocol import nested_predictions, paired_bootstrap
from hullama.eval.tasks import SPLITS, TaskSpec, get_task, load_task


def _block_size_for(model, requested: int | None) -> int:
    config = model_parts(model).model.config
    size = requested or getattr(config, "block_size", None) or 1024
    return min(size, config.max_position_embeddings)


def all_authors(task: str, splits: Mapping[str, Corpus]) -> Corpus:
    """The task's train, dev and test authors in one corpus (the protocol cross-validates over all of them; load_task
    puts every author in one split)."""
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise ValueError(f"task {task}: missing splits {missing}")
    pieces = [splits[s] for s in SPLITS]
    frame = pd.concat([p.frame for p in pieces], ignore_index=True)
    return replace(pieces[0], frame=frame, source=f"{task} [all authors]")


def extract(model, tokenizer, spec: TaskSpec, corpus: Corpus, *, layers: Sequence[int] | None = None,
            message_context: str = "auto", block_size: int | None = None, max_blocks: int | None = None,
            batch_size: int = 4, blocks_per_forward: int | None = 16, progress: bool = True) -> FeatureSet:
    """The feature candidates of one task's corpus (see the module docstring)."""
    common = dict(layers=layers, block_size=_block_size_for(model, block_size), max_blocks=max_blocks,
                  batch_size=batch_size, blocks_per_forward=blocks_per_forward, progress=progress)
    if spec.level == "message":
        return message_features(model, tokenizer, corpus, context=message_context, **common)
    return author_features(model, tokenizer, corpus, **common)


def _label_count(spec: TaskSpec, corpus: Corpus) -> int:
    if spec.level == "author":
        return corpus.frame["user_id"].nunique()
    return int(corpus.frame["label"].notna().sum())


def _resolve_tasks(tasks, data_dir) -> dict[str, tuple[TaskSpec, dict[str, Corpus]]]:
    if isinstance(tasks, Mapping):
        return dict(tasks)
    return {name: (get_task(name), load_task(name, data_dir)) for name in tasks}


def _common_rows(features: Mapping[str, FeatureSet]) -> list[str]:
    """The labelled rows every model's features reached, in the first model's order (rows are matched by id: every
    id must be present and unique)."""
    for name, f in features.items():
        if any(i is None for i in f.ids) or len(set(f.ids)) != len(f.ids):
            raise ValueError(f"{name}: the labelled rows need unique ids (message_id, or user_id for author tasks) to "
                             "be matched across models; some are missing or repeated")
    first, *others = features.values()
    shared = set(first.ids).intersection(*(f.ids for f in others)) if others else set(first.ids)
    return [i for i in first.ids if i in shared]


def _restricted(features: FeatureSet, ids: list[str]) -> FeatureSet:
    index = {i: n for n, i in enumerate(features.ids)}
    rows = np.asarray([index[i] for i in ids], dtype=int)
    return replace(features, candidates={k: X[rows] for k, X in features.candidates.items()}, y=features.y[rows],
                   ids=list(ids), user_ids=[features.user_ids[r] for r in rows])


def probe_tasks(models: Mapping[str, tuple[Any, Any]],
                tasks: Sequence[str] | Mapping[str, tuple[TaskSpec, dict[str, Corpus]]] = TASK_NAMES, *,
                data_dir: str | Path | None = None, layers: Sequence[int] | None = None,
                message_context: str = "auto", block_size: int | None = None, max_blocks: int | None = None,
                batch_size: int = 4, blocks_per_forward: int | None = 16, folds: int = 5, inner_folds: int = 3,
                bootstrap_samples: int = 1000, reference: str | None = None, seed: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """The probe protocol (module docstring) for every model on every task; returns a JSON-ready dict:

      models   {name: {hullama, block_size, layers (searched), message_context}}
      protocol {folds, inner_folds, bootstrap_samples, seed, reference, layers}
      tasks    {task: {level, metric, description, num_rows, num_authors, labels_dropped {model: n},
                       scores {model: {score, ci95, chosen, choices [per fold: candidate, hyperparameter, score],
                                       candidate_scores {candidate: inner score, mean over folds}, seconds}},
                       differences {model: {difference, ci95, share_better}}}}   (model - reference)
      summary  {model: {better, worse, tasks}}: tasks whose difference from the reference has its interval wholly
               above (better) or below (worse) zero
    labels_dropped: labels a model's features could not reach (outside the max_blocks window, untokenizable); every
    model is scored on the rows all of them reached (labels_not_reached_by_every_model: the others).
    models: {name: (model, tokenizer)}; each model is frozen (eval mode, no gradients) for the call.
    tasks: registered task names (loaded from `data_dir`), or {name: (TaskSpec, {"train"|"dev"|"test": Corpus})}.
    layers: hidden-state indices to search (default: eval/features.default_layers of each model).
    block_size: None = each model's config.block_size (capped at max_position_embeddings).
    batch_size: authors (recurrent) or rows per forward; blocks_per_forward: recurrent blocks per forward.
    """
    import datasets
    import torch

    if not models:
        raise ValueError("probe_tasks needs at least one model")
    if message_context not in MESSAGE_CONTEXTS:
        raise ValueError(f"message_context must be one of {MESSAGE_CONTEXTS}, got {message_context!r}")
    reference = reference or next(iter(models))
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models ({', '.join(models)})")
    loaded = _resolve_tasks(tasks, data_dir)
    report: dict[str, Any] = {
        "models": {}, "tasks": {}, "summary": {},
        "protocol": {"folds": folds, "inner_folds": inner_folds, "bootstrap_samples": bootstrap_samples,
                     "seed": seed, "reference": reference, "layers": None if layers is None else list(layers),
                     "interval": "95% percentile, paired, authors resampled"}}
    for name, (model, _) in models.items():
        hullama = model_parts(model).hullama
        report["models"][name] = {
            "hullama": hullama, "block_size": _block_size_for(model, block_size),
            "layers": resolve_layers(model_parts(model), layers),
            "message_context": message_context if message_context != "auto" else ("recurrent" if hullama else "none"),
        }
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # tokenization bars for every split would drown the probe's own
    modes = {name: model.training for name, (model, _) in models.items()}
    shared: dict[tuple, FeatureSet] = {}
    try:
        for task, (spec, splits) in loaded.items():
            corpus = all_authors(task, splits)
            features, seconds = {}, {}
            for name, (model, tokenizer) in models.items():
                model.eval()
                t0 = time.perf_counter()
                # author tasks on the same files (region, first year) share one forward pass
                key = (name, spec.level, tuple(sorted(spec.files.items())))
                if spec.level == "author" and spec.files and key in shared:
                    features[name] = shared[key].relabelled(corpus)
                else:
                    with torch.inference_mode():
                        features[name] = shared[key] = extract(
                            model, tokenizer, spec, corpus, layers=layers, message_context=message_context,
                            block_size=block_size, max_blocks=max_blocks, batch_size=batch_size,
                            blocks_per_forward=blocks_per_forward, progress=progress)
                seconds[name] = time.perf_counter() - t0
            rows = _common_rows(features)
            reached = {name: len(f.ids) for name, f in features.items()}
            if not rows:
                raise ValueError(f"task {task}: no labelled example reached by every model")
            features = {name: _restricted(f, rows) for name, f in features.items()}
            y, authors = features[reference].y, features[reference].user_ids
            predictions, choices = {}, {}
            for name, f in features.items():
                t0 = time.perf_counter()
                nested = nested_predictions(f.candidates, y, authors, metric=spec.metric, regression=spec.regression,
                                            n_folds=folds, inner_folds=inner_folds, seed=seed)
                predictions[name] = nested.predictions
                choices[name] = nested
                seconds[name] += time.perf_counter() - t0
            compared = paired_bootstrap(spec.metric, y, predictions, authors, reference=reference,
                                        samples=bootstrap_samples, seed=seed)
            report["tasks"][task] = {
                "level": spec.level, "metric": spec.metric, "description": spec.description,
                "num_rows": len(rows), "num_authors": compared["num_authors"],
                "labels_dropped": {name: _label_count(spec, corpus) - reached[name] for name in models},
                "labels_not_reached_by_every_model": _label_count(spec, corpus) - len(rows),
                "scores": {name: {**compared["scores"][name], "chosen": choices[name].most_chosen(),
                                  "choices": [{k: v for k, v in c.items() if k != "by_candidate"}
                                              for c in choices[name].choices],
                                  "candidate_scores": choices[name].candidate_scores(), "seconds": seconds[name]}
                           for name in models},
                "differences": compared["differences"],
            }
            if progress:
                scores = ", ".join(f"{n} {compared['scores'][n]['score']:.4f}" for n in models)
                print(f"{task} ({spec.metric}, {len(rows)} rows, {compared['num_authors']} authors): {scores}",
                      flush=True)
    finally:
        for name, (model, _) in models.items():
            model.train(modes[name])
        if bars_were_on:
            datasets.enable_progress_bars()
    for name in models:
        if name == reference:
            continue
        diffs = {task: r["differences"][name] for task, r in report["tasks"].items()}
        report["summary"][name] = {
            "better": sorted(t for t, d in diffs.items() if d["ci95"][0] > 0),
            "worse": sorted(t for t, d in diffs.items() if d["ci95"][1] < 0), "tasks": len(diffs)}
    return report


def _interval(values: Sequence[float]) -> str:
    return "[" + ", ".join("nan" if math.isnan(v) else f"{v:+.3f}" for v in values) + "]"


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per task, each model's out-of-fold score, and each model minus the reference with its
    95 % interval over authors; then per model the tasks where the interval lies above or below zero."""
    names = list(results["models"])
    reference = results["protocol"]["reference"]
    others = [n for n in names if n != reference]
    header = ["task", "metric", "authors", *names, *(f"{n} - {reference}" for n in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, r in results["tasks"].items():
        cells = [task, r["metric"], str(r["num_authors"]), *(f"{r['scores'][n]['score']:.3f}" for n in names)]
        cells += [f"{r['differences'][n]['difference']:+.3f} {_interval(r['differences'][n]['ci95'])}" for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    samples = results["protocol"]["bootstrap_samples"]
    for task, r in results["tasks"].items():
        undefined = {n: d["undefined_resamples"] for n, d in r["differences"].items() if d.get("undefined_resamples")}
        if undefined:
            lines.append(f"\n{task}: resamples left out of the interval (the metric undefined on them): "
                         + ", ".join(f"{n} {k} of {samples}" for n, k in undefined.items()))
    for name, s in results["summary"].items():
        lines.append(f"\n{name} vs {reference}: better on {len(s['better'])} of {s['tasks']} tasks "
                     f"({', '.join(s['better']) or 'none'}), worse on {len(s['worse'])} ({', '.join(s['worse']) or 'none'})")
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
    for flag, least in (("folds", 2), ("inner_folds", 2), ("bootstrap_samples", 1)):
        if getattr(args, flag) < least:
            parser.error(f"--{flag} {getattr(args, flag)} is invalid: it must be at least {least}")
    n = len(args.model)
    adapters = [None if a in (None, "none") else a for a in _per_model(parser, args.adapter, n, "--adapter", None)]
    as_hullama = [a == "yes" for a in _per_model(parser, args.as_hullama, n, "--as_hullama", "no")]
    names = args.name or ([Path(m).name for m in args.model] if n > 1 else [Path(args.model[0]).name])
    if len(names) != n:
        parser.error(f"--name has {len(names)} values for {n} models: give one per model")
    if len(set(names)) != n:
        names = [f"{i + 1}:{name}" for i, name in enumerate(names)]
    if args.reference is not None and args.reference not in names:
        parser.error(f"--reference {args.reference!r} is not one of the models' names ({', '.join(names)})")
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
    for name, (model, _) in models.items():  # checked before hours of feature extraction, not after
        try:
            resolve_layers(model_parts(model), args.layers)
            resolve_message_context(model_parts(model), args.message_context)
        except ValueError as e:
            parser.error(f"model {name}: {e}")
    try:
        results = probe_tasks(models, tasks, layers=args.layers, message_context=args.message_context,
                              block_size=args.block_size, max_blocks=args.max_blocks, batch_size=args.batch_size,
                              blocks_per_forward=args.blocks_per_forward, folds=args.folds,
                              inner_folds=args.inner_folds, bootstrap_samples=args.bootstrap_samples,
                              reference=args.reference, seed=args.seed)
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
