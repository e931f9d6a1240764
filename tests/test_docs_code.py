"""The code README.md and the model card show, run verbatim in a fresh process against real training outputs: a full
model trained from scratch and a LoRA adapter on a Llama base, each from its local output folder and from the repo
it was pushed to on a Hub-compatible server on 127.0.0.1 (the card is the README.md that was pushed); the README's
batched pipelines included. Only the model's name in the code is swapped for the local folder. peft's
AutoPeftModelForCausalLM loads the adapter, local and pushed, as the base + adapter loaded by hand."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import hub_server  # noqa: F401 - `hub_server` is a fixture

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
README_NAME = "outputs/hulm/recurrent"  # the output the README's code loads
TINY = ["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1", "--block_size", "32",
        "--max_blocks", "2", "--variants", "recurrent", "--per_device_train_batch_size", "4", "--save_strategy", "no"]
FULL = ["--scratch_vocab_size", "300", "--scratch_hidden_size", "64", "--scratch_layers", "2"]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def how_to_use(card: str) -> str:
    [code, *_] = python_blocks(card.split("## How to use", 1)[1])
    return code


def _run(code: str, env: dict, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"}, cwd=cwd,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _check_readme_output(out: str) -> None:
    generated = [line for line in out.splitlines() if line.startswith("[[{'generated_text'")]
    assert len(generated) == 1 and "'I think" in generated[0] and "'Tomorrow I will" in generated[0], out


def test_readme_and_card_code_and_peft_auto_class_on_local_and_pushed_outputs(tmp_path, hub_server, tiny_llama_dir,  # noqa: F811
                                                              tokenizer):
    readme = (ROOT / "README.md").read_text()
    [readme_code] = [code for code in python_blocks(readme) if README_NAME in code]
    assert "pipeline(" in readme_code and "batch_size=2" in readme_code

    base = tmp_path / "llama"
    shutil.copytree(tiny_llama_dir, base)
    tokenizer.save_pretrained(base)
    runs = {"full": ("test-user/tiny-hulm", FULL), "adapter": ("test-user/tiny-lora",
                                                               ["--base_model", str(base), "--quantization", "none",
                                                                "--lora_r", "4"])}
    for name, (repo, extra) in runs.items():
        done = subprocess.run([sys.executable, str(ROOT / "train" / "hulm.py"), *TINY, *extra, "--output_dir",
                               str(tmp_path / name), "--push_to_hub", "--hub_model_id", repo],
                              env={**hub_server.client_env(tmp_path / "hf-train"), "OMP_NUM_THREADS": "1"},
                              cwd=tmp_path, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]

    offline = {**hub_server.client_env(tmp_path / "hf-local"), "HF_HUB_OFFLINE": "1"}
    for name, (repo, _) in runs.items():
        card = hub_server.files(repo)["README.md"].decode()
        card_code = how_to_use(card)
        assert f'repo = "{repo}"' in card_code
        local = str(tmp_path / name / "recurrent")
        # the local output, offline: the README's code, then the card's
        out = _run(readme_code.replace(README_NAME, local), offline, tmp_path)
        _check_readme_output(out)
        assert "perplexity on the recent messages:" in _run(card_code.replace(repo, local), offline, tmp_path)
        # the pushed repo, from an empty cache: the card exactly as pushed, and the README's code on the repo
        env = hub_server.client_env(tmp_path / f"hf-fresh-{name}")
        out = _run(card_code + "\n" + readme_code.replace(README_NAME, repo), env, tmp_path)
        assert "perplexity on the recent messages:" in out
        _check_readme_output(out)

    # peft users' entry point on the adapter, in place and pushed: the logits of the base + adapter loaded by hand
    import torch
    from peft import PeftModel

    from modeling_hullama import HuLlamaForCausalLM

    out = tmp_path / "adapter"
    ids = torch.randint(2, 300, (2, 2, 16), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = PeftModel.from_pretrained(HuLlamaForCausalLM.from_pretrained(out / "hullama-base"),
                                             out / "recurrent").eval()(input_ids=ids).logits
    load = ("import sys, torch\nfrom peft import AutoPeftModelForCausalLM\n"
            "model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
            "with torch.no_grad():\n    torch.save(model(input_ids=torch.load(sys.argv[2])).logits, sys.argv[3])\n")
    for name, source, env in (("local", str(out / "recurrent"), offline),
                              ("pushed", runs["adapter"][0], hub_server.client_env(tmp_path / "hf-peft"))):
        done = subprocess.run([sys.executable, "-c", load, source, str(tmp_path / "ids.pt"),
                               str(tmp_path / f"{name}.pt")], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "MISSING" not in done.stderr and "of type llama to instantiate" not in done.stderr, done.stderr
        torch.testing.assert_close(torch.load(tmp_path / f"{name}.pt"), expected)
