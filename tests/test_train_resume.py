"""A run of the default recipe (the streaming schedule, carried states) killed with SIGKILL after a checkpoint
and resumed from it ends where an uninterrupted run with the same seed ends: in one process, and in two gloo
processes (the whole process group killed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hullama.train.cli import last_complete_checkpoint
from hullama.train.trainer import CARRIED_STATES_NAME

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--synthetic_authors", "24", "--synthetic_messages", "6", "--num_train_epochs", "2", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2",
        "--variants", "recurrent", "--per_device_train_batch_size", "2", "--save_strategy", "steps",
        "--save_steps", "3", "--save_total_limit", "3", "--eval_strategy", "no", "--dataloader_num_workers", "0"]


def _command(out: Path, processes: int, *extra: str) -> list[str]:
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29541"]
        extra = (*extra, "--ddp_backend", "gloo")
    return [*launch, str(ROOT / "train" / "hulm.py"), *ARGS, "--output_dir", str(out), *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(command, tmp_path):
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, processes):
    _run(_command(tmp_path / "straight", processes), tmp_path)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(killed, processes), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=_env(), start_new_session=True)
    deadline = time.time() + 300
    while last_complete_checkpoint(killed / "recurrent") is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and every training process
    process.wait()
    checkpoint = last_complete_checkpoint(killed / "recurrent")
    assert checkpoint is not None and not (killed / "recurrent" / "model.safetensors").exists(), "killed too late"
    assert (Path(checkpoint) / CARRIED_STATES_NAME).is_file()

    _run(_command(killed, processes, "--resume_from_checkpoint", "true"), tmp_path)
    straight = load_file(tmp_path / "straight" / "recurrent" / "model.safetensors")
    resumed = load_file(killed / "recurrent" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-4, atol=1e-5, msg=name)
    a = json.loads((tmp_path / "straight" / "results.json").read_text())["variants"]["recurrent"]["perplexity"]
    b = json.loads((killed / "results.json").read_text())["variants"]["recurrent"]["perplexity"]
    assert abs(a - b) / a < 1e-4
