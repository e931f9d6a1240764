"""Forward+backward of HuLlama on K blocks against LlamaForCausalLM on the same tokens, side by side.

Llama sees the K blocks of each author as K independent sequences in one batch; HuLlama runs them in order and
carries the author state (full backpropagation through blocks). Same weights, same tokens, same loss. Prints
tokens/s and the peak memory of one training step, and HuLlama's ratio to Llama for each K.

    python benchmarks/bench_model.py                          # CPU: hidden 256, 4 layers, block 256
    python benchmarks/bench_model.py --device cuda --dtype bfloat16 --hidden 2048 --layers 16 --block 1024

Peak memory: on CUDA, torch's peak allocated bytes during the step; on CPU, the growth of the process's peak
resident memory over one step, each (model, K) measured in a fresh subprocess so that peaks do not mix.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from side_by_side import HEADER, compare_row, median_seconds, peak_of_step


def _config(args):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        max_position_embeddings=args.block,
    )


def measure(args, kind: str, blocks: int) -> dict:
    """One (model, K) measurement in this process: peak memory of the first step, then timed steps."""
    from transformers import LlamaForCausalLM

    from configuration_hullama import HuLlamaConfig
    from modeling_hullama import HuLlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = _config(args)
    llama = LlamaForCausalLM(config)
    if kind == "llama":
        model = llama
    else:
        model = HuLlamaForCausalLM(HuLlamaConfig.from_llama_config(config, block_size=args.block))
        model.load_state_dict(llama.state_dict(), strict=False)  # the same Llama weights
        del llama
    model = model.to(device=device, dtype=dtype).train()
    ids = torch.randint(0, args.vocab, (args.authors, blocks, args.block), device=device)
    if kind == "llama":
        ids = ids.reshape(args.authors * blocks, args.block)

    def step():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak_mib, _ = peak_of_step(step, device)
    seconds = median_seconds(step, args.steps)
    return {"tokens_per_s": ids.numel() / seconds, "step_s": seconds, "peak_mib": peak_mib}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default="1,4,8", help="comma-separated K values")
    parser.add_argument("--authors", type=int, default=2, help="authors per batch (B)")
    parser.add_argument("--block", type=int, default=256, help="tokens per block (T)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._one:  # child process: one measurement
        kind, blocks = args._one.split(":")
        print(json.dumps(measure(args, kind, int(blocks))))
        return

    print(f"device={args.device} dtype={args.dtype} hidden={args.hidden} layers={args.layers} "
          f"block={args.block} authors={args.authors} vocab={args.vocab} threads={args.threads}")
    print(f"{'K':>3} {HEADER}")
    child_args = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("json", "_one")]
    rows = [{"K": k, **compare_row(__file__, child_args, str(k), f"{k:>3}")} for k in map(int, args.blocks.split(","))]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
