"""HuLM continued pre-training: the author state learned over authors' time-ordered histories.

The main job, with no arguments: a small HuLlama built from scratch, trained on the embedded synthetic corpus in
the `recurrent` variant and, for comparison, in the `none` variant (each message alone: the ecological-fallacy
baseline) the same way; it prints held-out perplexity of both on exactly the same predicted tokens.

    accelerate launch train/hulm.py                                   # the main job, a few minutes on a CPU
    accelerate launch train/hulm.py config.yaml                       # every argument from a YAML file
    accelerate launch train/hulm.py --base_model meta-llama/Meta-Llama-3-8B \\
        --train_file authors.jsonl --block_size 1024 --max_blocks 8 --variants recurrent \\
        --quantization nf4 --bf16 --gradient_checkpointing --output_dir outputs/llama3-hulm \\
        --push_to_hub --hub_model_id me/Llama-3-8B-HuLM
    accelerate launch --config_file train/accelerate/ddp.yaml train/hulm.py --base_model ...   # multi-GPU
    python train/hulm.py --help                 # HuLlama's own options (--help_all: every option)

Outputs (under --output_dir): one folder per variant (a full model from scratch, an adapter on a base),
`hullama-base/` for an adapter's base, `results.json` (held-out perplexity), `run_args.json`.
"""

from __future__ import annotations

import copy
import gc
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hullama.command_line import ArgumentError
from hullama.train.args import (
    AUTHOR_DRAWS, VARIANTS, DataArguments, HubArguments, ModelArguments, RunArguments, quick_help,
    record_effective_settings, save_run_args,
)

SCRIPT = "hulm.py"


@dataclass
class HuLMArguments:
    variants: str = field(
        default="recurrent,none",
        metadata={"help": "Comma-separated variants to train, each the same way: recurrent (HuLlama blocks + "
                          "state), in_context (blocks alone), none (each message alone)."},
    )

    blocks_per_step: int = field(
        default=1,
        metadata={"help": "Recurrent schedule. k >= 1: streaming: every step reads k blocks of as many authors as "
                          "fit in the token budget (per_device_train_batch_size x k x block_size), each author's state "
                          "carried from one step to the next (on many processes too: they exchange the states after "
                          "every step). 0: whole authors per step (up to max_blocks blocks each, HaRT's schedule)."},
    )
    author_pool: int = field(
        default=256,
        metadata={"help": "Streaming schedule: how many authors are open at a time; every step advances as many "
                          "of them as its token budget holds, drawn at random, so consecutive steps mix many "
                          "authors, as shuffled blocks do (a carried state waits about pool / batch size steps for "
                          "its author's next chunk). 0 (or the batch size): every open author advances every step, "
                          "one lane per author until it ends."},
    )

    stagger_authors: bool = field(
        default=True,
        metadata={"help": "Streaming schedule: start each author's epoch at a fixed random block and wrap around "
                          "(the author's first block starting from U0 as always), so that a large --author_pool does "
                          "not put every author's first blocks at the start of the epoch and the last ones at its "
                          "end. In the first epoch the block an author starts at has no carried state (U0)."},
    )

    author_draw: str = field(
        default="uniform",
        metadata={"help": "Streaming schedule: how a step draws its authors from the pool. uniform: each open author "
                          "alike; remaining: in proportion to the author's remaining blocks, so that with a pool of "
                          "all authors the epoch interleaves every author's blocks uniformly at random (as shuffled "
                          "blocks do, each author's still in order)."},
    )
    learn_recurrence: bool = field(
        default=True,
        metadata={"help": "Streaming schedule: each chunk re-runs, inside its step, the last recurrence step of the "
                          "author's previous chunk (from the carried state before that block and the block's summary), "
                          "so that the recurrence weights get a gradient across the step boundary. Without it they get "
                          "none at --blocks_per_step 1 (a carried state is detached) and stay as initialised."},
    )

    hold_state_at_initial: bool = field(
        default=False,
        metadata={"help": "Control run (the state study): train recurrent with every block reading the learned initial "
                          "state U0 instead of the carried state (the zeroed-state ablation, applied in training): the "
                          "same tokens, schedule and seed, but no information from earlier blocks. Its held-out "
                          "scores that count are its zeroed-state ones; benchmarks/study_report.py compares them "
                          "with a normal run's."},
    )

    def __post_init__(self):
        if self.author_pool < 0:
            raise ArgumentError(f"--author_pool {self.author_pool} is invalid: it must be 0 (as many authors as "
                                "the batch) or at least 1")
        if self.author_draw not in AUTHOR_DRAWS:
            raise ArgumentError(f"--author_draw {self.author_draw!r} is unknown: choose one of {', '.join(AUTHOR_DRAWS)}")
        if self.blocks_per_step < 0:
            raise ArgumentError(f"--blocks_per_step {self.blocks_per_step} is invalid: it must be 0 (whole authors) "
                                "or at least 1")
        self.variant_list = [v.strip() for v in self.variants.split(",") if v.strip()]
        unknown = [v for v in self.variant_list if v not in VARIANTS]
        if unknown or not self.variant_list:
            raise ArgumentError(f"--variants {self.variants!r}: choose from {', '.join(VARIANTS)}")
        if self.hold_state_at_initial and "recurrent" not in self.variant_list:
            raise ArgumentError("--hold_state_at_initial holds the recurrent variant's state: add recurrent to "
                                f"--variants (now {self.variants!r})")
        if len(set(self.variant_list)) < len(self.variant_list):
            raise ArgumentError(f"--variants {self.variants!r} names a variant twice (its second run would replace "
                                "the first)")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    argv = quick_help((ModelArguments, DataArguments, HuLMArguments, HubArguments, RunArguments), argv)
    from hullama.train.cli import run_cli  # the heavy imports, after the quick help
    from hullama.train.training_args import HuLMTrainingArguments

    return run_cli(SCRIPT, (ModelArguments, DataArguments, HuLMArguments, HubArguments, HuLMTrainingArguments),
                   run, argv)


def tokens_per_step(hulm_args, data_args, authors_per_step: int, block_size: int) -> int:
    """The tokens a recurrent step holds (padded): every variant's token budget per step."""
    return authors_per_step * (hulm_args.blocks_per_step or data_args.max_blocks or 8) * block_size


def effective_settings(variant: str, stream: bool, hulm_args, data_args, args, step_tokens: int,
                       block_size: int) -> dict:
    """What a variant's training steps hold, as run (recorded in run_args.json beside the arguments asked for)."""
    processes = args.world_size
    if stream:
        batches = (f"the next {hulm_args.blocks_per_step} block(s) of as many authors as fit in {step_tokens} real "
                   f"tokens per process ({args.per_device_train_batch_size} authors when every block is full; on "
                   f"{processes} processes the step holds {processes} x that, split by authors), drawn "
                   f"from a pool of {hulm_args.author_pool or args.per_device_train_batch_size} open authors, states "
                   "carried between steps")
    else:
        rows = {"recurrent": "whole authors (up to max_blocks blocks)", "in_context": "blocks of the author's messages",
                "none": "single messages"}[variant]
        batches = f"{rows}, rows of similar length together, at most {step_tokens} real tokens per process"
    return {"batches": batches, "token_budget_per_process": step_tokens, "processes": processes,
            "tokens_per_optimizer_step": step_tokens * processes * args.gradient_accumulation_steps,
            "per_device_eval_batch_size": args.per_device_eval_batch_size, "block_size": block_size,
            "max_blocks": data_args.max_blocks}


def rows_per_step(dataset, tokens: int) -> int:
    """How many none / in_context rows (messages or blocks, shorter than a block) hold `tokens` tokens."""
    mean_length = sum(dataset["length"]) / max(1, len(dataset))
    return max(1, round(tokens / max(mean_length, 1)))


def run(model_args, data_args, hulm_args, hub_args, training_args) -> dict:
    from transformers import set_seed

    from hullama.data.blocks import BlockConfig, build_blocks
    from hullama.train.cli import resume_point
    from hullama.train.data_setup import load_corpora
    from hullama.train.hub import push_training_output
    from hullama.train.output import save_output, write_model_card
    from hullama.train.qlora import hullama_config, load_model, load_tokenizer, training_report
    from hullama.train.schedule import StreamCollator, chunk_authors
    from hullama.train.trainer import HuLMTrainer

    set_seed(training_args.seed)
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ArgumentError("--push_to_hub needs --hub_model_id NAME")
    training_args.push_to_hub = False  # pushed once at the end: adapter, base, code and card together
    output_dir = Path(training_args.output_dir)
    cache = data_args.cache_dir(output_dir)
    main_process = training_args.process_index == 0

    with training_args.main_process_first(desc="corpus"):
        train_corpus, held_out = load_corpora(data_args, task="lm", seed=training_args.seed)
    tokenizer = load_tokenizer(model_args, train_corpus.frame["message"].tolist())
    block_size = data_args.block_size or (128 if model_args.from_scratch else None)
    config = hullama_config(
        model_args, block_size=block_size or 1024, vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if block_size is None:
        block_size = config.block_size = min(1024, config.max_position_embeddings)
    if main_process:
        save_run_args(output_dir, model_args, data_args, hulm_args, hub_args, training_args)

    scores, reports, main_model = [], {}, None
    for variant in hulm_args.variant_list:
        with training_args.main_process_first(desc=f"blocks ({variant})"):
            blocks = BlockConfig(block_size=block_size, variant=variant, task="lm", max_blocks=data_args.max_blocks)
            train_data = build_blocks(train_corpus, tokenizer, blocks, num_proc=data_args.preprocessing_num_workers,
                                       cache_dir=cache)
            eval_data = build_blocks(held_out, tokenizer, BlockConfig(
                block_size=block_size, variant=variant, task="lm", max_blocks=data_args.eval_max_blocks),
            cache_dir=cache)
        if main_process:
            print(f"\n== {variant} ==\n{train_data.report}")
        args = copy.deepcopy(training_args)
        args.output_dir = str(output_dir / variant)
        # The same token budget per step in every variant: the padded size of a recurrent step.
        step_tokens = tokens_per_step(hulm_args, data_args, training_args.per_device_train_batch_size, block_size)
        stream = variant == "recurrent" and hulm_args.blocks_per_step > 0
        if variant != "recurrent":  # evaluation only: rows that hold about as many tokens as a recurrent batch
            args.per_device_eval_batch_size = rows_per_step(
                eval_data.dataset, tokens_per_step(hulm_args, data_args, training_args.per_device_eval_batch_size,
                                                   block_size))
        if main_process:
            record_effective_settings(output_dir, variant, effective_settings(
                variant, stream, hulm_args, data_args, args, step_tokens, block_size))
        train_dataset, collator = train_data.dataset, train_data.collator()
        if stream:  # each step: the next blocks_per_step blocks of as many authors as the token budget holds
            train_dataset, collator = chunk_authors(train_dataset, hulm_args.blocks_per_step), StreamCollator(collator)
        model = load_model(model_args, config, gradient_checkpointing=training_args.gradient_checkpointing)
        if main_process:
            print(training_report(model))
        trainer = HuLMTrainer(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_data.dataset,
            data_collator=collator, processing_class=tokenizer, state_lr_scale=model_args.state_lr_scale,
            stream_authors=stream, author_pool=hulm_args.author_pool, stagger_authors=hulm_args.stagger_authors,
            learn_recurrence=hulm_args.learn_recurrence, author_draw=hulm_args.author_draw,
            token_budget=step_tokens, hold_state_at_initial=hulm_args.hold_state_at_initial and variant == "recurrent",
        )
        trainer.train(resume_from_checkpoint=resume_point(training_args.resume_from_checkpoint, Path(args.output_dir)))
        if main_process:
            save_output(args.output_dir, trainer.model, tokenizer, base_model=model_args.base_model)
            scores.append(held_out_scores(trainer.model, held_out, tokenizer, block_size, variant, data_args, args))
            reports[variant] = train_data.report
            if variant == hulm_args.variant_list[0]:  # the main product: its card is written once results are in
                main_model = trainer.model
        trainer.accelerator.wait_for_everyone()
        del trainer, model
        gc.collect()

    results = {}
    if main_process:
        from hullama.eval.perplexity import format_results

        results = {"block_size": block_size, "corpus": held_out.source, **compare_variants(scores, output_dir)}
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        print("\nheld-out perplexity (every variant scored on the same predicted tokens):")
        print(format_results(results))
        main_variant = hulm_args.variant_list[0]
        write_model_card(
            output_dir / main_variant, main_model, tokenizer, repo_id=hub_model_id or f"local/{output_dir.name}",
            base_model=model_args.base_model,
            kind="causal-lm", training_args=training_args.to_dict(), data_summary=str(reports[main_variant]),
            eval_rows=perplexity_rows(results, held_out.source),
        )
        if push:
            urls = push_training_output(output_dir / hulm_args.variant_list[0], hub_model_id,
                                        private=hub_args.hub_private, base_repo_id=hub_args.hub_base_model_id)
            print("\n".join(f"pushed {repo}: {url}" for repo, url in urls.items()))
    return results


def held_out_scores(model, corpus, tokenizer, block_size, variant, data_args, args):
    """Per-token held-out NLL of one trained variant (plus the zeroed-state ablation for recurrent)."""
    from hullama.eval.perplexity import score_variants

    return score_variants(model, tokenizer, corpus, block_size=block_size, max_blocks=data_args.eval_max_blocks,
                          variants=[variant], batch_size=args.per_device_eval_batch_size, device=args.device)


def compare_variants(scores: list, output_dir: Path | None = None) -> dict:
    """One report over the variants' models: perplexities and paired bootstraps, on the same checked tokens; the
    per-token scores are kept in `output_dir`/held_out_scores.npz (benchmarks/study_report.py compares runs)."""
    from hullama.eval.perplexity import HELD_OUT_SCORES, merge_token_scores, summarize

    merged = merge_token_scores(scores)
    if output_dir is not None:
        merged.save(output_dir / HELD_OUT_SCORES)
    return summarize(merged)


def perplexity_rows(results: dict, corpus: str) -> list[dict]:
    """The card's evaluation rows: held-out perplexity of every variant, all on the same tokens."""
    return [
        {"task_type": "text-generation", "task_name": f"HuLM, {variant} variant", "dataset_name": corpus,
         "dataset_type": "author-corpus", "metric_type": "perplexity",
         "metric_name": f"perplexity, {variant.replace('_', ' ')} (held-out authors)",
         "metric_value": round(scores["perplexity"], 3)}
        for variant, scores in results["variants"].items()
    ]


def command() -> None:
    """The `hullama-train` console command: `main`, whose results go to --output_dir (a returned value would reach the
    shell as an exit status)."""
    main()


if __name__ == "__main__":
    command()
