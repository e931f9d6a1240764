"""How much the author state can tell authors apart: a diagnostic for "the state carries nothing".

The state is updated from a summary of each block (one layer's hidden state, pooled: `config.state_pooling`). If
that summary is nearly the same vector for every author, the state cannot carry who wrote the text, however the
state is injected. This script runs a HuLlama model over an author corpus and reports, for the block summaries and
for the states U_k, under each pooling:

- `author R2`: the share of the variance across blocks explained by which author wrote them (1: every author has
  its own vector), beside its chance level (the authors shuffled over the blocks: with few blocks per author R2 is
  well above 0 even for vectors that say nothing about the author);
- `cos between authors`: the mean cosine between blocks of different authors (near 1: one common direction);
- `mean |x|`: mean absolute value (for U: how close to tanh saturation).

    python benchmarks/state_diversity.py --model ~/.cache/hullama/smollm2-135m --as_hullama \\
        --data ../shared/data/commits/numpy_test.jsonl --block_size 256 --max_blocks 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hullama.data.blocks import build_blocks
from hullama.eval.features import _batches, load_model, model_parts, recurrent_chunks
from hullama.eval.perplexity import load_eval_corpus


def author_r2(vectors: np.ndarray, authors: np.ndarray) -> float:
    """The share of the variance of `vectors` [n, d] between the authors' means."""
    centre = vectors.mean(0)
    total = float(((vectors - centre) ** 2).sum())
    between = sum(float(((vectors[authors == a].mean(0) - centre) ** 2).sum()) * int((authors == a).sum())
                  for a in np.unique(authors))
    return between / total if total > 0 else 0.0


def diversity(vectors: np.ndarray, authors: np.ndarray, permutations: int = 100, seed: int = 0) -> dict[str, float]:
    """author R2 (and its mean with the authors shuffled over the blocks: what R2 is by chance with this many
    authors and blocks), mean cosine between blocks of different authors, mean |x| of `vectors` [n, d]."""
    rng = np.random.default_rng(seed)
    chance = float(np.mean([author_r2(vectors, rng.permutation(authors)) for _ in range(permutations)]))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    cos = unit @ unit.T
    other = authors[:, None] != authors[None, :]
    return {"author_r2": author_r2(vectors, authors), "author_r2_chance": chance,
            "cos_between_authors": float(cos[other].mean()),
            "mean_abs": float(np.abs(vectors).mean())}


@torch.no_grad()
def collect(model, tokenizer, corpus, *, block_size: int, max_blocks: int | None, batch_size: int = 4):
    """(summaries [n, H], states [n, S], author index [n]) over every real block of every author."""
    parts = model_parts(model)
    if not parts.hullama:
        raise ValueError("the model has no author state: load it as a HuLlama model (--as_hullama)")
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="lm", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows, collate = data.dataset.to_list(), data.collator()
    summaries, states, authors = [], [], []
    for first, chunk in enumerate(_batches(rows, batch_size)):
        batch = collate(chunk)
        for _, _, out in recurrent_chunks(parts, batch):
            real = out.block_mask.cpu()  # [b, K]
            author = torch.arange(real.shape[0]).unsqueeze(1).expand_as(real) + first * batch_size
            states.append(out.author_states.float().cpu()[real])
            authors.append(author[real])
            # each block's summary as the recurrence receives it (before its norm): [b, K, H]
            summaries.append(out.block_summaries.float().cpu()[real])
    return torch.cat(summaries).numpy(), torch.cat(states).numpy(), torch.cat(authors).numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", "--model", dest="model", required=True,
                        help="a HuLlama model folder, or a Llama with --as_hullama")
    parser.add_argument("--adapter", help="a PEFT adapter folder on --model")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    parser.add_argument("--as_hullama", nargs="?", const="yes", default="no", choices=["yes", "no"],
                        help="load a plain Llama as HuLlama, state untrained (yes/no; the bare flag: yes)")
    parser.add_argument("--data", required=True, help="an author corpus (JSON lines: user_id, message, time)")
    parser.add_argument("--max_authors", type=int, default=24, help="the first N authors of --data")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--max_blocks", type=int, default=4, help="blocks kept per author")
    parser.add_argument("--poolings", default="last,mean", help="block-summary poolings to compare")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    poolings = [p.strip() for p in args.poolings.split(",") if p.strip()]
    if unknown := [p for p in poolings if p not in ("last", "mean")]:
        parser.error(f"--poolings: unknown {unknown}; choose from last, mean")

    model, tokenizer = load_model(args.model, adapter=args.adapter, tokenizer=args.tokenizer,
                                  as_hullama=args.as_hullama == "yes", device="cpu", dtype="float32")
    corpus = load_eval_corpus(args.data, max_authors=args.max_authors)
    results = {}
    for pooling in poolings:
        model.config.state_pooling = pooling  # read at every forward
        summaries, states, authors = collect(model, tokenizer, corpus, block_size=args.block_size,
                                             max_blocks=args.max_blocks)
        results[pooling] = {"blocks": len(authors), "authors": int(len(np.unique(authors))),
                            "summary": diversity(summaries, authors), "state": diversity(states, authors)}
    print(f"{args.model}{' + ' + args.adapter if args.adapter else ''} on {args.data}, block {args.block_size}")
    print("| pooling | vectors | author R2 (chance) | cos between authors | mean abs |\n|---|---|---|---|---|")
    for pooling, r in results.items():
        for name in ("summary", "state"):
            d = r[name]
            print(f"| {pooling} | {name} ({r['blocks']} blocks, {r['authors']} authors) | {d['author_r2']:.3f} "
                  f"({d['author_r2_chance']:.3f}) | "
                  f"{d['cos_between_authors']:.3f} | {d['mean_abs']:.3f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
