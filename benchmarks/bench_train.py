"""A QLoRA training step of HuLlama (recurrent: B authors x K blocks, full backpropagation through blocks) against
the same step of a plain Llama on exactly the same tokens (the B*K blocks as independent sequences), side by side.

Both models: the same base weights (random, saved once), the same quantization and LoRA (all Llama linear layers),
forward + backward + optimizer step. HuLlama also trains its state modules in full. Prints training tokens/s,
peak memory, and HuLlama's ratio to Llama, for each quantization.

    python benchmarks/bench_train.py                                   # CPU: small config, nf4 and none
    python benchmarks/bench_train.py --shape llama3-8b --device cuda --quantization nf4 \\
        --block 1024 --blocks 8 --authors 1 --gradient_checkpointing   # an 8B-shaped Llama on a GPU

Peak memory: on CUDA, torch's peak allocated bytes during a step (weights excluded); on CPU, the growth of the
process's peak resident memory over the first step, each (model, quantization) in a fresh subprocess.
"""

import argparse
import json
import os
from pathlib import Path

import torch

from side_by_side import HEADER, compare_row, median_seconds, peak_of_step

SHAPES = {
    "small": dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, tie_word_embeddings=False),
}


def save_random_base(shape: str, folder: Path, device: str) -> Path:
    """Random Llama weights of the given shape, saved once (bf16 for the 8B shape, float32 for the small one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    dtype = torch.bfloat16 if shape != "small" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(LlamaConfig(**SHAPES[shape]), dtype=dtype)
    model.save_pretrained(folder)
    del model
    return folder


def measure(args, kind: str, quantization: str) -> dict:
    """One (model, quantization): load, then peak memory of the first step and the median time of the next."""
    import peft
    from transformers import LlamaForCausalLM

    from hullama.train.args import ModelArguments
    from hullama.train.qlora import hullama_config, load_model, lora_config, quantization_config, resolve_compute_dtype

    torch.manual_seed(0)
    device = torch.device(args.device)
    model_args = ModelArguments(base_model=str(args.weights), quantization=quantization, lora_r=args.lora_r,
                                lora_alpha=2 * args.lora_r, lora_dropout=0.0, compute_dtype=args.compute_dtype,
                                insert_layer=args.insert_layer, extract_layer=args.extract_layer)
    if kind == "hullama":
        model = load_model(model_args, hullama_config(model_args, block_size=args.block),
                           gradient_checkpointing=args.gradient_checkpointing)
    else:
        qconfig = quantization_config(model_args)
        dtype = resolve_compute_dtype(args.compute_dtype)
        model = LlamaForCausalLM.from_pretrained(args.weights, quantization_config=qconfig, dtype=dtype,
                                                 device_map={"": device} if qconfig is not None else None)
        if qconfig is not None:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
        elif args.gradient_checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
            model.enable_input_require_grads()
        lora = lora_config(model_args, classifier=False)
        lora.modules_to_save = None  # Llama has no state modules
        model = peft.get_peft_model(model, lora)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (args.authors, args.blocks, args.block), device=device)
    if kind == "llama":
        ids = ids.reshape(args.authors * args.blocks, args.block)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    peak_mib, resident_mib = peak_of_step(step, device)
    seconds = median_seconds(step, args.steps)
    return {"tokens_per_s": ids.numel() / seconds, "step_s": seconds, "peak_mib": peak_mib,
            "resident_mib": resident_mib}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--quantization", default="nf4,none", help="comma-separated: nf4, int8, none")
    parser.add_argument("--authors", type=int, default=2, help="authors per step (B)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per author (K)")
    parser.add_argument("--block", type=int, default=256, help="tokens per block (T)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--compute_dtype", default="auto")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--insert_layer", type=int, help="HuLlama insertion layer (default: the config's)")
    parser.add_argument("--extract_layer", type=int, help="HuLlama extraction layer; below the insertion layer, "
                                                          "all blocks run in one batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", type=Path, help="folder of the random base (default: a cache folder)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.weights is None:
        args.weights = Path(os.environ.get("HULLAMA_BENCH_CACHE", Path.home() / ".cache" / "hullama")) / f"random-{args.shape}"

    if args._one:  # child process: one measurement
        kind, quantization = args._one.split(":")
        print(json.dumps(measure(args, kind, quantization)))
        return

    save_random_base(args.shape, args.weights, args.device)
    print(f"device={args.device} shape={args.shape} authors={args.authors} blocks={args.blocks} block={args.block} "
          f"lora_r={args.lora_r} gradient_checkpointing={args.gradient_checkpointing} "
          f"insert_layer={args.insert_layer} extract_layer={args.extract_layer} "
          f"tokens/step={args.authors * args.blocks * args.block}")
    print(f"{'quant':>6} {HEADER}")
    child = [f"--{k}={v}" for k, v in vars(args).items()
             if k not in ("json", "_one", "gradient_checkpointing") and v is not None]
    child += ["--gradient_checkpointing"] if args.gradient_checkpointing else []
    rows = [{"quantization": q, **compare_row(__file__, child, q, f"{q:>6}")} for q in args.quantization.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
