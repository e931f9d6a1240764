"""Loading from a saved folder with trust_remote_code, as a Hub user would: fresh process, offline,
empty modules cache, another working directory, and this project not importable."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import torch
from transformers import LlamaForCausalLM

import modeling_hullama
from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification

CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class RefuseProject(importlib.abc.MetaPathFinder):
        # The project's own modules must come from the saved folder, not from the checkout or an install.
        def find_spec(self, name, path=None, target=None):
            if name in ("configuration_hullama", "modeling_hullama"):
                raise ImportError(f"{name} must not be importable here")
    sys.meta_path.insert(0, RefuseProject())

    import torch
    from safetensors.torch import load_file
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                              AutoModelForSequenceClassification)

    cases = json.loads(sys.argv[1])
    report = {}
    for case in cases:
        auto = {"AutoModel": AutoModel, "AutoModelForCausalLM": AutoModelForCausalLM,
                "AutoModelForSequenceClassification": AutoModelForSequenceClassification}[case["auto"]]
        try:
            auto.from_pretrained(case["path"])
            refused = False
        except ValueError as error:
            refused = "trust_remote_code" in str(error)
        config = AutoConfig.from_pretrained(case["path"], trust_remote_code=True)
        model = auto.from_pretrained(case["path"], trust_remote_code=True).eval()
        saved = load_file(case["path"] + "/model.safetensors")
        prefix = case.get("strip_prefix", "")
        params = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in saved.items()}
        own = model.state_dict()
        mismatched = [k for k, v in params.items() if k in own and not torch.equal(own[k], v)]
        missing = [k for k in own if k not in params and "rotary" not in k]
        with torch.no_grad():
            out = model(torch.load(case["inputs"]))
        result = out.logits if hasattr(out, "logits") else out.last_hidden_state
        reference = torch.load(case["reference"])
        report[case["name"]] = {
            "refused_without_flag": refused,
            "config_class": type(config).__name__,
            "class": type(model).__name__,
            "module": type(model).__module__,
            "mismatched": mismatched,
            "missing": missing,
            "max_diff": (result - reference).abs().max().item(),
            "exact": torch.equal(result, reference),
        }
    with open(sys.argv[2], "w") as handle:
        json.dump(report, handle)
    """
)


def _save_case(root, name, model, inputs, auto, **extra):
    path = root / name
    model.save_pretrained(path)
    torch.save(inputs, root / f"{name}-inputs.pt")
    with torch.no_grad():
        out = model(inputs)
    torch.save(out.logits if hasattr(out, "logits") else out.last_hidden_state, root / f"{name}-reference.pt")
    return {"name": name, "path": str(path), "auto": auto, "inputs": str(root / f"{name}-inputs.pt"),
            "reference": str(root / f"{name}-reference.pt"), **extra}


def test_all_auto_classes_load_with_trust_remote_code(tmp_path, tiny_llama_dir):
    torch.manual_seed(0)
    ids = torch.randint(2, 512, (2, 3, 12))
    lm = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    classifier = perturb_state_modules(HuLlamaForSequenceClassification(tiny_hullama_config(num_labels=3))).eval()
    cases = [
        _save_case(tmp_path, "lm", lm, ids, "AutoModelForCausalLM"),
        _save_case(tmp_path, "base", lm.model, ids, "AutoModel"),
        _save_case(tmp_path, "classifier", classifier, ids, "AutoModelForSequenceClassification"),
    ]
    for mechanism in ("gate", "memory"):  # the other state mechanisms, in the causal-LM case only
        model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(state_mechanism=mechanism))).eval()
        cases.append(_save_case(tmp_path, f"lm-{mechanism}", model, ids, "AutoModelForCausalLM"))
    # the recurrence without its normalised update (the default before it was found to keep the state unsaturated)
    plain = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(normalize_state_update=False))).eval()
    cases.append(_save_case(tmp_path, "lm-plain-update", plain, ids, "AutoModelForCausalLM"))
    saved = len(cases)
    # A plain Llama checkpoint next to the HuLlama code: the new modules are initialised by the remote code,
    # and must start at exactly zero contribution (parity with Llama) there too, whatever the mechanism.
    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    torch.save(ids, tmp_path / "llama-inputs.pt")
    with torch.no_grad():
        torch.save(llama(ids.view(6, 12)).logits.view(2, 3, 12, -1), tmp_path / "llama-reference.pt")
    for mechanism in ("query", "gate", "memory"):
        name = "llama-weights" + ("" if mechanism == "query" else f"-{mechanism}")
        llama_case = tmp_path / name
        shutil.copytree(tiny_llama_dir, llama_case)
        # writes config.json and configuration_hullama.py
        tiny_hullama_config(state_mechanism=mechanism).save_pretrained(llama_case)
        shutil.copy(modeling_hullama.__file__, llama_case)
        cases.append({"name": name, "path": str(llama_case), "auto": "AutoModelForCausalLM",
                      "inputs": str(tmp_path / "llama-inputs.pt"), "reference": str(tmp_path / "llama-reference.pt"),
                      "expect_new_modules": True})

    for case in cases[:saved]:
        config = json.loads((tmp_path / case["name"] / "config.json").read_text())
        assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                           "AutoModelForSequenceClassification"}
        assert (tmp_path / case["name"] / "modeling_hullama.py").is_file()
        assert (tmp_path / case["name"] / "configuration_hullama.py").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases), str(tmp_path / "report.json")], cwd=elsewhere, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "hf-home" / "modules" / "transformers_modules").is_dir()  # the code came from the folder
    for case in cases:
        result = report[case["name"]]
        assert result["refused_without_flag"], case["name"]
        assert result["config_class"] == "HuLlamaConfig"
        assert result["module"].startswith("transformers_modules."), result
        assert result["mismatched"] == [], result
        if not case.get("expect_new_modules"):
            assert result["missing"] == [], result
            assert result["exact"], result
        else:
            assert all("author_state" in k for k in result["missing"]), result
            assert result["max_diff"] < 1e-5, result


LOAD_ADAPTER_OUTPUT = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoModelForCausalLM
    folder, ids_path, out_path = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()  # as the README loads it
    with torch.no_grad():
        torch.save(model(torch.load(ids_path)).logits, out_path)
    """
)


def test_a_local_adapter_output_loads_with_the_auto_class_also_once_moved(tmp_path, tiny_llama_dir, tokenizer):
    """A QLoRA-style output (adapter + config.json + code, its HuLlama base beside it) loads with the README's
    AutoModelForCausalLM call in a fresh process, and still does after the output folder was moved."""
    from peft import PeftModel

    from hullama.train import hulm

    base = tmp_path / "llama"
    shutil.copytree(tiny_llama_dir, base)
    tokenizer.save_pretrained(base)
    hulm.main(["--base_model", str(base), "--quantization", "none", "--lora_r", "4", "--synthetic_authors", "12",
               "--synthetic_messages", "6", "--num_train_epochs", "1", "--block_size", "32", "--max_blocks", "2",
               "--variants", "recurrent", "--per_device_train_batch_size", "4", "--save_strategy", "no",
               "--output_dir", str(tmp_path / "out")])
    ids = torch.randint(2, 500, (2, 2, 16), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        hullama_base = HuLlamaForCausalLM.from_pretrained(tmp_path / "out" / "hullama-base")
        expected = PeftModel.from_pretrained(hullama_base, tmp_path / "out" / "recurrent").eval()(input_ids=ids).logits
    shutil.move(tmp_path / "out", tmp_path / "moved")
    done = subprocess.run([sys.executable, "-c", LOAD_ADAPTER_OUTPUT, str(tmp_path / "moved" / "recurrent"),
                           str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)
