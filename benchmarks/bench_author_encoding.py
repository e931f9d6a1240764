"""Author encoding against a full forward pass, side by side on the same model and the same batch.

`encode_authors` returns the author states of N authors x K blocks running the layers up to `extract_layer` only
(the default layout extracts just below the insertion); a full forward runs every layer. Both are timed in one run,
alternating, and the states are checked identical. Then the endpoint handler (hub_card/handler.py, task "state"):
authors per second with many authors in one request against one author per request, on the same authors.

    python benchmarks/bench_author_encoding.py                      # the CPU default model and a 16-layer Llama shape
    python benchmarks/bench_author_encoding.py --authors 16 --blocks 8 --block_size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from configuration_hullama import HuLlamaConfig
from modeling_hullama import HuLlamaModel

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


def measure_handler(authors: int, messages: int, repeats: int) -> dict:
    """The handler's task "state" on the CPU default model: one request of `authors` authors against as many
    one-author requests (states compared)."""
    from hullama.data.synthetic import synthetic_corpus
    from hullama.data.tokenizer import train_byte_bpe
    from hullama.hub_card.handler import EndpointHandler
    from modeling_hullama import HuLlamaForCausalLM

    frame = synthetic_corpus(authors, messages, seed=0)
    tokenizer = train_byte_bpe(frame["message"].tolist(), vocab_size=1024)
    torch.manual_seed(0)
    config = HuLlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=128, block_size=128,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                           **SHAPES["cpu-default"])
    handler = EndpointHandler.from_model(HuLlamaForCausalLM(config).eval(), tokenizer)
    texts = [group["message"].tolist() for _, group in frame.groupby("user_id", sort=False)]
    one, many = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        alone = [handler({"inputs": t, "parameters": {"task": "state"}})["author_state"] for t in texts]
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        batched = handler({"inputs": texts, "parameters": {"task": "state"}})["authors"]
        many.append(time.perf_counter() - start)
    difference = max(abs(a - b) for x, y in zip(alone, batched) for a, b in zip(x, y["author_state"]))
    return {"authors": len(texts), "one_per_request": len(texts) / statistics.median(one),
            "many_per_request": len(texts) / statistics.median(many), "max_state_difference": difference}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--authors", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each, alternating; the median counts")
    parser.add_argument("--handler_authors", type=int, default=32, help="authors for the handler (0: skip it)")
    parser.add_argument("--handler_messages", type=int, default=20, help="messages per author for the handler")
    args = parser.parse_args(argv)
    print(f"{args.authors} authors x {args.blocks} blocks x {args.block_size} tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    rows = [measure(shape, args.authors, args.blocks, args.block_size, args.repeats) for shape in args.shapes]
    for r in rows:
        print(f"  {r['shape']:16} layers {r['layers']:2} (state from layer {r['extract_layer']}): forward "
              f"{r['forward_s']:.3f} s, encode_authors {r['encode_s']:.3f} s -> {r['ratio']:.2f}x, "
              f"{r['authors_per_s']:.1f} authors/s, states identical: {r['states_identical']}")
    if args.handler_authors:
        h = measure_handler(args.handler_authors, args.handler_messages, args.repeats)
        print(f"  handler, {h['authors']} authors x {args.handler_messages} messages: one author per request "
              f"{h['one_per_request']:.1f} authors/s, all in one request {h['many_per_request']:.1f} authors/s -> "
              f"{h['many_per_request'] / h['one_per_request']:.2f}x (states differ by at most "
              f"{h['max_state_difference']:.1e})")
        rows.append(h)
    return rows


if __name__ == "__main__":
    main()
