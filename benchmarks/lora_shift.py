"""How far a LoRA adapter moves the layers a linear probe reads: the diagnostic for "continued pre-training did not
change the frozen features because the adapter hardly changed the model".

For each adapter on one base, per decoder layer (transformers' `hidden_states` index, as `hullama-probe --layers`
counts them):

- `weight`: the relative size of the adapter's update to that layer's adapted weights,
  sqrt(sum ||scale * B A||_F^2) / sqrt(sum ||W||_F^2) over its LoRA modules;
- `hidden`: the relative change of the hidden states on real tokens of held-out authors, sum ||h_on - h_off|| /
  sum ||h_off|| (adapter on against off, the same input, read recurrently as the probe reads authors);
- `cos`: the mean cosine between a token's hidden state with and without the adapter.

"Off" is peft's `disable_adapter()`: the base weights, and any module the adapter saves in full (the author state)
at its values in the base folder.

    python benchmarks/lora_shift.py --model outputs/smollm2_cpu/hulm/hullama-base \\
        --tokenizer ~/.cache/hullama/smollm2-135m \\
        --adapter recurrent=outputs/smollm2_cpu/hulm/recurrent none=outputs/smollm2_cpu/hulm/none \\
        --data ../shared/data/commits/numpy_test.jsonl --block_size 256 --max_blocks 2
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from hullama.data.blocks import build_blocks
from hullama.eval.features import _batches, load_model, model_parts, recurrent_chunks
from hullama.eval.perplexity import load_eval_corpus

_LAYER = re.compile(r"\.layers\.(\d+)\.")


@torch.no_grad()
def weight_shift(model) -> dict[int, float]:
    """{hidden_states index (decoder layer i -> i + 1): relative size of the adapter's weight update}."""
    from peft.tuners.lora import LoraLayer

    update, weight = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or not (found := _LAYER.search(name)):
            continue
        layer = int(found.group(1)) + 1
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                update[layer] = update.get(layer, 0.0) + float(module.get_delta_weight(adapter).float().norm()) ** 2
                weight[layer] = weight.get(layer, 0.0) + float(module.get_base_layer().weight.float().norm()) ** 2
    return {layer: (update[layer] / weight[layer]) ** 0.5 for layer in sorted(update)}


@torch.no_grad()
def hidden_shift(model, tokenizer, corpus, *, block_size: int, max_blocks: int | None,
                 batch_size: int = 4) -> dict[int, dict[str, float]]:
    """{hidden_states index: {"hidden": relative change, "cos": mean cosine}} of the adapter on against off."""
    parts = model_parts(model)
    if not parts.hullama:
        raise ValueError("the model is not a HuLlama model: give hulm.py's hullama-base folder as --model")
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="lm", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows, collate = data.dataset.to_list(), data.collator()
    layers = list(range(parts.backbone.config.num_hidden_layers + 1))
    diff, norm, cos, tokens = ({layer: 0.0 for layer in layers} for _ in range(4))
    for chunk in _batches(rows, batch_size):
        batch = collate(chunk)
        real = batch["attention_mask"].bool()  # [b, K, T]
        on = list(recurrent_chunks(parts, batch, layers=layers))
        with model.disable_adapter():
            off = list(recurrent_chunks(parts, batch, layers=layers))
        for (k0, on_hidden, _), (_, off_hidden, _) in zip(on, off):
            mask = real[:, k0 : k0 + next(iter(on_hidden.values())).shape[1]]
            for layer in layers:
                a, b = on_hidden[layer].float().cpu()[mask], off_hidden[layer].float().cpu()[mask]
                diff[layer] += float((a - b).norm(dim=-1).sum())
                norm[layer] += float(b.norm(dim=-1).sum())
                cos[layer] += float(torch.nn.functional.cosine_similarity(a, b, dim=-1).sum())
                tokens[layer] += int(mask.sum())
    return {layer: {"hidden": diff[layer] / norm[layer], "cos": cos[layer] / tokens[layer]} for layer in layers}


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per layer, each adapter's weight, hidden and cos (results as main returns and writes them)."""
    lines = ["| layer | " + " | ".join(f"{n}: weight | {n}: hidden | {n}: cos" for n in results) + " |",
             "|---|" + "---|---|---|" * len(results)]
    for layer in next(iter(results.values())):
        cells = []
        for r in results.values():
            w = r[layer]["weight"]
            cells += ["-" if w is None else f"{w:.4f}", f"{r[layer]['hidden']:.4f}", f"{r[layer]['cos']:.4f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", "--model", dest="model", required=True,
                        help="the base the adapters were trained on (hulm.py's hullama-base folder)")
    parser.add_argument("--adapter", nargs="+", required=True, metavar="NAME=FOLDER",
                        help="the adapters to compare, each as name=folder")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    parser.add_argument("--data", required=True, help="an author corpus (JSON lines: user_id, message, time)")
    parser.add_argument("--max_authors", type=int, default=24, help="the first N authors of --data")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--max_blocks", type=int, default=2, help="blocks kept per author")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    adapters = {}
    for item in args.adapter:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--adapter {item!r}: give name=folder")
        if not Path(folder, "adapter_config.json").is_file():
            parser.error(f"--adapter {item!r}: no adapter_config.json in {folder}")
        adapters[name] = folder

    corpus = load_eval_corpus(args.data, max_authors=args.max_authors)
    results = {}
    for name, folder in adapters.items():
        model, tokenizer = load_model(args.model, adapter=folder, tokenizer=args.tokenizer, device="cpu",
                                      dtype="float32")
        weights = weight_shift(model)
        hidden = hidden_shift(model, tokenizer, corpus, block_size=args.block_size, max_blocks=args.max_blocks)
        results[name] = {str(layer): {"weight": weights.get(layer), **hidden[layer]} for layer in hidden}
        del model
    print(f"{args.model} on {args.data} ({len(corpus.authors)} authors), block {args.block_size}, "
          f"at most {args.max_blocks} blocks each")
    print(format_table(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
