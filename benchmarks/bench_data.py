"""Benchmark the data pipeline on the whole numpy commit corpus (train + dev + test, ~27k messages).

    python benchmarks/bench_data.py                                  # byte-level BPE (vocab 8192) trained on the spot
    python benchmarks/bench_data.py --tokenizer path/to/tokenizer    # a saved tokenizer, read locally
    python benchmarks/bench_data.py --variant in_context --batch-size 16 --num-proc 2
    python benchmarks/bench_data.py --max-blocks 8                   # HaRT's training truncation

Prints: messages/s for a cold build (tokenize + lay out, empty cache), the time of a second build served from the
cache files, and the padding fraction of collated batches (dataset order and length-grouped). Goal: cold under
30 s, from cache under 3 s.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from hullama.data.blocks import VARIANTS, build_blocks
from hullama.data.collator import padding_fraction
from hullama.data.corpus import load_corpus
from hullama.data.tokenizer import train_byte_bpe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "commits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding numpy_{train,dev,test}.jsonl")
    parser.add_argument("--tokenizer", help="a saved tokenizer folder (default: train a byte-level BPE here)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--variant", choices=VARIANTS, default="recurrent")
    parser.add_argument("--max-blocks", type=int, default=None, help="blocks kept per author (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size for the padding fraction")
    parser.add_argument("--num-proc", type=int, default=None)
    args = parser.parse_args()

    t = time.perf_counter()
    records = [json.loads(line) for name in ("train", "dev", "test")
               for line in (args.data / f"numpy_{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    corpus = load_corpus(pd.DataFrame(records, dtype=object))
    print(f"loaded {len(corpus):,} messages of {len(corpus.authors)} authors in {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    else:
        tokenizer = train_byte_bpe(corpus.frame["message"], vocab_size=args.vocab_size)
    print(f"tokenizer ready (vocab {len(tokenizer):,}) in {time.perf_counter() - t:.2f} s")

    with tempfile.TemporaryDirectory() as cache:
        timings = []
        for run in ("cold", "from cache"):
            t = time.perf_counter()
            data = build_blocks(corpus, tokenizer, variant=args.variant, block_size=args.block_size,
                                max_blocks=args.max_blocks, cache_dir=cache, num_proc=args.num_proc)
            timings.append(time.perf_counter() - t)
            print(f"{run:>10}: {timings[-1]:6.2f} s  ({len(corpus) / timings[-1]:,.0f} messages/s, "
                  f"{data.report.tokens_kept / timings[-1]:,.0f} tokens/s)")
        for grouped in (False, True):
            fraction = padding_fraction(data.dataset, args.batch_size, group_by_length=grouped)
            order = "length-grouped" if grouped else "dataset order"
            print(f"padding, batch {args.batch_size}, {order}: {fraction:.1%}")
        print(data.report)
        ok = timings[0] < 30 and timings[1] < 3
        print(f"goal (cold < 30 s, cache < 3 s): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
