"""Pool one recurrent run of the state study over seeds: seed-averaged perplexities and paired-bootstrap intervals.

Each study folder (benchmarks/study_state.py --output_dir, one per --seed) holds per-token scores of none, in_context
and the recurrent run (runs/<run>/study_scores.npz). For every variant this averages each token's NLL over the seeds
(the seeds must have scored exactly the same tokens, which is checked), then reports on blocks 2+ the study's
criterion on those averages: recurrent - in_context and recurrent - zeroed state, with 95 % intervals resampling
authors (eval.perplexity.paired_bootstrap). Averaging over seeds removes part of the training noise that a single
run's interval (over authors only) does not show.

    python benchmarks/study_seeds.py outputs/study-numpy-block32 outputs/study-numpy-block32-seed43 \\
        --run recurrent-gate-lr3-stagger-learnrec-normupd
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from hullama.eval.perplexity import paired_bootstrap

TOKEN_COLUMNS = ("author", "position", "token", "block")


def load_study(folder: Path, run: str) -> dict[str, np.ndarray]:
    """The token columns and the NLL of none, in_context, recurrent and recurrent_zeroed of one study folder."""
    columns: dict[str, np.ndarray] = {}
    for name in ("none", "in_context", run):
        path = folder / "runs" / name / "study_scores.npz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: score the study first (benchmarks/study_state.py without "
                             "--train_only)")
        arrays = np.load(path)
        for column in TOKEN_COLUMNS:
            if column in columns and not np.array_equal(columns[column], arrays[column]):
                raise SystemExit(f"{path} scored other tokens than the other runs of {folder}")
            columns[column] = arrays[column]
        for key in (k for k in arrays.files if k.startswith("nll/")):
            variant = key[len("nll/"):]
            if name == run:
                variant = "recurrent_zeroed" if variant.endswith("_zeroed_state") else "recurrent"
            columns[f"nll/{variant}"] = arrays[key]
    return columns


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
        "criterion_met": vs_in_context["ci95"][1] < 0 and ablation >= 3,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders of the same study under other --seed")
    parser.add_argument("--run", required=True, help="the recurrent run's folder name under runs/")
    parser.add_argument("--bootstrap_samples", type=int, default=1000)
    args = parser.parse_args(argv)
    report = pool(args.studies, args.run, samples=args.bootstrap_samples)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
