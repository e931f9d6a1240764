"""Training outputs pushed to a Hub-compatible server on 127.0.0.1 and loaded back in a fresh process;
a failing server gives one clear error and loses nothing locally."""

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hullama.train.hub import HubPushError, push_training_output
from tests.hub_server import hub_server  # noqa: F401 - `hub_server` is a fixture

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2",
        "--variants", "recurrent", "--per_device_train_batch_size", "4"]

LOAD_BACK = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    repo, base_repo, ids_path, out_path = sys.argv[1:5]
    if base_repo == "-":
        model = AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)
    else:
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained(base_repo, trust_remote_code=True)
        model = PeftModel.from_pretrained(base, repo)
    with torch.no_grad():
        torch.save(model.eval()(torch.load(ids_path)).logits, out_path)
    """
)


def _train(tmp_path, hub, extra, name):
    out = tmp_path / name
    env = hub.client_env(tmp_path / "hf-train")
    done = subprocess.run([sys.executable, str(ROOT / "train" / "hulm.py"), *TINY, "--output_dir", str(out), *extra],
                          env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _load_back(tmp_path, hub, repo, base_repo, ids):
    torch.save(ids, tmp_path / "ids.pt")
    env = hub.client_env(tmp_path / "hf-fresh")  # an empty cache: everything comes from the server
    done = subprocess.run([sys.executable, "-c", LOAD_BACK, repo, base_repo or "-", str(tmp_path / "ids.pt"),
                           str(tmp_path / "remote.pt")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "remote.pt")


def test_full_model_round_trip(tmp_path, hub_server):  # noqa: F811
    out = _train(tmp_path, hub_server, ["--push_to_hub", "--hub_model_id", "test-user/tiny-hulm"], "run")
    files = hub_server.files("test-user/tiny-hulm")
    assert {"config.json", "model.safetensors", "modeling_hullama.py", "configuration_hullama.py",
            "tokenizer.json", "README.md", "handler.py"} <= set(files)
    assert "perplexity, recurrent (held-out authors)" in files["README.md"].decode()
    assert not any(p.startswith("checkpoint-") for p in files)
    assert hub_server.is_private("test-user/tiny-hulm")
    from modeling_hullama import HuLlamaForCausalLM

    ids = torch.randint(0, 300, (2, 2, 16))
    with torch.no_grad():
        local = HuLlamaForCausalLM.from_pretrained(out / "recurrent").eval()(ids).logits
    assert torch.equal(_load_back(tmp_path, hub_server, "test-user/tiny-hulm", None, ids), local)


def test_adapter_round_trip_points_at_a_hullama_base(tmp_path, hub_server, tiny_llama_dir, tokenizer):  # noqa: F811
    tokenizer.save_pretrained(tiny_llama_dir)
    out = _train(tmp_path, hub_server, ["--base_model", str(tiny_llama_dir), "--quantization", "none",
                                         "--lora_r", "4", "--push_to_hub", "--hub_model_id", "test-user/tiny-lora"],
                 "lora")
    adapter = json.loads(hub_server.files("test-user/tiny-lora")["adapter_config.json"])
    assert adapter["base_model_name_or_path"] == "test-user/tiny-lora-base"
    assert adapter["task_type"] == "CAUSAL_LM"
    assert "modeling_hullama.py" in hub_server.files("test-user/tiny-lora-base")
    local_adapter = json.loads((out / "recurrent" / "adapter_config.json").read_text())
    assert Path(local_adapter["base_model_name_or_path"]).is_dir()  # the local copy still names the local base

    from peft import PeftModel
    from safetensors import safe_open

    with safe_open(out / "recurrent" / "adapter_model.safetensors", "pt") as saved:
        assert any("author_state" in key for key in saved.keys())
    from modeling_hullama import HuLlamaForCausalLM

    ids = torch.randint(0, 300, (2, 2, 16))
    base = HuLlamaForCausalLM.from_pretrained(local_adapter["base_model_name_or_path"])
    with torch.no_grad():
        local = PeftModel.from_pretrained(base, out / "recurrent").eval()(input_ids=ids).logits
    remote = _load_back(tmp_path, hub_server, "test-user/tiny-lora", "test-user/tiny-lora-base", ids)
    torch.testing.assert_close(remote, local)
    # the pushed base holds the tokenizer, so that loaders of the adapter repo alone find one (a pipeline does)
    assert "tokenizer.json" in hub_server.files("test-user/tiny-lora-base")
    generate = ("from transformers import pipeline; print(pipeline('text-generation', model='test-user/tiny-lora', "
                "trust_remote_code=True)('the author writes', max_new_tokens=3, do_sample=False)[0]['generated_text'])")
    done = subprocess.run([sys.executable, "-c", generate], env=hub_server.client_env(tmp_path / "hf-pipeline"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("the author writes")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failure", ["error", "drop"])
def test_failed_push_is_one_clear_error_and_keeps_the_output(tmp_path, hub_server, failure):  # noqa: F811
    folder = tmp_path / "output"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    before = _digest(folder)
    if failure == "error":
        hub_server.fail("commit", 500)
    else:
        hub_server.drop("commit")
    with pytest.raises(HubPushError) as error:
        push_training_output(folder, "test-user/broken", endpoint=hub_server.endpoint)
    message = str(error.value)
    assert "\n" not in message and "test-user/broken" in message and "intact" in message
    assert _digest(folder) == before


def test_the_suggested_retry_uploads_the_output_without_checkpoints_or_logs(tmp_path, hub_server):  # noqa: F811
    """The command a failed push suggests, run as the user would: the model goes up, checkpoints and logs stay."""
    import re
    import shlex

    folder = tmp_path / "output"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "runs").mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"\1" * 4096)
    (folder / "runs" / "events.out").write_text("log")
    hub_server.fail("commit", 500)
    with pytest.raises(HubPushError) as error:
        push_training_output(folder, "test-user/retried", endpoint=hub_server.endpoint)
    hub_server.clear_failures()
    command = re.search(r"`(hf upload [^`]+)`", str(error.value)).group(1)
    hf = Path(sys.executable).with_name("hf")
    done = subprocess.run([str(hf), *shlex.split(command)[1:]], env=hub_server.client_env(tmp_path / "hf"),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    files = set(hub_server.api().list_repo_files("test-user/retried"))
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.startswith(("checkpoint-", "runs")) for name in files), files
