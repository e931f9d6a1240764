"""Gather a real run's results (scripts/smollm2_real_run.sh) into markdown tables and the model card.

Reads, under --run_dir: hulm/results.json (the recurrent and none models on the same held-out tokens),
perplexity/*/perplexity.json (each model scored in all three variants), probe*/probe.json (the eight linear probes),
huft/<task>/<variant>/metrics.json (HuFT and standard fine-tuning), timings.txt. Writes report.md and
eval_rows.json, and re-renders hulm/recurrent/README.md with every result in its model-index (widget examples
kept from the card that training wrote). Stages that did not run are left out, and the report says so.

    python scripts/real_run_report.py --run_dir outputs/smollm2 --base_model HuggingFaceTB/SmolLM2-135M
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VARIANT_ORDER = ("recurrent", "recurrent_zeroed_state", "in_context", "none")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _ppl(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _interval(comparison: dict) -> str:
    low, high = comparison["ci95"]
    return f"{comparison['delta_perplexity']:+.2f} [{low:+.2f}, {high:+.2f}]"


def perplexity_table(run_dir: Path) -> tuple[list[str], list[dict]]:
    """Rows per (model, corpus): perplexity all / block 1 / blocks 2+ in every variant, plus the key differences."""
    lines = ["| model | held-out corpus | variant | perplexity (all) | block 1 | blocks 2+ |", "|---|---|---|---|---|---|"]
    rows, notes = [], []
    for path in sorted((run_dir / "perplexity").glob("*/perplexity.json")):
        model, corpus = path.parent.name.split("_", 1)
        result = json.loads(path.read_text())
        for variant in VARIANT_ORDER:
            scores = result["variants"].get(variant)
            if scores is None:
                continue
            blocks = scores["by_block"]
            lines.append(f"| {model} | {corpus} ({result['num_tokens']:,} tokens, {result['num_authors']} authors) | "
                         f"{variant} | {_ppl(scores['perplexity'])} | {_ppl(blocks.get('1', {}).get('perplexity'))} | "
                         f"{_ppl(blocks.get('2+', {}).get('perplexity'))} |")
            rows.append({"task_type": "text-generation", "task_name": f"HuLM perplexity ({model} model)",
                         "dataset_name": corpus, "dataset_type": "author-corpus", "metric_type": "perplexity",
                         "metric_name": f"perplexity, {variant.replace('_', ' ')}",
                         "metric_value": round(scores["perplexity"], 3)})
        for c in result["comparisons"]:
            if c["tokens"] == "blocks 2+":
                notes.append(f"- {model}, {corpus}, blocks 2+: {c['a']} - {c['b']} = {_interval(c)}")
    return lines + [""] + notes, rows


def training_comparison(run_dir: Path) -> list[str]:
    """The recurrent-trained and none-trained models on the same held-out tokens (train/hulm.py's results)."""
    result = _load(run_dir / "hulm" / "results.json")
    if result is None:
        return ["(hulm/results.json missing: train/hulm.py did not train and score both variants in one run)"]
    lines = ["| trained variant, scored as | perplexity (all) | block 1 | blocks 2+ |", "|---|---|---|---|"]
    for variant, scores in result["variants"].items():
        blocks = scores["by_block"]
        lines.append(f"| {variant} | {_ppl(scores['perplexity'])} | {_ppl(blocks.get('1', {}).get('perplexity'))} | "
                     f"{_ppl(blocks.get('2+', {}).get('perplexity'))} |")
    lines.append("")
    lines += [f"- {c['a']} - {c['b']} ({c['tokens']}): {_interval(c)}" for c in result["comparisons"]]
    return lines


def probe_table(run_dir: Path) -> tuple[list[str], list[dict]]:
    """The probe stage's tables: probe/probe.json, or one probe_<part>/probe.json per part run side by side."""
    found = sorted(run_dir.glob("probe*/probe.json"))
    if not found:
        return ["(no probe*/probe.json: the probe stage did not run)"], []
    from hullama.eval.probe import format_table

    lines, rows = [], []
    for path in found:
        result = _load(path)
        if "tasks" not in result or any("scores" not in r for r in result["tasks"].values()):
            lines += [f"({path} was written by the probe before 2026-11-30 (one test split, no intervals): rerun the "
                      "probe stage)", ""]
            continue
        for task, r in result["tasks"].items():
            for model, scored in r["scores"].items():
                rows.append({"task_type": "text-classification", "task_name": f"linear probe ({model} features)",
                             "dataset_name": task, "dataset_type": "downstream-task", "metric_type": r["metric"],
                             "metric_name": f"{r['metric']} (out-of-fold, all authors)",
                             "metric_value": round(scored["score"], 4)})
        lines += [*format_table(result).splitlines(), ""]
    return lines, rows


CONTEXT_COLUMNS = {"none": "standard fine-tuning (none)", "in_context": "in_context",
                   "recurrent": "HuFT (recurrent, from HuLM)"}


def huft_table(run_dir: Path) -> tuple[list[str], list[dict]]:
    """One row per task with every author context that ran (none, in_context, recurrent), HuFT - standard, and
    the mean over the tasks where every context ran."""
    runs = {}
    for task_dir in sorted(p for p in (run_dir / "huft").glob("*") if p.is_dir()):
        found = {c: _load(task_dir / c / "metrics.json") for c in CONTEXT_COLUMNS}
        if any(found.values()):
            runs[task_dir.name] = {c: r for c, r in found.items() if r}
    if not runs:
        return ["(no huft/*/*/metrics.json: the HuFT stage did not run)"], []
    contexts = [c for c in CONTEXT_COLUMNS if any(c in found for found in runs.values())]
    lines = ["| task | metric | " + " | ".join(CONTEXT_COLUMNS[c] for c in contexts) + " | HuFT - standard | "
             "test labels |", "|---|---|" + "---|" * len(contexts) + "---|---|"]
    rows, complete = [], []

    def cells(values: dict) -> str:
        diff = f"{values['recurrent'] - values['none']:+.4f}" if {"none", "recurrent"} <= values.keys() else ""
        return " | ".join(f"{values[c]:.4f}" if c in values else "" for c in contexts) + f" | {diff}"

    for task, found in runs.items():
        values = {c: r["value"] for c, r in found.items()}
        metric = next(iter(found.values()))["metric"]
        labels = next(iter(found.values())).get("test_labels", "")
        lines.append(f"| {task} | {metric} | {cells(values)} | {labels} |")
        if len(values) == len(contexts):
            complete.append(values)
        for context, value in values.items():
            rows.append({"task_type": "text-classification", "task_name": f"fine-tuning, {context} author context",
                         "dataset_name": task, "dataset_type": "downstream-task", "metric_type": metric,
                         "metric_name": f"{metric} (test)", "metric_value": round(value, 4)})
    if len(complete) > 1:
        mean = {c: sum(v[c] for v in complete) / len(complete) for c in contexts}
        lines.append(f"| mean of {len(complete)} tasks | | {cells(mean)} | |")
    return lines, rows


def rerender_card(folder: Path, rows: list[dict], base_model: str | None, repo_id: str | None = None,
                  notes: str | None = None) -> Path | None:
    """The training card again, with every result in model-index; its widget examples are kept."""
    from huggingface_hub import ModelCard

    from hullama.hub_card import write_card
    from hullama.train.args import split_paths

    card_path = folder / "README.md"
    if not card_path.is_file():
        return None
    old = ModelCard.load(card_path).data.to_dict()
    run_args = _load(folder.parent / "run_args.json") or {}
    training = run_args.get("TrainingArguments", {})
    data = run_args.get("DataArguments", {})

    def names(paths: str | None) -> str:  # file names only: the run's folders mean nothing to a reader
        return ", ".join(Path(p).name for p in split_paths(paths))

    summary = (f"Authors of {names(data.get('train_file')) or 'the embedded synthetic corpus'}, blocks of "
               f"{data.get('block_size')} tokens, at most {data.get('max_blocks')} blocks per author; held out: "
               f"{names(data.get('validation_file')) or 'a split of the authors'}.")
    repo_id = repo_id or training.get("hub_model_id") or f"local/{folder.parent.name}"
    config = _load(folder / "config.json") or {}
    # a config.json without normalize_state_update was saved before the field existed: computed without it
    return write_card(folder, repo_id=repo_id, state_mechanism=config.get("state_mechanism", "gate"),
                      normalize_state_update=config.get("normalize_state_update", False),
                      base_model=base_model, kind="causal-lm", adapter=(folder / "adapter_config.json").is_file(),
                      training_args=training or None, data_summary=summary, eval_results=rows,
                      widget=old.get("widget"), eval_notes=notes)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", default="outputs/smollm2", help="the run's output folder")
    parser.add_argument("--base_model", help="the base's Hub id for the card's metadata (a local path is left out)")
    parser.add_argument("--repo_id", help="the card's repo id (default: the run's --hub_model_id, else local/hulm)")
    parser.add_argument("--notes", type=Path,
                        help="a markdown file printed under the card's results table: machine, budgets, what they show")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"no run folder {run_dir}")
    ppl_lines, ppl_rows = perplexity_table(run_dir)
    probe_lines, probe_rows = probe_table(run_dir)
    huft_lines, huft_rows = huft_table(run_dir)
    timings = (run_dir / "timings.txt").read_text().strip() if (run_dir / "timings.txt").is_file() else "(none)"
    report = "\n".join([
        "## HuLM pre-training: the recurrent and none models on the same held-out tokens", "",
        *training_comparison(run_dir), "",
        "## Perplexity of each model in the three variants", "", *ppl_lines, "",
        "## Linear probes, eight tasks (out-of-fold over all authors; differences with 95 % intervals over authors)", "", *probe_lines, "",
        "## HuFT against standard fine-tuning (test split)", "", *huft_lines, "",
        "## Wall time per stage (seconds)", "", "```", timings, "```", "",
    ])
    (run_dir / "report.md").write_text(report)
    rows = ppl_rows + probe_rows + huft_rows
    (run_dir / "eval_rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.notes is not None and not args.notes.is_file():
        parser.error(f"--notes {args.notes}: no such file")
    notes = args.notes.read_text() if args.notes is not None else None
    card = rerender_card(run_dir / "hulm" / "recurrent", rows, args.base_model, args.repo_id, notes) if rows else None
    print(report)
    print(f"wrote {run_dir / 'report.md'}" + (f" and {card}" if card else ""))
    return run_dir / "report.md"


if __name__ == "__main__":
    main()
