"""HuFT against standard fine-tuning, several seeds per cell: the fine-tuning half of the paper's claims with intervals.

For every task and seed, train/huft.py fine-tunes twice on the task's train split (dev selects the checkpoint, test is
scored once): standard fine-tuning (`--author_context none`) from the model pre-trained without author context, and
HuFT (`--author_context recurrent`) from the HuLM-pre-trained model. The report gives, per task, each cell's mean
test score over the seeds with its 95 % t-interval, and HuFT - standard paired by seed with its t-interval; then the
same for the mean over the tasks (each seed's mean over the tasks, then the interval over seeds).

    python benchmarks/huft_seeds.py --standard outputs/state_study/tweets_block32/baselines/none \\
        --huft outputs/state_study/tweets_block32/gate/recurrent --seeds 1 2 3 \\
        --output_dir outputs/huft_seeds/tweets_block32 --block_size 32 --max_blocks 32 --quantization none

With QLoRA (a pre-trained base continued by train/hulm.py), give the adapter folders: each run continues its adapter
(train/huft.py --adapter), e.g. --standard outputs/smollm2/hulm/none --huft outputs/smollm2/hulm/recurrent
--quantization nf4. Options this script does not know go to train/huft.py for every run. A run whose metrics.json
exists is not run again, so an interrupted grid continues where it stopped. Writes huft_seeds.json and
huft_seeds.md to --output_dir.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from hullama.command_line import OneLineArgumentParser
from hullama.eval.commands import TASK_NAMES
from hullama.eval.tasks import get_task

GRID_ARGS = "huft_seeds_args.json"  # the models and train/huft.py flags the grid's runs were trained with
CONTEXTS = {"standard": "none", "huft": "recurrent"}
# the stance tasks and sentiment: where a message is read in its author's context
MESSAGE_TASKS = tuple(t for t in TASK_NAMES if get_task(t).level == "message")


def mean_interval(values: list[float]) -> dict:
    """Mean and 95 % t-interval of independent runs (NaN interval for fewer than two)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "ci95": [math.nan, math.nan], "n": len(x)}
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": len(x)}


def run_dir(output_dir: Path, task: str, cell: str, seed: int) -> Path:
    return output_dir / task / f"{cell}_seed{seed}"


def start_from(model: str) -> list[str]:
    """train/huft.py's flags to start from `model`: a PEFT adapter folder (hulm.py's output on a pre-trained base,
    QLoRA) continues that adapter; any other folder is a full model."""
    return ["--adapter", model] if (Path(model) / "adapter_config.json").is_file() else ["--base_model", model]


def run_grid(output_dir: Path, models: dict[str, str], tasks: list[str], seeds: list[int], extra: list[str]) -> None:
    from hullama.train import huft

    for task in tasks:
        for seed in seeds:
            for cell, context in CONTEXTS.items():
                out = run_dir(output_dir, task, cell, seed)
                if (out / "metrics.json").is_file():
                    continue
                print(f"== {task}, {cell}, seed {seed} ==", flush=True)
                huft.main(["--task_name", task, *start_from(models[cell]), "--author_context", context,
                           "--seed", str(seed), "--output_dir", str(out), *extra])


def report(output_dir: Path, tasks: list[str], seeds: list[int]) -> dict:
    """The grid's scores (every run must have finished) with means and intervals over seeds."""
    scores = {}
    for task in tasks:
        scores[task] = {}
        for cell in CONTEXTS:
            values = []
            for seed in seeds:
                path = run_dir(output_dir, task, cell, seed) / "metrics.json"
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing: run the grid first")
                values.append(float(json.loads(path.read_text())["value"]))
            scores[task][cell] = values
    per_task = {task: {"standard": mean_interval(s["standard"]), "huft": mean_interval(s["huft"]),
                       "huft_minus_standard": mean_interval(np.subtract(s["huft"], s["standard"]).tolist()),
                       "by_seed": s} for task, s in scores.items()}
    over = {cell: [float(np.mean([scores[t][cell][i] for t in tasks])) for i in range(len(seeds))]
            for cell in CONTEXTS}
    mean_of_tasks = {"standard": mean_interval(over["standard"]), "huft": mean_interval(over["huft"]),
                     "huft_minus_standard": mean_interval(np.subtract(over["huft"], over["standard"]).tolist())}
    better = [t for t, r in per_task.items() if r["huft_minus_standard"]["ci95"][0] > 0]
    worse = [t for t, r in per_task.items() if r["huft_minus_standard"]["ci95"][1] < 0]
    return {"seeds": seeds, "tasks": per_task, "mean_of_tasks": mean_of_tasks, "huft_better": better,
            "huft_worse": worse, "interval": "95% t-interval over seeds (differences paired by seed)"}


def _cell(r: dict) -> str:
    low, high = r["ci95"]
    return f"{r['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _delta(r: dict) -> str:
    low, high = r["ci95"]
    return f"{r['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def format_markdown(result: dict) -> str:
    lines = [f"Test scores, mean over seeds {', '.join(map(str, result['seeds']))} with 95 % t-intervals; HuFT - "
             "standard paired by seed.", "", "| task | standard fine-tuning | HuFT | HuFT - standard |", "|---|---|---|---|"]
    rows = [*result["tasks"].items(), ("mean of the tasks", result["mean_of_tasks"])]
    for task, r in rows:
        lines.append(f"| {task} | {_cell(r['standard'])} | {_cell(r['huft'])} | {_delta(r['huft_minus_standard'])} |")
    lines += ["", f"HuFT better (interval above zero) on {len(result['huft_better'])} of {len(result['tasks'])} tasks"
                  f" ({', '.join(result['huft_better']) or 'none'}), worse on {len(result['huft_worse'])}"
                  f" ({', '.join(result['huft_worse']) or 'none'})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineArgumentParser(prog="huft_seeds.py", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--standard", required=True,
                        help="the model standard fine-tuning starts from (a model folder, or a PEFT adapter folder)")
    parser.add_argument("--huft", required=True,
                        help="the HuLM-pre-trained model HuFT starts from (a model folder, or a PEFT adapter folder)")
    parser.add_argument("--tasks", nargs="+", default=list(MESSAGE_TASKS), choices=MESSAGE_TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--report_only", action="store_true", help="only the report of the finished grid")
    args, extra = parser.parse_known_args(argv)
    for flag, values in (("--seeds", args.seeds), ("--tasks", args.tasks)):
        if len(set(values)) < len(values):  # a repeat would count one run twice and narrow the interval
            parser.error(f"{flag} {' '.join(map(str, values))} names one twice")
    if len(args.seeds) < 2:
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: an interval over seeds needs at least two")
    for flag in ("--task_name", "--base_model", "--adapter", "--author_context", "--seed", "--output_dir"):
        if any(e == flag or e.startswith(flag + "=") for e in extra):
            parser.error(f"{flag} is set by huft_seeds.py for every run")
    grid = {"standard": args.standard, "huft": args.huft, "huft_args": extra}
    recorded = args.output_dir / GRID_ARGS
    earlier = json.loads(recorded.read_text()) if recorded.is_file() else None
    if not args.report_only:
        for name in ("standard", "huft"):
            if not Path(getattr(args, name)).is_dir():
                parser.error(f"--{name} {getattr(args, name)}: no such model folder")
        if earlier is not None and earlier != grid:  # finished runs would mix two recipes in one table
            parser.error(f"{args.output_dir} holds runs trained with other models or flags ({recorded}): use another "
                         "--output_dir, or the same arguments to continue")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(grid, indent=2) + "\n")
        run_grid(args.output_dir, {"standard": args.standard, "huft": args.huft}, args.tasks, args.seeds, extra)
    try:
        result = report(args.output_dir, args.tasks, args.seeds)
    except FileNotFoundError as e:
        parser.error(str(e))
    result["models"] = earlier if args.report_only and earlier is not None else grid
    table = format_markdown(result)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "huft_seeds.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output_dir / "huft_seeds.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
