"""Pool one recurrent run of the state study over seeds: seed-averaged perplexities and paired-bootstrap intervals.

Each study folder holds the study's train/hulm.py runs under one seed (benchmarks/state_study/ run files with another
`seed` and `output_dir`), each run folder with its per-token held-out scores. For every variant this averages each
token's NLL over the seeds (the seeds must have scored exactly the same tokens, which is checked), then reports on
blocks 2+ the study's criterion on those averages: recurrent - in_context and recurrent - zeroed state, with 95 %
intervals resampling authors (hullama.eval.perplexity.paired_bootstrap). Averaging over seeds removes part of the training
noise that a single run's interval (over authors only) does not show.

    python benchmarks/study_seeds.py outputs/state_study/tweets_block32 outputs/state_study/tweets_block32_seed43 \\
        --run gate
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from hullama.eval.perplexity import ABLATION_COST_PERCENT, HELD_OUT_SCORES, load_run_scores, paired_bootstrap

TOKEN_COLUMNS = ("author", "position", "token", "block")


def load_study(folder: Path, run: str) -> dict[str, np.ndarray]:
    """The token columns and the NLL of none, in_context, recurrent and recurrent_zeroed of one study folder."""
    runs = sorted(path for path in folder.iterdir() if (path / HELD_OUT_SCORES).is_file())
    try:
        merged = load_run_scores(runs)
    except (ValueError, AssertionError) as e:
        raise SystemExit(f"{folder}: {str(e).splitlines()[0]}") from None
    label = f"recurrent[{run}]"
    wanted = {"none": "none", "in_context": "in_context", "recurrent": label, "recurrent_zeroed": f"{label}_zeroed_state"}
    missing = [name for name in wanted.values() if name not in merged.nll]
    if missing:
        raise SystemExit(f"{folder} has no scores of {', '.join(missing)}: train its runs (the baselines and {run})")
    return {**{column: getattr(merged, column) for column in TOKEN_COLUMNS},
            **{f"nll/{variant}": merged.nll[name] for variant, name in wanted.items()}}


def pool(folders: list[Path], run: str, samples: int = 1000, seed: int = 0) -> dict:
    studies = [load_study(folder, run) for folder in folders]
    first = studies[0]
    for folder, study in zip(folders[1:], studies[1:]):
        if any(not np.array_equal(first[c], study[c]) for c in TOKEN_COLUMNS):
            raise SystemExit(f"{folder} scored other tokens than {folders[0]}: seeds can only be pooled on the same "
                             "tokens")
    nll = {v: np.mean([s[f"nll/{v}"] for s in studies], axis=0)
           for v in ("none", "in_context", "recurrent", "recurrent_zeroed")}
    later = first["block"] >= 1
    perplexity = {v: math.exp(values[later].mean()) for v, values in nll.items()}

    def compare(a, b):
        return paired_bootstrap(nll[a], nll[b], first["author"], samples=samples, seed=seed, mask=later)

    vs_in_context, vs_zeroed = compare("recurrent", "in_context"), compare("recurrent", "recurrent_zeroed")
    ablation = 100 * (perplexity["recurrent_zeroed"] - perplexity["recurrent"]) / perplexity["recurrent"]
    return {
        "studies": [str(f) for f in folders], "run": run, "num_authors": vs_in_context["num_authors"],
        "num_tokens_blocks_2+": vs_in_context["num_tokens"], "perplexity_blocks_2+": perplexity,
        "recurrent_minus_in_context": {k: vs_in_context[k] for k in ("delta_perplexity", "ci95")},
        "recurrent_minus_zeroed": {k: vs_zeroed[k] for k in ("delta_perplexity", "ci95")},
        "ablation_cost_percent": ablation,
        "criterion_met": vs_in_context["ci95"][1] < 0 and ablation >= ABLATION_COST_PERCENT,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders of the same study under other --seed")
    parser.add_argument("--run", required=True, help="the recurrent run's folder name in each study folder")
    parser.add_argument("--bootstrap_samples", type=int, default=1000)
    args = parser.parse_args(argv)
    report = pool(args.studies, args.run, samples=args.bootstrap_samples)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
