"""Tokens per training step of each variant of the default job, before and after token budgets, on a real corpus.

    python benchmarks/bench_batches.py                              # numpy commits (train split), block 128
    python benchmarks/bench_batches.py --corpus ../shared/data/hart/abo_train.jsonl --block-size 256

Lays out the corpus as training does (a byte-level BPE trained on it) and draws one epoch of batches for each variant:
each two ways, before (as the job drew them up to 2026-11-30) and after token budgets. recurrent (the streaming
schedule, one block an author): batch-size authors a step, against as many authors as fit in the budget; none /
in_context: a fixed number of rows sized so that a mean batch holds a recurrent step's tokens, grouped by length with
transformers' LengthGroupedSampler, against TokenBudgetBatches. The budget: a full recurrent step's tokens. Prints, per variant and way, the real and the padded tokens per
step (mean, 5th and 95th percentile, max / mean) and the steps per epoch. No model runs; nothing is downloaded.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from hullama.data.blocks import BlockConfig, build_blocks
from hullama.data.corpus import load_corpus
from hullama.data.tokenizer import train_byte_bpe
from hullama.train.batches import TokenBudgetBatches
from hullama.train.schedule import AuthorStreamBatches, chunk_authors

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "commits" / "numpy_train.jsonl"


def rows_per_step(lengths: list[int], tokens: int) -> int:
    """The rows a batch held before token budgets: the step's tokens over the mean row length."""
    return max(1, round(tokens / max(float(np.mean(lengths)), 1.0)))


def spread(batches: list[list[int]], lengths: list[int]) -> dict:
    real = np.array([sum(lengths[i] for i in b) for b in batches], float)
    padded = np.array([len(b) * max(lengths[i] for i in b) for b in batches], float)
    return {"steps": len(batches), "real_mean": real.mean(), "real_p5": np.percentile(real, 5),
            "real_p95": np.percentile(real, 95), "real_max_over_mean": real.max() / real.mean(),
            "padded_mean": padded.mean(), "padded_max": padded.max(), "padding": 1 - real.sum() / padded.sum()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DATA)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="authors per recurrent step (the job's default)")
    parser.add_argument("--max-blocks", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    from transformers.trainer_pt_utils import LengthGroupedSampler

    corpus = load_corpus(str(args.corpus))
    tokenizer = train_byte_bpe(corpus.frame["message"], vocab_size=args.vocab_size)
    budget = args.batch_size * args.block_size  # the default job: one block of each author a step
    print(f"{args.corpus.name}: {len(corpus):,} messages, {len(corpus.authors)} authors; block {args.block_size}, "
          f"{args.batch_size} authors a recurrent step, token budget {budget} per step\n")
    rows = []
    for variant in ("recurrent", "none", "in_context"):
        data = build_blocks(corpus, tokenizer, BlockConfig(block_size=args.block_size, variant=variant, task="lm",
                                                           max_blocks=args.max_blocks))
        if variant == "recurrent":
            chunks = chunk_authors(data.dataset, 1)
            lengths = chunks["length"]
            for way, budget_or_none in ((f"{args.batch_size} authors", None), ("budget", budget)):
                sampler = AuthorStreamBatches(chunks["author_index"], chunks["chunk_index"], args.batch_size,
                                              seed=args.seed, pool=256, stagger=True, budget=budget_or_none,
                                              lengths=lengths)
                rows.append(("recurrent", way, spread(list(sampler), lengths)))
            continue
        lengths = data.dataset["length"]
        per_step = rows_per_step(lengths, budget)
        grouped = list(LengthGroupedSampler(per_step, lengths=lengths,
                                            generator=torch.Generator().manual_seed(args.seed)))
        before = [grouped[i: i + per_step] for i in range(0, len(grouped), per_step)]
        rows.append((variant, f"rows ({per_step} a step)", spread(before, lengths)))
        after = TokenBudgetBatches(lengths, budget, seed=args.seed).global_batches()
        rows.append((variant, "budget", spread(after, lengths)))

    print(f"{'variant':<11}{'batches':<20}{'steps':>7}{'real mean':>11}{'p5':>8}{'p95':>8}{'max/mean':>10}"
          f"{'padded mean':>13}{'padded max':>12}{'padding':>9}")
    for variant, way, r in rows:
        print(f"{variant:<11}{way:<20}{r['steps']:>7}{r['real_mean']:>11.0f}{r['real_p5']:>8.0f}{r['real_p95']:>8.0f}"
              f"{r['real_max_over_mean']:>10.2f}{r['padded_mean']:>13.0f}{r['padded_max']:>12.0f}{r['padding']:>9.1%}")


if __name__ == "__main__":
    main()
