"""The state study's report: does the author state carry information? Compares train/hulm.py runs token by token.

A study is a set of run files (YAML, one per run, read by train/hulm.py; benchmarks/state_study/ holds the study's),
each training some variants on the same training authors and scoring them on the same held-out authors (its
`validation_file`); train/hulm.py keeps every variant's per-token held-out NLL in <output_dir>/held_out_scores.npz.
This script reads those of several runs, checks they scored exactly the same tokens, and reports, per recurrent
run, on blocks 2+ (where the state can matter): perplexity of none, in_context, recurrent and recurrent with its
state zeroed; recurrent - in_context and recurrent - zeroed with 95 % paired-bootstrap intervals over authors; the
ablation cost ((zeroed - recurrent) / recurrent); and the criterion: recurrent below in_context with the interval
below zero, and an ablation cost of at least 3 %.

A control run (`hold_state_at_initial: true`, u0.yaml: the same recurrent recipe, tokens, schedule and seed, every block
reading U0) splits recurrent - in_context in two, each with its interval: the state's benefit, recurrent - control
(two trained models that differ only in whether a block reads the carried state), and the schedule's, control -
in_context (what training on the recurrent schedule does to the language model alone), on block 1 and blocks 2+.

    hullama-train benchmarks/state_study/tweets_block32/baselines.yaml      # none and in_context
    hullama-train benchmarks/state_study/tweets_block32/gate.yaml           # one run per mechanism or setting
    hullama-train benchmarks/state_study/tweets_block32/u0.yaml             # the control (state held at U0)
    python benchmarks/study_report.py outputs/state_study/tweets_block32/* --output_dir outputs/state_study/tweets

A recurrent run is named by its folder (`recurrent[gate]`); none and in_context come from the run that trained them
(a second run with the same baseline is refused: say which by listing only one).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hullama.command_line import OneLineArgumentParser
from hullama.eval.perplexity import ABLATION_COST_PERCENT, TokenScores, load_run_scores, paired_bootstrap, summarize

BASELINES = ("none", "in_context")


def load_runs(folders: list[Path]) -> tuple[TokenScores, dict[str, dict]]:
    """Every run's scores merged (recurrent variants named after their run) and each run's arguments."""
    return load_run_scores(folders), {folder.name: json.loads((folder / "run_args.json").read_text())
                                      for folder in folders}


def _ppl(variants: dict, name: str) -> dict:
    r = variants[name]
    return {"all": r["perplexity"], "block_1": r["by_block"]["1"]["perplexity"],
            "blocks_2+": r["by_block"]["2+"]["perplexity"]}


def is_control(run_args: dict) -> bool:
    return bool(run_args["HuLMArguments"].get("hold_state_at_initial"))


def _compare(merged: TokenScores, a: str, b: str, mask, samples: int, seed: int) -> dict:
    return paired_bootstrap(merged.nll[a], merged.nll[b], merged.author, samples=samples, seed=seed, mask=mask)


def report(merged: TokenScores, runs: dict[str, dict], *, samples: int = 1000, seed: int = 0) -> dict:
    missing = [b for b in BASELINES if b not in merged.nll]
    if missing:
        raise ValueError(f"no run trained {', '.join(missing)}: add the study's baselines run")
    controls = [name for name, run_args in runs.items() if is_control(run_args)]
    if len(controls) > 1:
        raise ValueError(f"{len(controls)} control runs ({', '.join(controls)}): list one")
    # the control never read a carried state: its zeroed-state scores (every block from U0) are what it learned
    control = f"recurrent[{controls[0]}]_zeroed_state" if controls else None
    summary = summarize(merged, bootstrap_samples=samples, seed=seed)
    later, first = merged.block >= 1, merged.block == 0
    rows = []
    for name, run_args in runs.items():
        label = f"recurrent[{name}]"
        if label not in merged.nll or is_control(run_args):
            continue
        zeroed = f"{label}_zeroed_state"
        vs_in_context, vs_zeroed = (_compare(merged, label, other, later, samples, seed)
                                    for other in ("in_context", zeroed))
        recurrent, ablated = (summary["variants"][v]["by_block"]["2+"]["perplexity"] for v in (label, zeroed))
        cost = 100 * (ablated - recurrent) / recurrent
        beats = bool(vs_in_context["delta_perplexity"] < 0 and vs_in_context["ci95"][1] < 0)
        rows.append({
            "run": name, "label": label, "settings": {k: run_args["ModelArguments"].get(k) for k in (
                "state_mechanism", "state_pooling", "state_lr_scale")} | {k: run_args["HuLMArguments"].get(k) for k in (
                    "blocks_per_step", "author_pool", "stagger_authors", "author_draw", "learn_recurrence")},
            "perplexity": {v: _ppl(summary["variants"], k) for v, k in (
                ("none", "none"), ("in_context", "in_context"), ("recurrent", label), ("recurrent_zeroed_state", zeroed))},
            "recurrent_minus_in_context": vs_in_context, "recurrent_minus_zeroed": vs_zeroed,
            "ablation_cost_percent": cost,
            "criterion": {"recurrent_beats_in_context": beats, "ablation_cost_at_least_3_percent":
                          cost >= ABLATION_COST_PERCENT, "met": beats and cost >= ABLATION_COST_PERCENT},
        })
        if control is not None:
            rows[-1]["control"] = {
                "run": controls[0], "perplexity": _ppl(summary["variants"], control),
                **{f"{what}_{where}": _compare(merged, a, b, mask, samples, seed)
                   for what, (a, b) in (("state_benefit", (label, control)), ("schedule", (control, "in_context")))
                   for where, mask in (("block_1", first), ("blocks_2+", later))}}
    return {"num_tokens": summary["num_tokens"], "num_authors": summary["num_authors"], "rows": rows,
            "bootstrap": summary["bootstrap"]}


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _diff(c: dict) -> str:
    return f"{c['delta_perplexity']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"


def format_markdown(study: dict) -> str:
    lines = [f"Held-out: {study['num_tokens']:,} tokens of {study['num_authors']} authors, every run scored on the same "
             "tokens (checked). Perplexity all / block 1 / blocks 2+; differences on blocks 2+ with 95 % intervals "
             "over authors.", "",
             "| run | none | in_context | recurrent | state zeroed | recurrent - in_context | ablation cost | criterion |",
             "|---|---|---|---|---|---|---|---|"]
    for row in study["rows"]:
        p, c = row["perplexity"], row["criterion"]
        cells = [" / ".join(_num(p[v][k]) for k in ("all", "block_1", "blocks_2+"))
                 for v in ("none", "in_context", "recurrent", "recurrent_zeroed_state")]
        lines.append(f"| {row['run']} | {' | '.join(cells)} | {_diff(row['recurrent_minus_in_context'])} | "
                     f"{row['ablation_cost_percent']:.1f} % | {'met' if c['met'] else 'not met'} |")
    lines += ["", f"Criterion: recurrent < in_context on blocks 2+ with the interval below zero, and an ablation cost "
                  f"((zeroed - recurrent) / recurrent) of at least {ABLATION_COST_PERCENT:g} %."]
    controlled = [row for row in study["rows"] if "control" in row]
    if controlled:
        lines += ["", "recurrent - in_context split by the control (the same recipe, every block reading U0): the "
                      "state's benefit (recurrent - control) and the schedule's (control - in_context).", "",
                  "| run | control | control perplexity | state benefit, block 1 | state benefit, blocks 2+ | "
                  "schedule, block 1 | schedule, blocks 2+ |", "|---|---|---|---|---|---|---|"]
        for row in controlled:
            c = row["control"]
            ppl = " / ".join(_num(c["perplexity"][k]) for k in ("all", "block_1", "blocks_2+"))
            lines.append(f"| {row['run']} | {c['run']} | {ppl} | " + " | ".join(
                _diff(c[k]) for k in ("state_benefit_block_1", "state_benefit_blocks_2+", "schedule_block_1",
                                      "schedule_blocks_2+")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineArgumentParser(prog="study_report.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="train/hulm.py output folders of the study's run files")
    parser.add_argument("--output_dir", type=Path, help="where study.json and study.md are written (default: print)")
    parser.add_argument("--bootstrap_samples", type=int, default=1000, help="author resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    try:
        study = report(*load_runs(args.runs), samples=args.bootstrap_samples, seed=args.seed)
    except (ValueError, FileNotFoundError, AssertionError) as e:  # a token mismatch is an AssertionError
        parser.error(str(e).splitlines()[0])
    table = format_markdown(study)
    print(table)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "study.json").write_text(json.dumps(study, indent=2) + "\n")
        (args.output_dir / "study.md").write_text(table + "\n")
    return study


if __name__ == "__main__":
    main()
