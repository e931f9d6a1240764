"""Training throughput of the default recipe (the streaming schedule) on 1 and on 2 processes, side by side.

    python benchmarks/bench_processes.py                    # CPU: gloo, one torch thread per process
    python benchmarks/bench_processes.py --steps 100 --per-process 8

Runs train/hulm.py on the embedded synthetic corpus with the main job's model (from scratch), `--steps` optimizer
steps of the recurrent variant, twice: one process with the global batch (2 x --per-process authors a step), and two
processes (torch.distributed, gloo) with --per-process each, so that both read the same batches. Prints the input
tokens trained per second of each (the Trainer's count, padding included, over its train_runtime) and their ratio.
No evaluation, no checkpoints; nothing is downloaded.
"""

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, per_process: int, steps: int, out: Path) -> dict:
    launch = [sys.executable]
    extra = []
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29561"]
        extra = ["--ddp_backend", "gloo"]
    command = [*launch, str(ROOT / "train" / "hulm.py"), "--variants", "recurrent", "--max_steps", str(steps),
               "--per_device_train_batch_size", str(per_process), "--eval_strategy", "no", "--save_strategy", "no",
               "--include_num_input_tokens_seen", "true", "--logging_steps", str(steps), "--output_dir",
               str(out), *extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    logs = [ast.literal_eval(m) for m in re.findall(r"^(\{'.*\})$", done.stdout + done.stderr, re.MULTILINE)]
    runtime = next(float(log["train_runtime"]) for log in logs if "train_runtime" in log)
    tokens = max(float(log["num_input_tokens_seen"]) for log in logs if "num_input_tokens_seen" in log)
    return {"runtime": runtime, "tokens": tokens, "tokens_per_second": tokens / runtime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--per-process", type=int, default=4, help="authors a step per process (global: 2x)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, 2 * args.per_process, args.steps, Path(tmp) / "one")
        two = run(2, args.per_process, args.steps, Path(tmp) / "two")
    print(f"{args.steps} steps of the default recipe, global batch {2 * args.per_process} authors x 1 block")
    for name, r in (("1 process ", one), ("2 processes", two)):
        print(f"  {name}: {r['tokens']:,.0f} input tokens in {r['runtime']:.1f} s = {r['tokens_per_second']:,.0f} tokens/s")
    print(f"  ratio (2 / 1): {two['tokens_per_second'] / one['tokens_per_second']:.2f}x "
          f"(same tokens: {one['tokens'] == two['tokens']})")


if __name__ == "__main__":
    main()
