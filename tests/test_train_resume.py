"""A run killed with SIGKILL mid-training and resumed from its last checkpoint ends where an uninterrupted
run with the same seed ends."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from train.cli import last_complete_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--synthetic_authors", "24", "--synthetic_messages", "6", "--num_train_epochs", "2", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2",
        "--variants", "recurrent", "--blocks_per_step", "0", "--per_device_train_batch_size", "2", "--save_strategy", "steps",
        "--save_steps", "3", "--save_total_limit", "3", "--eval_strategy", "no", "--dataloader_num_workers", "0"]


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train" / "hulm.py"), *ARGS, "--output_dir", str(out), *extra]


def _run(command, tmp_path):
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]


def _env():
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    _run(_command(tmp_path / "straight"), tmp_path)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 300
    while last_complete_checkpoint(killed / "recurrent") is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = last_complete_checkpoint(killed / "recurrent")
    assert checkpoint is not None and not (killed / "recurrent" / "model.safetensors").exists(), "killed too late"

    _run(_command(killed, "--resume_from_checkpoint", "true"), tmp_path)
    straight = load_file(tmp_path / "straight" / "recurrent" / "model.safetensors")
    resumed = load_file(killed / "recurrent" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-4, atol=1e-5, msg=name)
    a = json.loads((tmp_path / "straight" / "results.json").read_text())["variants"]["recurrent"]["perplexity"]
    b = json.loads((killed / "results.json").read_text())["variants"]["recurrent"]["perplexity"]
    assert abs(a - b) / a < 1e-4
