"""Two CPU processes (torchrun, gloo: the README's command) train the default job (the streaming schedule, states
exchanged between the processes) like one process with the same global batch: the same chunks per step, gradients
averaged over the global batch's tokens, so the same weights within float tolerance."""

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


def test_the_accelerate_configs_the_readme_names_load():
    """Every config in train/accelerate is one accelerate reads, for the setup its name says, and the README gives its
    launch command (they need GPUs to run; their parse is what runs here)."""
    from accelerate.commands.config.config_args import load_config_from_file

    readme = (ROOT / "README.md").read_text()
    expected = {"ddp.yaml": ("MULTI_GPU", 1), "fsdp_qlora.yaml": ("FSDP", 1), "multi_node.yaml": ("MULTI_GPU", 2)}
    configs = sorted(p.name for p in (ROOT / "train" / "accelerate").glob("*.yaml"))
    assert configs == sorted(expected)
    for name, (kind, machines) in expected.items():
        config = load_config_from_file(str(ROOT / "train" / "accelerate" / name))
        assert (config.distributed_type.value, config.num_machines) == (kind, machines)
        assert f"accelerate launch --config_file train/accelerate/{name}" in readme
