"""Two CPU processes (torch.distributed with gloo) train the default job like one process with the same global
batch: same samples per step, gradients averaged, so the same weights within float tolerance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--synthetic_authors", "24", "--synthetic_messages", "6", "--num_train_epochs", "1", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2",
        "--variants", "recurrent", "--eval_strategy", "no", "--save_strategy", "no",
        "--warmup_steps", "0"]


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env=env)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_processes_match_one(tmp_path):
    script = str(ROOT / "train" / "hulm.py")
    _run([sys.executable, script, *ARGS, "--per_device_train_batch_size", "4", "--output_dir",
          str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", script,
          *ARGS, "--per_device_train_batch_size", "2", "--ddp_backend", "gloo", "--output_dir", str(tmp_path / "two")],
         tmp_path)
    one = load_file(tmp_path / "one" / "recurrent" / "model.safetensors")
    two = load_file(tmp_path / "two" / "recurrent" / "model.safetensors")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4, msg=name)
    ppl = [json.loads((tmp_path / run / "results.json").read_text())["variants"]["recurrent"]["perplexity"]
           for run in ("one", "two")]
    assert abs(ppl[0] - ppl[1]) / ppl[0] < 1e-3
