"""The author-state mechanism study: does the state carry information? Every mechanism, the same budget.

Trains, one run at a time and each from the same seed, data and schedule (train/hulm.py, `train.hulm.main`):
  none        each message alone (the ecological-fallacy baseline)
  in_context  the author's blocks alone, no state
  recurrent   one run per state mechanism (--mechanisms), x each --state_lr_scale, x each --layout:
                default      the config's insert_layer and extract_layer (L//2 and L//2 - 1 since the default
                             changed; the first numpy study's default runs used HaRT's L/6 and L-2)
                low-extract  insert_layer = L//2, extract_layer = L//2 - 1 (extraction below insertion: the model
                             runs all blocks of a chunk in parallel)
              x each streaming setting (--author_pool, --stagger_authors, --author_draw, --learn_recurrence,
              --normalize_state_update), always passed explicitly and named in the run's folder where it is not
              the study's default (pool), or is on (-stagger, -learnrec, -normupd, -drawrem)
then loads every trained model and scores the SAME held-out authors on exactly the same predicted tokens
(eval.perplexity.score_variants; every recurrent model is also scored with its state zeroed,
`recurrent[<mechanism>]_zeroed_state`), checks the tokens are identical across all runs, and reports:
  - perplexity, overall / block 1 / blocks 2+, per mechanism x {none, in_context, recurrent, zeroed state};
  - per mechanism, on blocks 2+: recurrent - in_context and recurrent - zeroed with 95 % paired-bootstrap intervals
    over authors, the ablation cost ((zeroed - recurrent) / recurrent, %), and the issue's criterion:
    recurrent < in_context with the interval of the difference below zero, and an ablation cost >= 3 %;
  - mean |U| and injection norm at the end of training (the trainer's log) and on the held-out authors;
  - budgets (optimizer steps, epochs, tokens), wall time per run, and the machine.

    python benchmarks/study_state.py --output_dir outputs/study-state
        # numpy commits (../shared/data/commits: numpy_train.jsonl trains, numpy_test.jsonl scores),
        # query,gate,memory from scratch: hidden 256, 4 layers, block 256, 8 blocks, 6 epochs of 8 authors a step
    python benchmarks/study_state.py --data synthetic --output_dir outputs/study-state-synthetic
        # the embedded synthetic corpus, split by author (no ../shared/data needed)
    python benchmarks/study_state.py --mechanisms gate,memory --state_lr_scale 1,10 \\
        --layouts default,low-extract --output_dir outputs/study-state
        # 2 x 2 x 2 recurrent runs; the runs already in outputs/study-state are reused
    python benchmarks/study_state.py --train_file ../shared/data/commits/numpy_train.jsonl \\
        --test_file ../shared/data/commits/numpy_dev.jsonl --max_steps 600 --output_dir outputs/study-dev
    python benchmarks/study_state.py --base_model ~/models/SmolLM2-135M --learning_rate 2e-4 \\
        --state_lr_scale 10 --hulm_args="--bf16" --output_dir outputs/study-smollm2
        # a pretrained Llama with LoRA (unquantized unless --quantization nf4); the state modules train in full
    python benchmarks/study_state.py --help

On a CUDA machine training and scoring use the GPU (--device auto); `--hulm_args="..."` (with the `=`) passes
further train/hulm.py flags to every training run, e.g. --hulm_args="--bf16 --gradient_checkpointing".

Outputs (--output_dir): study.json (everything below), study.md (the tables), the tables printed; runs/<run>/ is
each run's train/hulm.py output folder (runs/<run>/<variant>/ is the model; its results.json is only a smoke
score on 2 held-out authors), runs/<run>/study_run.json the run's record, runs/<run>/study_scores.{npz,json} its
cached per-token scores; tokenizer/ (from scratch: a byte-level BPE trained once on the training authors and shared
by every run, so that all runs predict the same token ids); data/ (--data synthetic: the train / test files).

Resuming: a run whose study_run.json says finished, with the same arguments (the train/hulm.py command line, the
data files' and the tokenizer's hashes), is reused without training; its scores are reused when the scoring
settings are unchanged too. A run that was interrupted resumes from its last checkpoint (saved every --save_steps
optimizer steps and at the end). A finished run whose arguments differ stops the study with an error, unless
--retrain changed (retrain it) or --retrain all (retrain every run). So a long study can be stopped and restarted
with the same command, and extended with more mechanisms, learning-rate scales or layouts in the same folder.

Budget: every run gets the same epochs (or --max_steps), seed, learning-rate schedule and tokens per step: a
recurrent step reads --blocks_per_step blocks of each of --batch_size authors (the state carried to the author's
next step; 0: whole authors), and in_context and none steps take as many rows (blocks, or messages) as hold the
same number of tokens. All variants predict the same stream tokens of every
training author in an epoch; the report gives the steps, epochs and the tokens actually used per run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import time
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hullama.command_line import OneLineArgumentParser

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "commits"
LAYOUTS = ("default", "low-extract")
BASELINES = ("none", "in_context")
DEFAULT_POOL = 256  # train/hulm.py's --author_pool default (a test keeps them equal); other pools name their runs
ZEROED_SUFFIX = "_zeroed_state"
ABLATION_COST_PERCENT = 3.0  # the criterion: the zeroed state costs at least this much on blocks 2+
SMOKE_EVAL = ["--max_eval_authors", "2", "--eval_max_blocks", "2"]  # train/hulm.py's own scoring: a smoke check
SCORES_VERSION = 1
# train/hulm.py flags that do not change what a run learns: changing them keeps a finished run.
NOT_RESULT_FLAGS = ("--logging_steps", "--save_steps", "--save_total_limit", "--per_device_eval_batch_size",
                    "--disable_tqdm", "--resume_from_checkpoint", "--report_to", "--output_dir")


class StudyError(RuntimeError):
    """A problem the user can fix from the command line (printed as one line)."""


@dataclass(frozen=True)
class Run:
    """One training run: a train/hulm.py call with one variant."""

    name: str  # folder under runs/
    variant: str  # none | in_context | recurrent
    label: str  # the variant's name in the report, e.g. recurrent[gate]
    mechanism: str | None = None
    state_lr_scale: float = 1.0
    layout: str = "default"
    insert_layer: int | None = None
    extract_layer: int | None = None
    author_pool: int = DEFAULT_POOL
    stagger: bool = True
    learn_recurrence: bool = True
    normalize_update: bool = True
    author_draw: str = "uniform"


# ------------------------------------------------------------------------------------------------ arguments


def _csv(kind):
    def parse(text: str) -> list:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return items
    return parse


def _true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)  # argparse turns it into "invalid ... value" (one line), not a traceback
    return text.lower() == "true"


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    parser = OneLineArgumentParser(
        prog="study_state.py", description=doc[0] + "\n\n" + doc[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n" + doc[2] + "\n\n" + "\n\n".join(doc[3:]))
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=("files", "synthetic"), default="files",
                      help="files (default): --train_file / --test_file; synthetic: the embedded synthetic corpus, "
                           "split by author into train and test")
    data.add_argument("--train_file", default=str(DEFAULT_DATA / "numpy_train.jsonl"),
                      help="training authors (default: %(default)s)")
    data.add_argument("--test_file", default=str(DEFAULT_DATA / "numpy_test.jsonl"),
                      help="held-out authors, scored (default: %(default)s)")
    data.add_argument("--synthetic_authors", type=int, default=200, help="--data synthetic: authors")
    data.add_argument("--synthetic_messages", type=int, default=40, help="--data synthetic: messages per author")
    data.add_argument("--synthetic_test_fraction", type=float, default=0.15,
                      help="--data synthetic: share of the authors held out for scoring")
    data.add_argument("--max_eval_authors", type=int, help="score only the first N held-out authors")

    study = parser.add_argument_group("what is compared")
    study.add_argument("--mechanisms", type=_csv(str), default=["query", "gate", "memory"],
                       help="comma-separated state mechanisms, one recurrent run each (default: query,gate,memory)")
    study.add_argument("--state_lr_scale", type=_csv(float), default=[1.0],
                       help="comma-separated learning-rate scales of the state modules, one run each (default: 1)")
    for flag, what, suffix in (("stagger_authors", "train/hulm.py --stagger_authors", "stagger"),
                               ("learn_recurrence", "train/hulm.py --learn_recurrence", "learnrec"),
                               ("normalize_state_update", "HuLlamaConfig.normalize_state_update", "normupd")):
        study.add_argument(f"--{flag}", type=_csv(_true_or_false), default=[True],
                           help=f"comma-separated true / false ({what}), one recurrent run each (default: true; such "
                                f"a run's name ends in -{suffix})")
    study.add_argument("--author_draw", type=_csv(str), default=["uniform"],
                       help="comma-separated train/hulm.py --author_draw values (uniform, remaining), one recurrent "
                            "run each (default: uniform; a remaining run's name ends in -drawrem)")
    study.add_argument("--author_pool", type=_csv(int), default=[DEFAULT_POOL],
                       help="comma-separated streaming author pools (train/hulm.py --author_pool), one recurrent run "
                            "each (default: 256; 0: as many authors as --batch_size, each lane one author)")
    study.add_argument("--layouts", type=_csv(str), default=["default"],
                       help="comma-separated layouts, one run each: default (the config's layers) or low-extract "
                            "(insert_layer = L//2, extract_layer = L//2 - 1)")

    model = parser.add_argument_group("model (from scratch unless --base_model)")
    model.add_argument("--base_model", help="a pretrained Llama (path or id), trained with LoRA, e.g. SmolLM2")
    model.add_argument("--quantization", choices=("none", "nf4", "int8"), default="none",
                       help="--base_model only: quantization of the frozen base (default: none)")
    model.add_argument("--hidden_size", type=int, default=256, help="from scratch: hidden size")
    model.add_argument("--layers", type=int, default=4, help="from scratch: decoder layers")
    model.add_argument("--heads", type=int, default=4, help="from scratch: attention heads")
    model.add_argument("--vocab_size", type=int, default=8192, help="from scratch: byte-level BPE vocabulary")
    model.add_argument("--block_size", type=int, default=256, help="tokens per block, start token included")
    model.add_argument("--max_blocks", type=int, default=8, help="blocks kept per training author")

    train = parser.add_argument_group("training budget (the same for every run)")
    train.add_argument("--num_train_epochs", type=float, default=6.0, help="epochs over the training authors")
    train.add_argument("--max_steps", type=int, help="optimizer steps per run (overrides --num_train_epochs)")
    train.add_argument("--batch_size", type=int, default=8,
                       help="authors per step (recurrent lanes); none / in_context steps take rows holding as many "
                            "tokens as a recurrent step (train/hulm.py)")
    train.add_argument("--blocks_per_step", type=int, default=1,
                       help="recurrent schedule: blocks of each author per step, the state carried between steps "
                            "(0: whole authors per step)")
    train.add_argument("--learning_rate", type=float,
                       help="peak learning rate (default: train/hulm.py's: 2e-3 from scratch, 2e-4 with LoRA)")
    train.add_argument("--seed", type=int, default=42, help="training seed, the same for every run")
    train.add_argument("--logging_steps", type=int, default=10, help="steps between training log entries")
    train.add_argument("--save_steps", type=int, default=200,
                       help="steps between checkpoints (an interrupted run resumes from its last one)")
    train.add_argument("--hulm_args", default="",
                       help='further train/hulm.py flags for every run, one string after an =, e.g. '
                            '--hulm_args="--bf16 --warmup_steps 0.1"')

    score = parser.add_argument_group("scoring")
    score.add_argument("--eval_max_blocks", type=int,
                       help="blocks scored per held-out author (default: --max_blocks; 0: all)")
    score.add_argument("--eval_batch_size", type=int, default=4, help="authors (or rows) per scoring forward")
    score.add_argument("--blocks_per_forward", type=int, default=16, help="recurrent blocks per scoring forward")
    score.add_argument("--bootstrap_samples", type=int, default=1000, help="author resamples for the intervals")
    score.add_argument("--bootstrap_seed", type=int, default=0, help="bootstrap seed")
    score.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    score.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="dtype the trained models are loaded in for scoring")

    parser.add_argument("--output_dir", default="outputs/study-state", help="where runs and the report go")
    parser.add_argument("--runs", type=_csv(str),
                        help="comma-separated run names (as under runs/, e.g. in_context,recurrent-gate-pool0): only "
                             "these of the planned runs (the product of the lists above), plus none and in_context "
                             "when scoring")
    parser.add_argument("--train_only", action="store_true",
                        help="train the runs and stop before scoring, so that several processes (each with its own "
                             "--runs) can train one study side by side; the command without it then reuses them")
    parser.add_argument("--retrain", choices=("none", "changed", "all"), default="none",
                        help="none (default): reuse finished runs, stop if one's arguments changed; changed: retrain "
                             "runs whose arguments changed; all: retrain every run")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from configuration_hullama import STATE_MECHANISMS

    bad = [m for m in args.mechanisms if m not in STATE_MECHANISMS]
    if bad:
        parser.error(f"--mechanisms: {', '.join(bad)} unknown; choose from {', '.join(STATE_MECHANISMS)}")
    from hullama.train.schedule import AUTHOR_DRAWS

    bad = [x for x in args.author_draw if x not in AUTHOR_DRAWS]
    if bad:
        parser.error(f"--author_draw: {', '.join(bad)} unknown; choose from {', '.join(AUTHOR_DRAWS)}")
    bad = [x for x in args.layouts if x not in LAYOUTS]
    if bad:
        parser.error(f"--layouts: {', '.join(bad)} unknown; choose from {', '.join(LAYOUTS)}")
    if any(s <= 0 for s in args.state_lr_scale):
        parser.error("--state_lr_scale values must be > 0")
    if any(p < 0 for p in args.author_pool):
        parser.error("--author_pool values must be >= 0 (0: as many authors as --batch_size)")
    for name in ("hidden_size", "layers", "heads", "batch_size", "eval_batch_size", "logging_steps", "save_steps",
                 "bootstrap_samples", "synthetic_authors", "synthetic_messages", "max_blocks", "vocab_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.block_size < 2:
        parser.error("--block_size must be at least 2")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max_steps must be at least 1")
    if args.max_eval_authors is not None and args.max_eval_authors < 1:
        parser.error("--max_eval_authors must be at least 1")
    if args.eval_max_blocks is not None and args.eval_max_blocks < 0:
        parser.error("--eval_max_blocks must be >= 0 (0: all)")
    if not 0 < args.synthetic_test_fraction < 1:
        parser.error("--synthetic_test_fraction must be in (0, 1)")
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        parser.error("--device must be auto, cpu or cuda[:N]")


# ------------------------------------------------------------------------------------------------ setup


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_data(args, out: Path) -> tuple[Path, Path, str]:
    """(train file, test file, description). --data synthetic writes both under out/data/."""
    if args.data == "files":
        train, test = Path(args.train_file).resolve(), Path(args.test_file).resolve()
        for flag, path in (("--train_file", train), ("--test_file", test)):
            if not path.exists():
                raise StudyError(f"{flag} {path}: no such file (without ../shared/data, use --data synthetic)")
        return train, test, f"train {train}, test {test}"
    from hullama.data.synthetic import synthetic_corpus

    frame = synthetic_corpus(args.synthetic_authors, args.synthetic_messages, seed=args.seed)
    authors = np.array(sorted(frame["user_id"].astype(str).unique()))
    held = max(1, round(len(authors) * args.synthetic_test_fraction))
    if held >= len(authors):
        raise StudyError(f"--synthetic_authors {args.synthetic_authors} is too few to hold out {held} authors")
    held_out = set(np.random.default_rng(args.seed).permutation(authors)[:held])
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["user_id", "message_id", "timestamp", "message"]
    frame = frame[columns].assign(user_id=frame["user_id"].astype(str))
    paths = []
    for name, keep in (("train", ~frame["user_id"].isin(held_out)), ("test", frame["user_id"].isin(held_out))):
        path = folder / f"{name}.jsonl"
        text = frame[keep].to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
        if not path.is_file() or path.read_text() != text:  # unchanged files keep their hash (and the runs)
            path.write_text(text)
        paths.append(path)
    source = (f"synthetic_corpus({args.synthetic_authors} authors, {args.synthetic_messages} messages, "
              f"seed={args.seed}): {len(authors) - held} training / {held} held-out authors")
    return paths[0], paths[1], source


def shared_tokenizer(args, train_file: Path, out: Path) -> Path | None:
    """From scratch: one byte-level BPE for every run, trained on the training authors (reused when present)."""
    if args.base_model:
        return None
    folder = out / "tokenizer"
    stamp = folder / "study_tokenizer.json"
    wanted = {"train_sha256": _sha256(train_file), "vocab_size": args.vocab_size}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return folder
    from hullama.data.corpus import load_corpus
    from hullama.data.tokenizer import train_byte_bpe

    corpus = load_corpus(str(train_file), task="lm")
    tokenizer = train_byte_bpe(corpus.frame["message"].tolist(), vocab_size=args.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    stamp.write_text(json.dumps(wanted))
    return folder


def num_layers(args) -> int:
    if not args.base_model:
        return args.layers
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(args.base_model, trust_remote_code=True).num_hidden_layers


def plan_runs(args, layers: int) -> list[Run]:
    runs = [Run(name=v, variant=v, label=v) for v in BASELINES]
    for mechanism in args.mechanisms:
        for scale, layout, pool, stagger, learn, norm, draw in itertools.product(
                args.state_lr_scale, args.layouts, args.author_pool, args.stagger_authors, args.learn_recurrence,
                args.normalize_state_update, args.author_draw):
            named = ((f"lr{scale:g}", scale != 1), (layout, layout != "default"), (f"pool{pool}", pool != DEFAULT_POOL),
                     ("stagger", stagger), ("learnrec", learn), ("normupd", norm), ("drawrem", draw == "remaining"))
            parts = [mechanism] + [part for part, shown in named if shown]
            insert = extract = None
            if layout == "low-extract":
                if layers < 2:
                    raise StudyError(f"--layouts low-extract needs at least 2 layers (the model has {layers})")
                insert, extract = layers // 2, layers // 2 - 1
            runs.append(Run(name="recurrent-" + "-".join(parts), variant="recurrent",
                            label=f"recurrent[{','.join(parts)}]", mechanism=mechanism, state_lr_scale=scale,
                            layout=layout, insert_layer=insert, extract_layer=extract, author_pool=pool,
                            stagger=stagger, learn_recurrence=learn,
                            normalize_update=norm, author_draw=draw))
    return runs


def hulm_argv(args, run: Run, run_dir: Path, train_file: Path, test_file: Path, tokenizer: Path | None) -> list[str]:
    """The train/hulm.py command line of one run."""
    argv = ["--output_dir", str(run_dir), "--variants", run.variant,
            "--train_file", str(train_file), "--validation_file", str(test_file), *SMOKE_EVAL,
            "--block_size", str(args.block_size), "--max_blocks", str(args.max_blocks),
            "--per_device_train_batch_size", str(args.batch_size), "--blocks_per_step", str(args.blocks_per_step),
            "--per_device_eval_batch_size", str(args.eval_batch_size),
            "--seed", str(args.seed), "--eval_strategy", "no",
            "--save_strategy", "steps", "--save_steps", str(args.save_steps), "--save_total_limit", "1",
            "--logging_steps", str(args.logging_steps),
            "--include_num_input_tokens_seen", "true", "--report_to", "none", "--disable_tqdm", "true"]
    if (run_dir / "run_args.json").is_file():  # a run started earlier (interrupted): continue it
        argv += ["--resume_from_checkpoint", "true"]
    if args.max_steps:
        argv += ["--max_steps", str(args.max_steps)]
    else:
        argv += ["--num_train_epochs", str(args.num_train_epochs)]
    if args.learning_rate is not None:
        argv += ["--learning_rate", str(args.learning_rate)]
    if args.device == "cpu":
        argv += ["--use_cpu", "true"]
    if args.base_model:
        argv += ["--base_model", args.base_model, "--quantization", args.quantization]
    else:
        argv += ["--tokenizer", str(tokenizer), "--scratch_hidden_size", str(args.hidden_size),
                 "--scratch_layers", str(args.layers), "--scratch_heads", str(args.heads),
                 "--scratch_vocab_size", str(args.vocab_size)]
    if run.mechanism:
        argv += ["--state_mechanism", run.mechanism, "--state_lr_scale", str(run.state_lr_scale)]
    if run.variant == "recurrent":  # explicit, so that a later change of train/hulm.py's defaults reuses no run
        argv += ["--author_pool", str(run.author_pool), "--stagger_authors", str(run.stagger).lower(),
                 "--learn_recurrence", str(run.learn_recurrence).lower(),
                 "--normalize_state_update", str(run.normalize_update).lower(), "--author_draw", run.author_draw]
    if run.insert_layer is not None:
        argv += ["--insert_layer", str(run.insert_layer), "--extract_layer", str(run.extract_layer)]
    return argv + shlex.split(args.hulm_args)


# ------------------------------------------------------------------------------------------------ training


def _flags(argv: list[str]) -> dict[str, str]:
    """A command line as {flag: value} (a flag without a value maps to "")."""
    flags, name = {}, None
    for token in argv:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            flags[name] = token.split("=", 1)[1] if "=" in token else ""
        elif name is not None:
            flags[name] = f"{flags[name]} {token}".strip()
    return flags


def _fingerprint(argv: list[str], out: Path, hashes: dict[str, str]) -> dict:
    """What decides a run's result: its train/hulm.py flags (the study folder written as <out>; logging, saving
    and evaluation batch flags left out) and the hashes of its inputs."""
    root = str(out.resolve())
    flags = {k: v.replace(root, "<out>") for k, v in _flags(argv).items() if k not in NOT_RESULT_FLAGS}
    return {"flags": flags, **hashes}


def _describe_change(old: dict, new: dict) -> str:
    changed = [k for k in new if k != "flags" and old.get(k) != new[k]]
    before, after = old.get("flags", {}), new["flags"]
    for flag in sorted(set(before) | set(after)):
        if before.get(flag) != after.get(flag):
            changed.append(f"{flag}: {before.get(flag, '(unset)')} -> {after.get(flag, '(unset)')}")
    return "; ".join(changed)


def train_run(run: Run, argv: list[str], run_dir: Path, fingerprint: dict, retrain: str) -> dict:
    """Train one run with train.hulm.main, or reuse it (module docstring). Returns its record."""
    from hullama.train import hulm

    record_path = run_dir / "study_run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record is not None and (retrain == "all" or record.get("fingerprint") != fingerprint):
        if retrain == "none":
            change = _describe_change(record["fingerprint"], fingerprint)
            raise StudyError(f"{run_dir} was trained with other arguments ({change}): use another --output_dir, "
                             "or --retrain changed")
        shutil.rmtree(run_dir)
        record = None
    if record is not None and record.get("finished"):
        return {**record, "reused": True}
    resumed = record is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("study_scores.npz", "study_scores.json"):  # scores of an earlier model in this folder
        (run_dir / stale).unlink(missing_ok=True)
    record = {"run": run.name, "label": run.label, "fingerprint": fingerprint, "argv": argv, "finished": False,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record_path.write_text(json.dumps(record, indent=2))
    print(f"\n=== {run.label}: train/hulm.py {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    hulm.main(argv)
    record.update(finished=True, resumed=resumed, wall_seconds=time.perf_counter() - t0,
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), training=training_log(run_dir / run.variant))
    record_path.write_text(json.dumps(record, indent=2))
    _free_memory()
    return {**record, "reused": False}


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def training_log(model_dir: Path) -> dict:
    """Steps, epochs, tokens seen and the last logged state diagnostics, from the final checkpoint's trainer state."""
    from hullama.train.cli import last_complete_checkpoint

    checkpoint = last_complete_checkpoint(model_dir)
    if checkpoint is None:
        return {}
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    history = state.get("log_history", [])

    def last(key):
        return next((entry[key] for entry in reversed(history) if key in entry), None)

    def first(key):
        return next((entry[key] for entry in history if key in entry), None)

    return {"steps": state.get("global_step"), "epochs": state.get("epoch"), "max_steps": state.get("max_steps"),
            "train_batch_size": state.get("train_batch_size"),
            "padded_input_tokens_seen": state.get("num_input_tokens_seen") or None,
            "train_seconds": last("train_runtime"), "final_loss": last("loss"),
            "state_abs_mean": last("state_abs_mean"), "injection_norm": last("injection_norm"),
            "state_abs_mean_first_log": first("state_abs_mean"), "injection_norm_first_log": first("injection_norm")}


def training_tokens(run: Run, run_dir: Path, train_corpus, args, memo: dict) -> dict:
    """Rows, input tokens (non-padding) and predicted tokens of one epoch of this run's training data."""
    if run.variant in memo:
        return memo[run.variant]
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from hullama.data.blocks import IGNORE_INDEX, BlockConfig, build_blocks

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer also reads the folder's HuLlama config.json and warns
    try:  # the tokenizer files suffice: never run (or ask to run) the folder's remote code
        tokenizer = AutoTokenizer.from_pretrained(str(run_dir / run.variant), trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    data = build_blocks(train_corpus, tokenizer, BlockConfig(block_size=args.block_size, variant=run.variant,
                                                             task="lm", max_blocks=args.max_blocks))
    labels = data.dataset["labels"]
    if run.variant == "recurrent":
        labels = [token for blocks in labels for token in blocks]
    targets = sum(sum(1 for y in row if y != IGNORE_INDEX) for row in labels)
    memo[run.variant] = {"rows": len(data.dataset), "input_tokens": int(sum(data.dataset["length"])),
                         "predicted_tokens": int(targets)}
    return memo[run.variant]


# ------------------------------------------------------------------------------------------------ scoring


def scoring_device(args) -> str:
    from hullama.eval.features import default_device

    return default_device() if args.device == "auto" else args.device


def load_trained(model_dir: Path, args):
    """A trained run's model and tokenizer: a full HuLlama, or an adapter on its HuLlama base (peft)."""
    from hullama.eval.features import load_model

    adapter_config = model_dir / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        return load_model(base, adapter=model_dir, tokenizer=model_dir, dtype=args.dtype, device=scoring_device(args))
    return load_model(model_dir, dtype=args.dtype, device=scoring_device(args))


def heldout_diagnostics(model, tokenizer, corpus, *, block_size: int, max_blocks: int | None, batch_size: int,
                        blocks_per_forward: int | None) -> dict:
    """Mean |U| (over the states after real blocks) and injection norm (over real tokens) on the held-out authors."""
    import torch

    from hullama.data.blocks import build_blocks
    from hullama.eval.features import model_parts, recurrent_chunks

    parts = model_parts(model)
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="lm", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows, collate = data.dataset.to_list(), data.collator()
    sums = {"state_abs_mean": [0.0, 0.0], "injection_norm": [0.0, 0.0]}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = collate(rows[start : start + batch_size])
                for k0, hidden, out in recurrent_chunks(parts, batch, blocks_per_forward=blocks_per_forward):
                    mask = batch["attention_mask"][:, k0 : k0 + hidden.shape[1]]
                    # per row: its real blocks (state_abs_mean), its real tokens (injection_norm)
                    weights = {"state_abs_mean": mask.any(-1).sum(-1).float(), "injection_norm": mask.sum((1, 2)).float()}
                    for name, acc in sums.items():
                        value = getattr(out, name, None)
                        if value is not None:
                            acc[0] += float((value.float().nan_to_num() * weights[name]).sum())
                            acc[1] += float(weights[name].sum())
    finally:
        model.train(was_training)
    return {name: (total / weight if weight else None) for name, (total, weight) in sums.items()}


def _rename(variant: str, run: Run) -> str:
    from hullama.eval.perplexity import ZEROED

    if run.variant != "recurrent":
        return variant
    return run.label + ZEROED_SUFFIX if variant == ZEROED else run.label


def score_run(run: Run, run_dir: Path, held_out, args, key: dict):
    """(TokenScores with the report's variant names, held-out diagnostics), cached in the run folder."""
    from hullama.eval.perplexity import TokenScores, score_variants

    npz, meta_path = run_dir / "study_scores.npz", run_dir / "study_scores.json"
    if npz.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            arrays = np.load(npz)
            nll = {v: arrays[f"nll/{v}"] for v in meta["variants"]}
            scores = TokenScores(meta["authors"], arrays["author"], arrays["position"], arrays["token"],
                                 arrays["history"], arrays["block"], nll, meta["seconds"], meta["skipped"])
            return scores, meta["diagnostics"], True
    model, tokenizer = load_trained(run_dir / run.variant, args)
    max_blocks = _eval_max_blocks(args)
    scores = score_variants(model, tokenizer, held_out, block_size=args.block_size, max_blocks=max_blocks,
                            variants=[run.variant], batch_size=args.eval_batch_size,
                            blocks_per_forward=args.blocks_per_forward, progress=False)
    scores = replace(scores, nll={_rename(v, run): x for v, x in scores.nll.items()},
                     seconds={_rename(v, run): x for v, x in scores.seconds.items()},
                     skipped={_rename(v, run): x for v, x in scores.skipped.items()})
    diagnostics = {}
    if run.variant == "recurrent":
        diagnostics = heldout_diagnostics(model, tokenizer, held_out, block_size=args.block_size,
                                          max_blocks=max_blocks, batch_size=args.eval_batch_size,
                                          blocks_per_forward=args.blocks_per_forward)
    del model
    _free_memory()
    np.savez(npz, author=scores.author, position=scores.position, token=scores.token, history=scores.history,
             block=scores.block, **{f"nll/{v}": x for v, x in scores.nll.items()})
    meta_path.write_text(json.dumps({"key": key, "variants": list(scores.nll), "authors": scores.authors,
                                     "seconds": scores.seconds, "skipped": scores.skipped,
                                     "diagnostics": diagnostics}, indent=2))
    return scores, diagnostics, False


def _eval_max_blocks(args) -> int | None:
    if args.eval_max_blocks is None:
        return args.max_blocks
    return args.eval_max_blocks or None


def merge_scores(scores: list):
    """One TokenScores over every run's variants, after checking they all predicted the same tokens."""
    from hullama.eval.perplexity import check_same_tokens

    names = [name for s in scores for name in s.nll]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise StudyError(f"two runs produced the variant names {duplicated}")
    check_same_tokens({name: (s.author, s.position, s.token) for s in scores for name in s.nll})
    if any(s.authors != scores[0].authors for s in scores):
        raise StudyError("the runs were scored on different held-out author lists")
    return replace(scores[0], nll={k: v for s in scores for k, v in s.nll.items()},
                   seconds={k: v for s in scores for k, v in s.seconds.items()},
                   skipped={k: v for s in scores for k, v in s.skipped.items()})


# ------------------------------------------------------------------------------------------------ report


def machine_info(device: str) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device, "gpu": None}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpu_count=torch.cuda.device_count())
    return info


def _ppl(report_variants: dict, name: str) -> dict:
    r = report_variants[name]
    return {"all": r["perplexity"], "block_1": r["by_block"]["1"]["perplexity"],
            "blocks_2+": r["by_block"]["2+"]["perplexity"]}


def mechanism_rows(runs: list[Run], records: dict, diagnostics: dict, merged, summary: dict, args) -> list[dict]:
    """Per recurrent run: the table row, the two blocks-2+ comparisons and the issue's criterion."""
    from hullama.eval.perplexity import paired_bootstrap

    later = merged.block >= 1
    rows = []
    for run in runs:
        if run.variant != "recurrent":
            continue
        zeroed = run.label + ZEROED_SUFFIX
        comparisons = {}
        for key, other in (("recurrent_minus_in_context", "in_context"), ("recurrent_minus_zeroed", zeroed)):
            comparisons[key] = paired_bootstrap(merged.nll[run.label], merged.nll[other], merged.author,
                                                samples=args.bootstrap_samples, seed=args.bootstrap_seed, mask=later)
        rec_later = summary["variants"][run.label]["by_block"]["2+"]["perplexity"]
        zero_later = summary["variants"][zeroed]["by_block"]["2+"]["perplexity"]
        cost = None if not rec_later or zero_later is None else 100 * (zero_later - rec_later) / rec_later
        vs_ic = comparisons["recurrent_minus_in_context"]
        beats = bool("ci95" in vs_ic and vs_ic["delta_perplexity"] < 0 and vs_ic["ci95"][1] < 0)
        costly = bool(cost is not None and cost >= ABLATION_COST_PERCENT)
        training = records[run.name].get("training", {})
        rows.append({
            "label": run.label, "run": run.name, "mechanism": run.mechanism, "state_lr_scale": run.state_lr_scale,
            "layout": run.layout, "insert_layer": records[run.name].get("insert_layer"),
            "extract_layer": records[run.name].get("extract_layer"),
            "perplexity": {"none": _ppl(summary["variants"], "none"),
                           "in_context": _ppl(summary["variants"], "in_context"),
                           "recurrent": _ppl(summary["variants"], run.label),
                           "recurrent_zeroed_state": _ppl(summary["variants"], zeroed)},
            **comparisons,
            "ablation_cost_percent": cost,
            "state": {"state_abs_mean_end_of_training": training.get("state_abs_mean"),
                      "injection_norm_end_of_training": training.get("injection_norm"),
                      "state_abs_mean_held_out": diagnostics.get(run.name, {}).get("state_abs_mean"),
                      "injection_norm_held_out": diagnostics.get(run.name, {}).get("injection_norm")},
            "criterion": {"recurrent_beats_in_context": beats, "ablation_cost_at_least_3_percent": costly,
                          "met": beats and costly},
        })
    return rows


def _num(x, digits=2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _diff(c: dict) -> str:
    if "ci95" not in c:
        return "-"
    return f"{c['delta_perplexity']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"


def format_markdown(study: dict) -> str:
    def cell(p):
        return f"{_num(p['all'])} / {_num(p['block_1'])} / {_num(p['blocks_2+'])}"

    s = study["scoring"]
    lines = ["# Author-state mechanism study", "",
             f"Held-out: {s['num_tokens']:,} tokens of {s['num_authors']} authors ({study['data']['test']}); "
             f"block {study['settings']['block_size']}, up to {s['eval_max_blocks'] or 'all'} blocks per author; "
             f"every run scored on the same tokens (checked).", "",
             "## Perplexity (all / block 1 / blocks 2+)", "",
             "| mechanism | none | in_context | recurrent | recurrent, state zeroed |", "|---|---|---|---|---|"]
    for m in study["mechanisms"]:
        p = m["perplexity"]
        lines.append(f"| {m['label']} | {cell(p['none'])} | {cell(p['in_context'])} | {cell(p['recurrent'])} | "
                     f"{cell(p['recurrent_zeroed_state'])} |")
    lines += ["", "## Does the state carry information? (blocks 2+, 95 % paired bootstrap over authors)", "",
              "| mechanism | recurrent - in_context | recurrent - zeroed | ablation cost % | mean abs U (train end / "
              "held-out) | injection norm (train end / held-out) | criterion |",
              "|---|---|---|---|---|---|---|"]
    for m in study["mechanisms"]:
        st, c = m["state"], m["criterion"]
        verdict = "met" if c["met"] else ("not met (" + ", ".join(
            why for ok, why in ((c["recurrent_beats_in_context"], "vs in_context"),
                                (c["ablation_cost_at_least_3_percent"], "ablation < 3 %")) if not ok) + ")")
        lines.append(f"| {m['label']} | {_diff(m['recurrent_minus_in_context'])} | {_diff(m['recurrent_minus_zeroed'])}"
                     f" | {_num(m['ablation_cost_percent'])} | {_num(st['state_abs_mean_end_of_training'], 3)} / "
                     f"{_num(st['state_abs_mean_held_out'], 3)} | {_num(st['injection_norm_end_of_training'], 3)} / "
                     f"{_num(st['injection_norm_held_out'], 3)} | {verdict} |")
    lines += ["", "Criterion: recurrent < in_context on blocks 2+ with the interval of the difference below zero, "
                  f"and ablation cost ((zeroed - recurrent) / recurrent, blocks 2+) >= {ABLATION_COST_PERCENT:g} %.",
              "", "## Budgets", "",
              "| run | variant | steps | epochs | rows / epoch | input tokens | predicted tokens | input tokens / step "
              "| train s | wall s | reused |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in study["runs"].items():
        b = r["budget"]
        lines.append(f"| {name} | {r['variant']} | {b['steps'] or '-'} | {_num(b['epochs'])} | "
                     f"{b['rows_per_epoch']:,} | {b['input_tokens']:,} | {b['predicted_tokens']:,} | "
                     f"{_num(b['input_tokens_per_step'], 0)} | {_num(r['train_seconds'], 1)} | "
                     f"{_num(r['wall_seconds'], 1)} | {'yes' if r['reused'] else 'no'} |")
    m = study["machine"]
    lines += ["", f"Machine: {m['platform']}; CPU {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch "
                  f"threads); GPU {m['gpu'] or 'none'}; torch {m['torch']}, transformers {m['transformers']}.",
              f"Data: {study['data']['source']}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def run_study(args) -> dict:
    from hullama.eval.perplexity import summarize
    from hullama.train.args import DataArguments
    from hullama.train.data_setup import load_corpora

    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = scoring_device(args)
    train_file, test_file, source = prepare_data(args, out)
    tokenizer_dir = shared_tokenizer(args, train_file, out)
    layers = num_layers(args)
    runs = plan_runs(args, layers)
    if args.runs:
        unknown = sorted(set(args.runs) - {run.name for run in runs})
        if unknown:
            raise StudyError(f"--runs {','.join(unknown)}: not a run of this study (its runs: "
                             f"{', '.join(run.name for run in runs)})")
        keep = set(args.runs) | (set() if args.train_only else set(BASELINES))
        runs = [run for run in runs if run.name in keep]
    hashes = {"train_sha256": _sha256(train_file), "test_sha256": _sha256(test_file)}
    if tokenizer_dir is not None:
        hashes["tokenizer_sha256"] = _sha256(tokenizer_dir / "tokenizer.json")

    # The corpora exactly as train/hulm.py reads them: the training authors (for the token counts) and the held-out.
    train_corpus, held_out = load_corpora(
        DataArguments(train_file=str(train_file), validation_file=str(test_file),
                      max_eval_authors=args.max_eval_authors),
        task="lm", seed=args.seed)
    records, token_memo = {}, {}
    for run in runs:
        run_dir = out / "runs" / run.name
        argv = hulm_argv(args, run, run_dir, train_file, test_file, tokenizer_dir)
        record = train_run(run, argv, run_dir, _fingerprint(argv, out, hashes), args.retrain)
        training = record.setdefault("training", {})
        if "data" not in training:  # rows and tokens of one epoch, kept with the run's record
            training["data"] = training_tokens(run, run_dir, train_corpus, args, token_memo)
            saved = {k: v for k, v in record.items() if k != "reused"}
            (run_dir / "study_run.json").write_text(json.dumps(saved, indent=2))
        if run.variant == "recurrent":  # the layers the state uses (baselines have no state path)
            config = json.loads((run_dir / run.variant / "config.json").read_text())
            record.update(insert_layer=config.get("insert_layer"), extract_layer=config.get("extract_layer"))
        records[run.name] = record
    if args.train_only:
        print(f"trained {', '.join(records)}; run the study again without --train_only to score and report")
        return {"trained": list(records)}

    eval_max_blocks = _eval_max_blocks(args)
    scores, diagnostics = [], {}
    for run in runs:
        run_dir = out / "runs" / run.name
        key = {"version": SCORES_VERSION, "run": records[run.name]["fingerprint"], "block_size": args.block_size,
               "eval_max_blocks": eval_max_blocks, "max_eval_authors": args.max_eval_authors, "dtype": args.dtype}
        s, diagnostics[run.name], cached = score_run(run, run_dir, held_out, args, key)
        print(f"{'reused' if cached else 'scored'} {run.label}: {len(s.author):,} held-out tokens", flush=True)
        scores.append(s)
        records[run.name]["num_tokens_scored"] = int(len(s.author))
        records[run.name]["scored_variants"] = list(s.nll)
    merged = merge_scores(scores)
    summary = summarize(merged, bootstrap_samples=args.bootstrap_samples, seed=args.bootstrap_seed)

    runs_out = {}
    for run in runs:
        r = records[run.name]
        t = r.get("training", {})
        per_epoch = t["data"]
        epochs = t.get("epochs") or 0.0
        steps = t.get("steps")
        input_tokens = round(per_epoch["input_tokens"] * epochs)
        recurrent = run.variant == "recurrent"
        runs_out[run.name] = {
            "label": run.label, "variant": run.variant, "mechanism": run.mechanism,
            "state_lr_scale": run.state_lr_scale if recurrent else None, "layout": run.layout if recurrent else None,
            "insert_layer": r.get("insert_layer"), "extract_layer": r.get("extract_layer"),
            "folder": str(out / "runs" / run.name / run.variant), "reused": r["reused"], "resumed": r.get("resumed"),
            "wall_seconds": r.get("wall_seconds"), "train_seconds": t.get("train_seconds"),
            "final_loss": t.get("final_loss"), "num_tokens_scored": r["num_tokens_scored"],
            "scored_variants": r["scored_variants"],
            "scoring_seconds": {v: merged.seconds[v] for v in r["scored_variants"]},
            "budget": {"steps": steps, "epochs": epochs, "max_steps": t.get("max_steps"),
                       "batch_per_step": t.get("train_batch_size"), "rows_per_epoch": per_epoch["rows"],
                       "input_tokens": input_tokens, "predicted_tokens": round(per_epoch["predicted_tokens"] * epochs),
                       "input_tokens_per_step": input_tokens / steps if steps else None,
                       "padded_input_tokens_seen": t.get("padded_input_tokens_seen")},
            "state_end_of_training": {"state_abs_mean": t.get("state_abs_mean"),
                                      "injection_norm": t.get("injection_norm")} if recurrent else None,
            "state_held_out": diagnostics.get(run.name) or None,
            "argv": r["argv"],
        }

    settings = {k: v for k, v in vars(args).items()}
    study = {
        "settings": {**settings, "layers": layers, "from_scratch": not args.base_model},
        "data": {"source": source, "train": str(train_file), "test": str(test_file),
                 "num_train_authors": len(train_corpus.authors), **hashes},
        "machine": machine_info(device),
        "scoring": {"num_tokens": int(len(merged.author)), "num_authors": len(merged.authors),
                    "block_size": args.block_size, "eval_max_blocks": eval_max_blocks,
                    "identical_tokens_checked": True,
                    "bootstrap": {"unit": "author", "samples": args.bootstrap_samples, "seed": args.bootstrap_seed,
                                  "interval": "95% percentile", "tokens": "blocks 2+"}},
        "mechanisms": mechanism_rows(runs, records, diagnostics, merged, summary, args),
        "runs": runs_out,
        "perplexity": summary,
    }
    (out / "study.json").write_text(json.dumps(study, indent=2, default=_json_default) + "\n")
    markdown = format_markdown(study)
    (out / "study.md").write_text(markdown)
    print("\n" + markdown)
    print(f"wrote {out / 'study.json'} and {out / 'study.md'}")
    return study


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    from hullama.train.cli import USER_ERRORS

    try:
        return run_study(args)
    except (StudyError, *USER_ERRORS) as error:
        message = str(error).splitlines()[0] if str(error) else repr(error)
        print(f"study_state.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
