"""The console commands `pip install` gives: they run from any folder and exit 0 on success (a script's `main`
returns its results, which a console entry point would hand to the shell as an exit status and print)."""

import subprocess
import sys
from pathlib import Path

from conftest import tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM

BIN = Path(sys.executable).parent


def test_perplexity_command_exits_zero_from_another_folder(tmp_path, tokenizer):
    model = tmp_path / "model"
    HuLlamaForCausalLM(tiny_hullama_config(vocab_size=len(tokenizer))).save_pretrained(model)
    tokenizer.save_pretrained(model)
    done = subprocess.run([str(BIN / "hullama-perplexity"), "--model_name_or_path", str(model), "--max_authors", "2",
                           "--max_blocks", "1", "--block_size", "32", "--bootstrap_samples", "10", "--output_dir",
                           str(tmp_path / "ppl"), "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'settings'" not in done.stdout + done.stderr and (tmp_path / "ppl" / "perplexity.json").is_file()


def test_every_command_is_installed_and_answers_help(tmp_path):
    for name in ("hullama-train", "hullama-finetune", "hullama-perplexity", "hullama-probe"):
        done = subprocess.run([str(BIN / name), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0 and "--output_dir" in done.stdout, (name, done.stderr[-2000:])
