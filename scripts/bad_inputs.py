"""Bad and hostile inputs, tried as a user would, and what each one gets.

Every case runs a command-line entry point in-process (`main(argv)`, as `python train/hulm.py ...` would) or the
Python API, in a fresh folder of its own, and records the exit status, what was printed on stderr and whether a
traceback escaped. A user error must end in one line naming the input and exit status 2 (a `ValueError` in Python);
a few inputs are handled instead (a warning, a note in the data report), as each case says.

    python scripts/bad_inputs.py                       # every case; writes docs/bad_inputs.md
    python scripts/bad_inputs.py --only hulm-abbrev    # some cases (ids or prefixes), printed, nothing written

tests/test_bad_inputs.py runs every case and checks its expectation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2",
        "--variants", "recurrent", "--per_device_train_batch_size", "4"]
FILE_TINY = TINY[4:]  # the same without the synthetic corpus's size


@dataclass
class Case:
    id: str
    what: str  # the input, as a user would describe it
    run: Callable[[Path], list[str] | None]  # prepares files in the folder; returns argv (None: the Python API)
    entry: str = "hulm"  # hulm | huft | perplexity | probe | study | api
    expect: str = ""  # a substring of the one-line error (or of the output for handled cases)
    handled: str = ""  # not an error: how the input is handled instead (the run must succeed)
    code_runs: bool = False  # whether the hostile code of the case (if any) is meant to run
    check: Callable[[Path], bool] | None = None  # for handled cases: what the run left in its folder


@dataclass
class Outcome:
    exit_code: int
    stderr: list[str]
    stdout: str
    traceback: bool
    seconds: float
    files: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ corpus files


def corpus_rows(authors: int = 12, messages: int = 6, label: bool = False, start: int = 0) -> list[dict]:
    words = "the data model array fix bug test docs build release merge update add remove refactor".split()
    rows = []
    for a in range(start, start + authors):
        for m in range(messages):
            row = {"user_id": f"u{a}", "message_id": f"u{a}-{m}", "timestamp": f"2020-01-{m + 1:02d}T10:00:00",
                   "message": " ".join(words[(a + m + k) % len(words)] for k in range(5 + m % 4))}
            if label:
                row["label"] = ["favor", "against"][(a + m) % 2]
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def corpus(folder: Path, name: str = "authors.jsonl", **kwargs) -> str:
    return str(write_jsonl(folder / name, corpus_rows(**kwargs)))


def out(folder: Path) -> list[str]:
    return ["--output_dir", str(folder / "out")]


def tiny_llama(folder: Path, name: str = "llama", **config) -> Path:
    """A saved random Llama (config and weights) with a small trained tokenizer, as a local base."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hullama.data.tokenizer import train_byte_bpe

    path = folder / name
    tokenizer = train_byte_bpe((r["message"] for r in corpus_rows(40, 10)), vocab_size=300)
    torch.manual_seed(0)
    fields = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, **config)
    LlamaForCausalLM(LlamaConfig(**fields)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


MARKER = "CODE_RAN"  # what the hostile code of `hostile_base` leaves in the case's folder when it runs


def hostile_base(folder: Path, model_type: str = "llama") -> Path:
    """A real Llama base (weights, tokenizer) whose config.json names code to run (auto_map): the code would leave
    a marker file in the case's folder."""
    path = tiny_llama(folder, "hostile")
    (path / "evil.py").write_text(f"open({str(folder / MARKER)!r}, 'w').write('ran')\n"
                                  "from transformers import LlamaConfig\n\n\nclass EvilConfig(LlamaConfig):\n"
                                  "    pass\n")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type=model_type, auto_map={name: "evil.EvilConfig" for name in (
        "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer")})
    (path / "config.json").write_text(json.dumps(config))
    return path


def finished_run(folder: Path) -> list[str]:
    """An output folder holding a finished run (as a first `hulm.py` run leaves it), for the second run's argv."""
    from hullama.train import hulm

    hulm.main([*TINY, *out(folder)])
    return [*TINY, *out(folder)]


def yaml_file(folder: Path, text: str) -> str:
    path = folder / "run.yaml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------------------ the cases


def _cases() -> list[Case]:
    c: list[Case] = []

    def add(id_, what, run, entry="hulm", expect="", handled="", code_runs=False, check=None):
        c.append(Case(id_, what, run, entry, expect, handled, code_runs, check))

    # -- security: code runs only when asked
    add("hulm-hostile-base", "--base_model: a Llama whose config.json names a .py file to run (auto_map)",
        lambda f: ["--base_model", str(hostile_base(f)), *TINY, *out(f)], expect="held-out perplexity",
        handled="trains on the Llama; the folder's code does not run")
    add("hulm-hostile-hullama-base", "--base_model: a 'hullama' config whose auto_map names a hostile file",
        lambda f: ["--base_model", str(hostile_base(f, "hullama")), *TINY, *out(f)], expect="held-out perplexity",
        handled="trains with this package's HuLlama code; the folder's code does not run")
    add("hulm-hostile-tokenizer", "--tokenizer: a folder whose config names code to run",
        lambda f: ["--base_model", str(tiny_llama(f)), "--tokenizer", str(hostile_base(f)), *TINY, *out(f)],
        expect="held-out perplexity", handled="the tokenizer files load; the folder's code does not run")
    add("hulm-hostile-base-trusted", "a base that names code to run, with --trust_remote_code",
        lambda f: ["--base_model", str(hostile_base(f)), "--trust_remote_code", *TINY, *out(f)],
        expect="held-out perplexity", handled="the code runs, as asked", code_runs=True)

    # -- data lost
    add("hulm-rerun-same-output", "the same --output_dir twice (a finished run there)",
        lambda f: finished_run(f), expect="holds an earlier run")
    add("hulm-base-inside-output", "--base_model inside --output_dir (OUT/hullama-base) with --output_dir OUT",
        lambda f: ["--base_model", str(tiny_llama(f / "out", "hullama-base")), *TINY, *out(f)],
        expect="lies inside --output_dir")
    add("hulm-tokenizer-inside-output", "--tokenizer inside --output_dir",
        lambda f: ["--tokenizer", str(tiny_llama(f / "out", "tok")), *TINY, *out(f)], expect="lies inside --output_dir")
    add("hulm-output-is-file", "--output_dir naming a file",
        lambda f: [*TINY, "--output_dir", str(write_jsonl(f / "file.jsonl", []))], expect="is a file")

    # -- flags: silent wrong results
    add("hulm-abbrev-learning-rate", "--learning_rat 0.1 (an abbreviated flag)",
        lambda f: [*TINY, *out(f), "--learning_rat", "0.1"], expect="--learning_rat")
    add("hulm-abbrev-epochs", "--num_train 2 (an abbreviated flag)",
        lambda f: [*TINY, *out(f), "--num_train", "2"], expect="--num_train")
    add("hulm-epochs-zero", "--num_train_epochs 0", lambda f: [*TINY, *out(f), "--num_train_epochs", "0"],
        expect="--num_train_epochs 0")
    add("hulm-epochs-negative", "--num_train_epochs -1", lambda f: [*TINY, *out(f), "--num_train_epochs", "-1"],
        expect="--num_train_epochs -1")
    add("hulm-lr-zero", "--learning_rate 0", lambda f: [*TINY, *out(f), "--learning_rate", "0"],
        expect="--learning_rate 0")
    add("hulm-lr-negative", "--learning_rate -0.001", lambda f: [*TINY, *out(f), "--learning_rate", "-0.001"],
        expect="--learning_rate -0.001")
    add("hulm-batch-zero", "--per_device_train_batch_size 0 (hung, memory without bound)",
        lambda f: [*TINY, *out(f), "--per_device_train_batch_size", "0"], expect="--per_device_train_batch_size 0")
    add("hulm-eval-batch-zero", "--per_device_eval_batch_size 0",
        lambda f: [*TINY, *out(f), "--per_device_eval_batch_size", "0"], expect="--per_device_eval_batch_size 0")
    add("hulm-grad-accum-zero", "--gradient_accumulation_steps 0",
        lambda f: [*TINY, *out(f), "--gradient_accumulation_steps", "0"], expect="--gradient_accumulation_steps 0")
    add("hulm-learning-rate-text", "--learning_rate fast", lambda f: [*TINY, *out(f), "--learning_rate", "fast"],
        expect="learning_rate")
    add("hulm-unknown-flag", "--colour blue (no such flag)", lambda f: [*TINY, *out(f), "--colour", "blue"],
        expect="--colour")
    add("hulm-flag-without-value", "--block_size with no value", lambda f: [*TINY, *out(f), "--block_size"],
        expect="block_size")
    add("hulm-state-mechanism", "--state_mechanism bogus", lambda f: [*TINY, *out(f), "--state_mechanism", "bogus"],
        expect="--state_mechanism 'bogus' is unknown")
    add("hulm-state-pooling", "--state_pooling median", lambda f: [*TINY, *out(f), "--state_pooling", "median"],
        expect="--state_pooling 'median' is unknown")
    add("hulm-insert-layer-past-depth", "--insert_layer 10 on a 2-layer model",
        lambda f: [*TINY, *out(f), "--insert_layer", "10"], expect="--insert_layer 10 is invalid")
    add("hulm-extract-layer-negative", "--extract_layer -1", lambda f: [*TINY, *out(f), "--extract_layer", "-1"],
        expect="--extract_layer -1 is invalid")
    add("hulm-scratch-heads", "--scratch_heads 3 (does not divide the hidden size 64)",
        lambda f: [*TINY, *out(f), "--scratch_heads", "3"], expect="--scratch_heads 3 must divide")
    add("hulm-scratch-layers-zero", "--scratch_layers 0", lambda f: [*TINY[:-8], *out(f), "--scratch_layers", "0"],
        expect="--scratch_layers 0 is invalid")
    add("hulm-scratch-vocab-zero", "--scratch_vocab_size 0", lambda f: [*TINY, *out(f), "--scratch_vocab_size", "0"],
        expect="--scratch_vocab_size 0 is invalid")
    add("hulm-detach-negative", "--detach_state_every -3", lambda f: [*TINY, *out(f), "--detach_state_every", "-3"],
        expect="--detach_state_every -3 is invalid")
    add("hulm-quantization", "--quantization fp3", lambda f: [*TINY, *out(f), "--quantization", "fp3"],
        expect="--quantization 'fp3' is unknown")
    add("hulm-quantization-scratch", "--quantization nf4 without a base",
        lambda f: [*TINY, *out(f), "--quantization", "nf4"], expect="--quantization needs --base_model")
    add("hulm-compute-dtype", "--compute_dtype float8", lambda f: [*TINY, *out(f), "--compute_dtype", "float8"],
        expect="--compute_dtype 'float8' is unknown")
    add("hulm-lora-r-zero", "--lora_r 0", lambda f: [*TINY, *out(f), "--lora_r", "0"], expect="--lora_r 0 is invalid")
    add("hulm-lora-dropout", "--lora_dropout 1.5", lambda f: [*TINY, *out(f), "--lora_dropout", "1.5"],
        expect="--lora_dropout 1.5 is invalid")
    add("hulm-state-lr-scale", "--state_lr_scale 0", lambda f: [*TINY, *out(f), "--state_lr_scale", "0"],
        expect="--state_lr_scale 0.0 is invalid")
    add("hulm-variants", "--variants flat", lambda f: [*TINY[:-4], *out(f), "--variants", "flat"],
        expect="--variants 'flat'")
    add("hulm-variants-empty", "--variants ','", lambda f: [*TINY[:-4], *out(f), "--variants", ","],
        expect="--variants")
    add("hulm-blocks-per-step", "--blocks_per_step -2", lambda f: [*TINY, *out(f), "--blocks_per_step", "-2"],
        expect="--blocks_per_step -2 is invalid")
    add("hulm-author-pool", "--author_pool -1", lambda f: [*TINY, *out(f), "--author_pool", "-1"],
        expect="--author_pool -1 is invalid")
    add("hulm-author-draw", "--author_draw sideways", lambda f: [*TINY, *out(f), "--author_draw", "sideways"],
        expect="--author_draw 'sideways' is unknown")
    add("hulm-block-size-one", "--block_size 1", lambda f: [*TINY[:-6], *out(f), "--block_size", "1"],
        expect="--block_size 1 is invalid")
    add("hulm-max-blocks-zero", "--max_blocks 0", lambda f: [*TINY[:-4], *out(f), "--max_blocks", "0"],
        expect="--max_blocks 0 is invalid")
    add("hulm-eval-max-blocks-zero", "--eval_max_blocks 0", lambda f: [*TINY, *out(f), "--eval_max_blocks", "0"],
        expect="--eval_max_blocks 0 is invalid")
    add("hulm-max-eval-authors-zero", "--max_eval_authors 0", lambda f: [*TINY, *out(f), "--max_eval_authors", "0"],
        expect="--max_eval_authors 0 is invalid")
    add("hulm-validation-fraction", "--validation_fraction 1.5",
        lambda f: [*TINY, *out(f), "--validation_fraction", "1.5"], expect="--validation_fraction 1.5")
    add("hulm-synthetic-authors-one", "--synthetic_authors 1", lambda f: [*TINY[2:], *out(f), "--synthetic_authors",
                                                                          "1"], expect="--synthetic_authors 1")
    add("hulm-synthetic-messages-zero", "--synthetic_messages 0",
        lambda f: [*TINY[:2], *TINY[4:], *out(f), "--synthetic_messages", "0"], expect="--synthetic_messages 0")
    add("hulm-workers-zero", "--preprocessing_num_workers 0",
        lambda f: [*TINY, *out(f), "--preprocessing_num_workers", "0"], expect="--preprocessing_num_workers 0")

    # -- YAML run files
    add("hulm-yaml-missing", "a run file that does not exist", lambda f: [str(f / "nope.yaml")],
        expect="no such run file")
    add("hulm-yaml-list", "a run file holding a list", lambda f: [yaml_file(f, "- a\n- b\n")],
        expect="expected a mapping")
    add("hulm-yaml-broken", "a run file that is not YAML", lambda f: [yaml_file(f, "a: [1, 2\nb: }\n")],
        expect="not a readable YAML file")
    add("hulm-yaml-unknown-key", "a run file with an unknown key", lambda f: [yaml_file(f, "colour: blue\n")],
        expect="colour")
    add("hulm-yaml-bad-value", "a run file with --state_mechanism bogus",
        lambda f: [yaml_file(f, "state_mechanism: bogus\n")], expect="--state_mechanism 'bogus' is unknown")

    # -- model sources
    add("hulm-base-missing", "--base_model /nonexistent", lambda f: ["--base_model", "/nonexistent", *TINY, *out(f)],
        expect="--base_model /nonexistent: no such folder")
    add("hulm-base-bad-id", "--base_model 'not a repo id!'", lambda f: ["--base_model", "not a repo id!", *TINY,
                                                                         *out(f)], expect="--base_model")
    add("hulm-base-gpt2", "--base_model: a GPT-2 checkpoint", lambda f: ["--base_model", str(_gpt2(f)), *TINY, *out(f)],
        expect="HuLlama needs a Llama-architecture base")
    add("hulm-base-no-config", "--base_model: a folder without config.json",
        lambda f: ["--base_model", str(_empty_dir(f)), *TINY, *out(f)], expect="no config.json in this folder")
    add("hulm-base-block-too-long", "--block_size 128 on a base with 64 positions",
        lambda f: ["--base_model", str(tiny_llama(f)), *TINY[:-6], "--block_size", "128", *out(f)],
        expect="exceeds the base's max_position_embeddings")
    add("hulm-adapter-missing", "--adapter /nonexistent", lambda f: ["--adapter", "/nonexistent", *TINY, *out(f)],
        expect="--adapter /nonexistent: no such folder")
    add("hulm-adapter-not-adapter", "--adapter: a folder without adapter_config.json",
        lambda f: ["--adapter", str(_empty_dir(f)), *TINY, *out(f)], expect="no adapter_config.json")
    add("hulm-tokenizer-missing", "--tokenizer ./nope", lambda f: ["--tokenizer", "./nope", *TINY, *out(f)],
        expect="--tokenizer ./nope: no such folder")
    add("hulm-tokenizer-empty", "--tokenizer: an empty folder", lambda f: ["--tokenizer", str(_empty_dir(f)),
                                                                         *TINY, *out(f)], expect="tokenizer")

    # -- resume
    add("hulm-resume-missing", "--resume_from_checkpoint /nonexistent",
        lambda f: [*TINY, *out(f), "--resume_from_checkpoint", "/nonexistent"], expect="no such checkpoint folder")
    add("hulm-resume-changed-lr", "resume with another --learning_rate than the run was started with",
        lambda f: [*finished_run(f), "--resume_from_checkpoint", "true", "--learning_rate", "0.05"],
        expect="other arguments than it was started with")
    add("hulm-resume-changed-block", "resume with another --block_size",
        lambda f: [*finished_run(f)[:-6], "--block_size", "16", *out(f), "--resume_from_checkpoint", "true"],
        expect="other arguments than it was started with")

    # -- Hub settings, checked before training
    add("hulm-push-no-id", "--push_to_hub without --hub_model_id", lambda f: [*TINY, *out(f), "--push_to_hub"],
        expect="--push_to_hub needs --hub_model_id")
    add("hulm-push-bad-id", "--hub_model_id with spaces",
        lambda f: [*TINY, *out(f), "--push_to_hub", "--hub_model_id", "my model"], expect="not a valid repo id")
    add("hulm-push-no-token", "--push_to_hub with no token",
        lambda f: _no_token([*TINY, *out(f), "--push_to_hub", "--hub_model_id", "me/model"]),
        expect="needs a Hugging Face token")
    add("hulm-push-offline", "--push_to_hub with HF_HUB_OFFLINE=1",
        lambda f: _offline([*TINY, *out(f), "--push_to_hub", "--hub_model_id", "me/model"]),
        expect="HF_HUB_OFFLINE")
    add("hulm-hub-private-repo", "--hub_private_repo false (TrainingArguments' flag, not used here)",
        lambda f: [*TINY, *out(f), "--hub_private_repo", "false"], expect="use --hub_private")
    add("hulm-hub-strategy", "--hub_strategy every_save (not used here)",
        lambda f: [*TINY, *out(f), "--hub_strategy", "every_save"], expect="--hub_strategy is not used")

    # -- corpus files
    add("hulm-train-missing", "--train_file nope.jsonl", lambda f: ["--train_file", str(f / "nope.jsonl"), *FILE_TINY,
                                                                     *out(f)], expect="no such file")
    add("hulm-train-twice", "the same --train_file twice (a,a)",
        lambda f: ["--train_file", f"{corpus(f)},{corpus(f)}", *FILE_TINY, *out(f)], expect="more than once")
    add("hulm-validation-is-train", "--validation_file equal to --train_file",
        lambda f: ["--train_file", corpus(f), "--validation_file", corpus(f), *FILE_TINY, *out(f)],
        expect="is also a --train_file")
    add("hulm-validation-overlaps", "a --validation_file sharing authors with --train_file",
        lambda f: ["--train_file", corpus(f), "--validation_file", corpus(f, "dev.jsonl", authors=4), *FILE_TINY,
                   *out(f)], expect="also training authors")
    add("hulm-folder-mixed", "a folder mixing .jsonl and .csv files (all read)",
        lambda f: ["--train_file", _mixed_folder(f), *FILE_TINY, *out(f)], handled="every corpus file of the "
        "folder is read", expect="a.jsonl + ")
    add("hulm-folder-other-file", "a folder holding a README next to the corpus",
        lambda f: ["--train_file", _folder_with_readme(f), *FILE_TINY, *out(f)], expect="not a corpus file")
    add("hulm-folder-malformed", "a folder holding a malformed .jsonl",
        lambda f: ["--train_file", _folder_with_broken_file(f), *FILE_TINY, *out(f)], expect="broken.jsonl")
    add("hulm-folder-empty", "an empty folder", lambda f: ["--train_file", str(_empty_dir(f)), *FILE_TINY, *out(f)],
        expect="holds no corpus file")
    add("hulm-empty-file", "an empty .jsonl", lambda f: ["--train_file", str(write_jsonl(f / "e.jsonl", [])),
                                                          *FILE_TINY, *out(f)], expect="e.jsonl")
    add("hulm-unknown-suffix", "a .txt corpus", lambda f: ["--train_file", _text_file(f, "c.txt", "hello"),
                                                            *FILE_TINY, *out(f)], expect="unknown file type")
    add("hulm-not-json", "a .jsonl whose lines are not JSON",
        lambda f: ["--train_file", _text_file(f, "c.jsonl", "user_id,message\n1,hi\n"), *FILE_TINY, *out(f)],
        expect="c.jsonl")
    add("hulm-not-utf8", "a .csv in Latin-1",
        lambda f: ["--train_file", _latin1_csv(f), *FILE_TINY, *out(f)], expect="UTF-8")
    add("hulm-csv-ragged", "a .csv with a row of too many fields",
        lambda f: ["--train_file", _text_file(f, "c.csv", "user_id,message\n1,hi\n2,a,b\n"), *FILE_TINY, *out(f)],
        expect="fields where the header has")
    add("hulm-parquet-broken", "a .parquet that is not Parquet",
        lambda f: ["--train_file", _text_file(f, "c.parquet", "not parquet"), *FILE_TINY, *out(f)],
        expect="not a readable Parquet file")
    add("hulm-missing-user-column", "a corpus without the author column",
        lambda f: ["--train_file", str(write_jsonl(f / "c.jsonl", [{"message": "hi"}] * 20)), *FILE_TINY, *out(f)],
        expect="user_id")
    add("hulm-wrong-message-column", "--message_column text on a corpus whose column is 'message'",
        lambda f: ["--train_file", corpus(f), "--message_column", "text", *FILE_TINY, *out(f)], expect="text")
    add("hulm-bad-timestamp", "a timestamp that is not a time",
        lambda f: ["--train_file", str(write_jsonl(f / "c.jsonl", [{**r, "timestamp": "yesterday"} for r in
                                                                    corpus_rows()])), *FILE_TINY, *out(f)],
        expect="cannot read 'yesterday' as a time")
    add("hulm-mixed-time-zones", "naive and zone-aware timestamps in one corpus",
        lambda f: ["--train_file", _mixed_zones(f), *FILE_TINY, *out(f)], handled="a note in the data report",
        expect="have no time zone and were read as UTC")
    add("hulm-duplicate-message-ids", "two messages with the same message id",
        lambda f: ["--train_file", str(write_jsonl(f / "c.jsonl", corpus_rows() + corpus_rows(1, 1))), *FILE_TINY,
                   *out(f)], expect="duplicate message id")
    add("hulm-one-author", "a corpus of one author (no held-out author possible)",
        lambda f: ["--train_file", corpus(f, authors=1, messages=20), *FILE_TINY, *out(f)], expect="author")
    add("hulm-heldout-rounds-to-none", "3 authors with --validation_fraction 0.1 (rounds to no held-out author)",
        lambda f: ["--train_file", corpus(f, authors=3), "--validation_fraction", "0.1", *FILE_TINY, *out(f)],
        expect="no held-out author")

    # -- HuFT
    add("huft-no-labels", "a corpus without labels", lambda f: ["--train_file", corpus(f), *FILE_TINY[:-4], *out(f)],
        entry="huft", expect="label")
    add("huft-task", "--task sentence", lambda f: ["--task", "sentence", *TINY[:-4], *out(f)], entry="huft",
        expect="--task 'sentence'")
    add("huft-author-context", "--author_context sideways", lambda f: ["--author_context", "sideways", *TINY[:-4],
                                                                        *out(f)], entry="huft",
        expect="--author_context 'sideways'")
    add("huft-label-aliases", "--label_aliases french", lambda f: ["--label_aliases", "french", *TINY[:-4], *out(f)],
        entry="huft", expect="--label_aliases 'french'")
    add("huft-patience", "--early_stopping_patience -1", lambda f: ["--early_stopping_patience", "-1", *TINY[:-4],
                                                                     *out(f)], entry="huft",
        expect="--early_stopping_patience")
    add("huft-task-name", "--task_name stance_mars", lambda f: ["--task_name", "stance_mars", *TINY[:-4], *out(f)],
        entry="huft", expect="stance_mars")
    add("huft-abbrev", "--author_con none (an abbreviated flag)", lambda f: ["--author_con", "none", *TINY[:-4],
                                                                             *out(f)], entry="huft",
        expect="--author_con")
    add("huft-batch-zero", "--per_device_train_batch_size 0", lambda f: [*TINY[:-4], "--per_device_train_batch_size",
                                                                         "0", *out(f)], entry="huft",
        expect="--per_device_train_batch_size 0")
    add("huft-output-is-file", "--output_dir naming a file",
        lambda f: [*TINY[:-4], "--output_dir", str(write_jsonl(f / "file.jsonl", []))], entry="huft",
        expect="is a file")

    # -- evaluation
    model_dir = _trained_model
    add("ppl-model-missing", "--model /nonexistent", lambda f: ["--model", "/nonexistent"], entry="perplexity",
        expect="/nonexistent")
    add("ppl-model-no-config", "--model: a folder without config.json",
        lambda f: ["--model", str(_empty_dir(f))], entry="perplexity", expect="no config.json")
    add("ppl-abbrev", "--batch 8 (an abbreviated flag)", lambda f: ["--model", model_dir(f), "--batch", "8"],
        entry="perplexity", expect="--batch")
    add("ppl-batch-zero", "--batch_size 0", lambda f: ["--model", model_dir(f), "--batch_size", "0"],
        entry="perplexity", expect="--batch_size 0 is invalid")
    add("ppl-blocks-per-forward-zero", "--blocks_per_forward 0",
        lambda f: ["--model", model_dir(f), "--blocks_per_forward", "0"], entry="perplexity",
        expect="--blocks_per_forward 0 is invalid")
    add("ppl-bootstrap-zero", "--bootstrap_samples 0", lambda f: ["--model", model_dir(f), "--bootstrap_samples",
                                                                   "0"], entry="perplexity",
        expect="--bootstrap_samples 0 is invalid")
    add("ppl-max-blocks-zero", "--max_blocks 0", lambda f: ["--model", model_dir(f), "--max_blocks", "0"],
        entry="perplexity", expect="--max_blocks 0 is invalid")
    add("ppl-block-size-huge", "--block_size 100000", lambda f: ["--model", model_dir(f), "--block_size", "100000"],
        entry="perplexity", expect="--block_size 100000")
    add("ppl-buckets", "--history_buckets a,b", lambda f: ["--model", model_dir(f), "--history_buckets", "a,b"],
        entry="perplexity", expect="--history_buckets")
    add("ppl-data-missing", "--data nope.jsonl", lambda f: ["--model", model_dir(f), "--data", str(f / "nope.jsonl")],
        entry="perplexity", expect="nope.jsonl")
    add("ppl-data-broken", "--data: a malformed .jsonl",
        lambda f: ["--model", model_dir(f), "--data", _text_file(f, "d.jsonl", "{not json\n")], entry="perplexity",
        expect="d.jsonl")
    add("ppl-variant", "--variants flat", lambda f: ["--model", model_dir(f), "--variants", "flat"],
        entry="perplexity", expect="flat")
    add("ppl-adapter-missing", "--adapter /nonexistent", lambda f: ["--model", model_dir(f), "--adapter",
                                                                     "/nonexistent"], entry="perplexity",
        expect="/nonexistent")
    add("ppl-output-is-file", "--output_dir naming a file",
        lambda f: ["--model", model_dir(f), "--output_dir", str(write_jsonl(f / "x.jsonl", []))],
        entry="perplexity", expect="is a file")
    add("probe-task", "--tasks stance_mars", lambda f: ["--model", model_dir(f), "--tasks", "stance_mars"],
        entry="probe", expect="stance_mars")
    add("probe-names", "two --name for one --model", lambda f: ["--model", model_dir(f), "--name", "a", "--name",
                                                                 "b"], entry="probe", expect="--name")
    add("probe-batch-zero", "--batch_size 0", lambda f: ["--model", model_dir(f), "--batch_size", "0"],
        entry="probe", expect="--batch_size 0 is invalid")
    add("probe-abbrev", "--block 64 (an abbreviated flag)", lambda f: ["--model", model_dir(f), "--block", "64"],
        entry="probe", expect="--block")
    add("probe-model-missing", "--model /nonexistent", lambda f: ["--model", "/nonexistent"], entry="probe",
        expect="/nonexistent")
    add("probe-one-fold", "--folds 1", lambda f: ["--model", model_dir(f), "--folds", "1"], entry="probe",
        expect="--folds 1 is invalid")
    add("probe-reference", "--reference naming no model", lambda f: ["--model", model_dir(f), "--reference", "base"],
        entry="probe", expect="--reference 'base' is not one of the models")
    add("study-untrained-run", "a run folder with no held-out scores", lambda f: [str(_empty_dir(f))], entry="study",
        expect="held_out_scores.npz")
    add("study-abbrev", "--bootstrap 10 (an abbreviated flag)", lambda f: [str(_empty_dir(f)), "--bootstrap", "10"],
        entry="study", expect="--bootstrap")

    # -- found by trying the package as a new user would (2026-11-30)
    add("hulm-dashed-learning-rate", "--learning-rate 0.01 (the dashed spelling --help shows) from scratch",
        lambda f: [*TINY, *out(f), "--learning-rate", "0.01"], expect="held-out perplexity",
        handled="runs at 0.01, as recorded", check=lambda f: _recorded(f, "learning_rate") == 0.01)
    add("hulm-dashed-hub-strategy", "--hub-strategy every_save (dashed)",
        lambda f: [*TINY, *out(f), "--hub-strategy", "every_save"], expect="--hub_strategy is not used")
    add("hulm-yaml-quoted-false", "a run file with overwrite_output_dir: \"false\" on a finished run",
        lambda f: [_yaml_run(f, finished_run(f), 'overwrite_output_dir: "false"\n')], expect="holds an earlier run")
    add("hulm-yaml-lr-text", "a run file with learning_rate: 1e-3 (YAML reads it as text)",
        lambda f: [_yaml_run(f, [*TINY, *out(f)], "learning_rate: 1e-3\n")], expect="held-out perplexity",
        handled="runs at 0.001, as recorded", check=lambda f: _recorded(f, "learning_rate") == 0.001)
    add("hulm-yaml-variants-list", "a run file with variants: [recurrent] (a YAML list)",
        lambda f: [_yaml_run(f, [*TINY[:-4], *TINY[-2:], *out(f)], "variants: [recurrent]\n")],
        expect="held-out perplexity", handled="the list is read as the comma-separated flag")
    add("hulm-yaml-int-as-float", "a run file with scratch_layers: 2.5", lambda f: [_yaml_run(f, [*TINY[:-8],
                                                                                             *TINY[-6:], *out(f)],
                                                                                             "scratch_layers: 2.5\n")],
        expect="invalid int value")
    add("hulm-yaml-epochs-inf", "a run file with num_train_epochs: -.inf",
        lambda f: [_yaml_run(f, [*TINY[:4], *TINY[6:], *out(f)], "num_train_epochs: -.inf\n")],
        expect="--num_train_epochs -inf is invalid")
    add("hulm-run-file-and-flag", "a run file and a flag", lambda f: [yaml_file(f, "seed: 1\n"),
                                                                      "--overwrite_output_dir"],
        expect="takes no other arguments")
    add("hulm-lr-nan", "--learning_rate nan", lambda f: [*TINY, *out(f), "--learning_rate", "nan"],
        expect="--learning_rate nan is invalid")
    add("hulm-epochs-inf", "--num_train_epochs inf", lambda f: [*TINY[:4], *TINY[6:], *out(f), "--num_train_epochs",
                                                                "inf"], expect="--num_train_epochs inf is invalid")
    add("hulm-scratch-vocab-tiny", "--scratch_vocab_size 5", lambda f: [*TINY, *out(f), "--scratch_vocab_size", "5"],
        expect="--scratch_vocab_size 5 is invalid")
    add("hulm-output-empty", "--output_dir ''", lambda f: [*TINY, "--output_dir", ""], expect="--output_dir is empty")
    add("hulm-output-under-file", "--output_dir inside a file's path (FILE/sub)",
        lambda f: [*TINY, "--output_dir", str(Path(write_jsonl(f / "file.jsonl", [])) / "sub")], expect="is a file")
    add("hulm-variants-twice", "--variants recurrent,recurrent", lambda f: [*TINY[:-4], *TINY[-2:], *out(f),
                                                                            "--variants", "recurrent,recurrent"],
        expect="names a variant twice")
    add("hulm-resume-nothing", "--resume_from_checkpoint true in a folder with no run",
        lambda f: [*TINY, *out(f), "--resume_from_checkpoint", "true"], expect="holds no run to resume")
    add("hulm-resume-other-run", "--resume_from_checkpoint: another run's checkpoint, with another model size",
        lambda f: [*TINY[:-10], *TINY[-8:], "--scratch_hidden_size", "32", "--output_dir", str(f / "other"),
                   "--resume_from_checkpoint", _a_checkpoint(f)], expect="other arguments than it was started with")
    add("hulm-dropped-rows-reported", "a corpus with a missing and a non-text message",
        lambda f: ["--train_file", str(write_jsonl(f / "c.jsonl", corpus_rows() + [
            {"user_id": "u0", "message": None}, {"user_id": "u1", "message": 5}])), *FILE_TINY, *out(f)],
        expect="dropped 2 messages", handled="the training run's data report counts them")
    add("hulm-time-out-of-range", "a timestamp in the year 9999",
        lambda f: ["--train_file", str(write_jsonl(f / "c.jsonl", [{**r, "timestamp": "9999-12-31 23:59:59"}
                                                                    for r in corpus_rows()])), *FILE_TINY, *out(f)],
        expect="outside the years 1677 to 2262")
    add("hulm-csv-duplicate-header", "a .csv naming the column 'message' twice",
        lambda f: ["--train_file", _text_file(f, "c.csv", "user_id,message,message\n1,a,b\n"), *FILE_TINY,
                   *out(f)], expect="more than once")
    add("hulm-train-url", "--train_file https://example.invalid/a.jsonl",
        lambda f: ["--train_file", "https://example.invalid/a.jsonl", *FILE_TINY, *out(f)],
        expect="https://example.invalid/a.jsonl: no such file")
    add("huft-one-class", "labels of one class only", lambda f: ["--train_file", _one_class(f), *FILE_TINY[:-4],
                                                                  *out(f)], entry="huft", expect="one class only")
    add("huft-eval-never", "--eval_strategy no (the best checkpoint is chosen on evaluations)",
        lambda f: [*TINY[:-4], "--eval_strategy", "no", *out(f)], entry="huft", expect="load_best_model_at_end")
    add("ppl-context-window-huge", "--context_window 100000",
        lambda f: ["--model", model_dir(f), "--context_window", "100000"], entry="perplexity",
        expect="--context_window 100000 must be at most")
    add("ppl-device-unknown", "--device tpu", lambda f: ["--model", model_dir(f), "--device", "tpu"],
        entry="perplexity", expect="--device 'tpu'")
    add("ppl-seed-negative", "--seed -1", lambda f: ["--model", model_dir(f), "--seed", "-1"], entry="perplexity",
        expect="--seed -1 is invalid")
    add("ppl-output-under-file", "--output_dir inside a file's path",
        lambda f: ["--model", model_dir(f), "--output_dir", str(Path(write_jsonl(f / "x.jsonl", [])) / "sub")],
        entry="perplexity", expect="is a file")

    # -- the Python API
    for id_, what, expect in (
        ("api-int-state", "an integer author_state", "author_state must be a float tensor"),
        ("api-state-shape", "an author_state of the wrong size", "author_state must be [batch=2"),
        ("api-zero-mask", "an all-zero attention mask", "no real token in any block"),
        ("api-mask-shape", "an attention mask of another shape than the input", "attention_mask must have"),
        ("api-labels-shape", "labels of another shape than the input", "labels must have the input's shape"),
        ("api-ids-4d", "input_ids with four axes", "input_ids must be [batch, tokens]"),
        ("api-no-input", "neither input_ids nor inputs_embeds", "exactly one of input_ids or inputs_embeds"),
        ("api-cache-blocks", "a cache with several blocks", "single block"),
        ("api-embeds-size", "inputs_embeds of the wrong hidden size", "inputs_embeds must be"),
        ("api-position-shape", "position_ids of another shape than the input", "position_ids must have"),
    ):
        add(id_, what, lambda f, id_=id_: None, entry=f"api:{id_}", expect=expect)
    return c


def _recorded(folder: Path, name: str):
    """A TrainingArguments value as the run recorded it (run_args.json)."""
    return json.loads((folder / "out" / "run_args.json").read_text())["TrainingArguments"][name]


def _yaml_run(folder: Path, argv: list[str], extra: str) -> str:
    """A run file holding `argv` (flags and values) and `extra` YAML lines."""
    import yaml

    values, i = {}, 0
    while i < len(argv):
        name = argv[i][2:]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values[name], i = argv[i + 1], i + 2
        else:
            values[name], i = True, i + 1
    text = yaml.safe_dump(values) + extra
    path = folder / "run.yaml"
    path.write_text(text)
    return str(path)


def _a_checkpoint(folder: Path) -> str:
    """A checkpoint of a finished small run (hidden size 64)."""
    finished_run(folder)
    return str(next((folder / "out" / "recurrent").glob("checkpoint-*")))


def _one_class(folder: Path) -> str:
    rows = corpus_rows(label=True)
    return str(write_jsonl(folder / "c.jsonl", [{**r, "label": "favor"} for r in rows]))


def _gpt2(folder: Path) -> Path:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(folder / "gpt2")
    return folder / "gpt2"


def _empty_dir(folder: Path) -> Path:
    path = folder / "empty"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text_file(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def _latin1_csv(folder: Path) -> str:
    (folder / "c.csv").write_bytes("user_id,message\n1,caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    return str(folder / "c.csv")


def _mixed_folder(folder: Path) -> str:
    rows = corpus_rows()
    write_jsonl(folder / "corpus" / "a.jsonl", rows[: len(rows) // 2])
    write_csv(folder / "corpus" / "b.csv", rows[len(rows) // 2:])
    return str(folder / "corpus")


def _folder_with_readme(folder: Path) -> str:
    write_jsonl(folder / "corpus" / "train.jsonl", corpus_rows())
    (folder / "corpus" / "README.md").write_text("notes")
    return str(folder / "corpus")


def _folder_with_broken_file(folder: Path) -> str:
    write_jsonl(folder / "corpus" / "train.jsonl", corpus_rows())
    (folder / "corpus" / "broken.jsonl").write_text('{"user_id": 1, "message": "a"}\n{oops\n')
    return str(folder / "corpus")


def _mixed_zones(folder: Path) -> str:
    rows = corpus_rows()
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["timestamp"] += "+08:00"
    return str(write_jsonl(folder / "c.jsonl", rows))


def _no_token(argv: list[str]) -> list[str]:
    import os

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)
    os.environ["HF_TOKEN_PATH"] = "/nonexistent/token"
    return argv


def _offline(argv: list[str]) -> list[str]:
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    return argv


_MODEL_CACHE: dict[str, str] = {}


def _trained_model(folder: Path) -> str:
    """A small HuLlama saved as a training output (built once per process)."""
    if "model" not in _MODEL_CACHE:
        import torch

        from configuration_hullama import HuLlamaConfig
        from hullama.data.tokenizer import train_byte_bpe
        from modeling_hullama import HuLlamaForCausalLM

        path = Path(tempfile.mkdtemp(prefix="hullama-bad-inputs-")) / "model"
        tokenizer = train_byte_bpe((r["message"] for r in corpus_rows(40, 10)), vocab_size=300)
        torch.manual_seed(0)
        config = HuLlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                               block_size=32, pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        HuLlamaForCausalLM(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        _MODEL_CACHE["model"] = str(path)
    return _MODEL_CACHE["model"]


def _api(case_id: str) -> None:
    import torch

    from configuration_hullama import HuLlamaConfig
    from modeling_hullama import CACHE_NAME, HuLlamaForCausalLM

    config = HuLlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = HuLlamaForCausalLM(config).eval()
    ids = torch.randint(2, 300, (2, 3, 8))
    calls = {
        "api-int-state": lambda: model(ids, author_state=torch.zeros(2, 32, dtype=torch.long)),
        "api-state-shape": lambda: model(ids, author_state=torch.zeros(2, 16)),
        "api-zero-mask": lambda: model(ids, attention_mask=torch.zeros_like(ids)),
        "api-mask-shape": lambda: model(ids, attention_mask=torch.ones(2, 8, dtype=torch.long)),
        "api-labels-shape": lambda: model(ids, labels=ids[:, 0]),
        "api-ids-4d": lambda: model(ids.unsqueeze(0)),
        "api-no-input": lambda: model(),
        "api-cache-blocks": lambda: model(ids, **{CACHE_NAME: _cache(config)}),
        "api-embeds-size": lambda: model(inputs_embeds=torch.zeros(2, 8, 16)),
        "api-position-shape": lambda: model(ids, position_ids=torch.arange(5).expand(2, 5)),
    }
    with torch.no_grad():
        calls[case_id]()


def _cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


def _entry(name: str) -> Callable[[list[str]], object]:
    if name == "hulm":
        from hullama.train.hulm import main
    elif name == "huft":
        from hullama.train.huft import main
    elif name == "perplexity":
        from hullama.eval.perplexity import main
    elif name == "probe":
        from hullama.eval.probe import main
    else:  # a script of the checkout, not of the package: loaded from its file
        import importlib.util

        spec = importlib.util.spec_from_file_location("study_report", ROOT / "benchmarks" / "study_report.py")
        study_report = sys.modules.setdefault("study_report", importlib.util.module_from_spec(spec))
        spec.loader.exec_module(study_report)  # registered first: dataclasses look their module up
        main = study_report.main
    return main


def run_case(case: Case, folder: Path) -> Outcome:
    """Run one case in `folder` (its working directory too); what it printed and how it ended."""
    import os

    stderr, stdout = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    start, code, escaped = time.perf_counter(), 0, False
    os.chdir(folder)
    try:
        argv = case.run(folder)
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                if case.entry.startswith("api:"):
                    try:
                        _api(case.entry[4:])
                    except ValueError as error:  # the API's user errors: one ValueError, printed as the CLI would
                        print(f"ValueError: {error}", file=sys.stderr)
                        code = 2
                else:
                    _entry(case.entry)(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # noqa: BLE001 - a traceback the user would see
                traceback.print_exc(file=stderr)
                code, escaped = 1, True
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = False
    lines = [line for line in stderr.getvalue().splitlines() if line.strip() and not _noise(line)]
    checked = bool(case.check and code == 0 and case.check(folder))
    return Outcome(code, lines, stdout.getvalue(), escaped, time.perf_counter() - start,
                   files={MARKER: (folder / MARKER).exists(), "check": checked})


def _noise(line: str) -> bool:
    """Library chatter on stderr that is not the script's answer (progress bars, warnings of other packages)."""
    return any(part in line for part in ("it/s]", "s/it]", "examples/s]", "%|", "Warning", "warn(", "kernels",
                                         "gemm_4bit", "warnings.warn"))


def verdict(case: Case, outcome: Outcome) -> tuple[bool, str]:
    """(as expected, what the user gets, in a few words)."""
    if outcome.files.get(MARKER) != case.code_runs:
        return False, "the folder's code ran" if outcome.files.get(MARKER) else "the code did not run"
    if case.handled:
        ok = outcome.exit_code == 0 and case.expect in outcome.stdout + "\n".join(outcome.stderr)
        ok = ok and (case.check is None or outcome.files.get("check", False))
        return ok, f"runs; {case.handled}" if ok else f"exit {outcome.exit_code}: {(outcome.stderr or [''])[-1]}"
    last = outcome.stderr[-1] if outcome.stderr else ""
    ok = outcome.exit_code == 2 and not outcome.traceback and len(outcome.stderr) == 1 and case.expect in last
    return ok, last if not outcome.traceback else f"traceback: {last}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--only", nargs="+", help="case ids or id prefixes to run (printed; nothing written)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "bad_inputs.md"), help="the table to write")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(c.id.startswith(p) for p in args.only)]
    rows, failures = [], 0
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="hullama-bad-input-") as folder:
            outcome = run_case(case, Path(folder).resolve())
        ok, answer = verdict(case, outcome)
        failures += not ok
        answer = answer.replace(folder, "<tmp>").replace(str(Path(folder).resolve()), "<tmp>")
        print(f"{'ok ' if ok else 'BAD'} {case.id:34} exit {outcome.exit_code}  {answer[:150]}")
        rows.append((case, outcome, ok, answer))
    if not args.only:
        write_table(Path(args.output), rows)
    print(f"{len(cases) - failures} of {len(cases)} as expected")
    return 1 if failures else 0


def write_table(path: Path, rows) -> None:
    import datetime

    lines = [
        f"# Bad inputs and what they get ({datetime.date.today().isoformat()})",
        "",
        f"{len(rows)} bad or hostile inputs, each run by `python scripts/bad_inputs.py` (which rewrites this page) and "
        "checked by `tests/test_bad_inputs.py`. Expected: one line naming the input and exit status 2 (the Python API: "
        "one `ValueError`), or the handling the row names. Temporary folders show as `<tmp>`.",
        "",
        f"As expected: {sum(ok for *_, ok, _ in rows)} of {len(rows)}.",
        "",
        "| # | entry point | input | exit | what the user gets |",
        "|---|---|---|---|---|",
    ]
    for i, (case, outcome, ok, answer) in enumerate(rows, 1):
        entry = "Python API" if case.entry.startswith("api:") else case.entry
        cell = answer.replace("|", "\\|")
        lines.append(f"| {i} | {entry} | {case.what.replace('|', chr(92) + '|')} | {outcome.exit_code} | "
                     f"{'' if ok else '**not as expected:** '}{cell} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


CASES = _cases()

if __name__ == "__main__":
    raise SystemExit(main())
