"""Author encoding against a full forward pass, side by side on the same model and the same batch.

`encode_authors` returns the author states of N authors x K blocks running the layers up to `extract_layer` only
(the default layout extracts just below the insertion); a full forward runs every layer. Both are timed in one run,
alternating, and the states are checked identical.

    python benchmarks/bench_author_encoding.py                      # the CPU default model and a 16-layer Llama shape
    python benchmarks/bench_author_encoding.py --authors 16 --blocks 8 --block_size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from configuration_hullama import HuLlamaConfig  # noqa: E402
from modeling_hullama import HuLlamaModel  # noqa: E402

SHAPES = {
    # train/hulm.py's from-scratch model (hidden 256, 4 layers, 4 heads): insert 2, extract 1
    "cpu-default": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=4),
    # Llama's proportions at depth 16 (grouped-query attention, SwiGLU width 8/3 x): insert 8, extract 7
    "llama-16-layers": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=16, num_attention_heads=8,
                            num_key_value_heads=2),
}


def measure(shape: str, authors: int, blocks: int, block_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = HuLlamaConfig(vocab_size=4096, max_position_embeddings=max(block_size, 128), block_size=block_size,
                           **SHAPES[shape])
    model = HuLlamaModel(config).eval()
    with torch.no_grad():
        for param in model.author_state.parameters():  # a trained-looking state path (it starts at zero effect)
            param.add_(torch.randn_like(param) * 0.1)
    ids = torch.randint(0, config.vocab_size, (authors, blocks, block_size), generator=torch.Generator().manual_seed(1))
    timings = {"forward": [], "encode_authors": []}
    with torch.inference_mode():
        full = model(ids, use_cache=False)  # warm-up, and the reference states
        encoded = model.encode_authors(ids)
        identical = torch.equal(full.author_states, encoded.author_states)
        for _ in range(repeats):
            for name, call in (("forward", lambda: model(ids, use_cache=False)),
                               ("encode_authors", lambda: model.encode_authors(ids))):
                start = time.perf_counter()
                call()
                timings[name].append(time.perf_counter() - start)
    forward, encode = statistics.median(timings["forward"]), statistics.median(timings["encode_authors"])
    return {"shape": shape, "layers": config.num_hidden_layers, "extract_layer": config.extract_layer,
            "insert_layer": config.insert_layer, "forward_s": forward, "encode_s": encode,
            "authors_per_s": authors / encode, "ratio": forward / encode, "states_identical": identical}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--authors", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each, alternating; the median counts")
    args = parser.parse_args(argv)
    print(f"{args.authors} authors x {args.blocks} blocks x {args.block_size} tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    rows = [measure(shape, args.authors, args.blocks, args.block_size, args.repeats) for shape in args.shapes]
    for r in rows:
        print(f"  {r['shape']:16} layers {r['layers']:2} (state from layer {r['extract_layer']}): forward "
              f"{r['forward_s']:.3f} s, encode_authors {r['encode_s']:.3f} s -> {r['ratio']:.2f}x, "
              f"{r['authors_per_s']:.1f} authors/s, states identical: {r['states_identical']}")
    return rows


if __name__ == "__main__":
    main()
