"""benchmarks/huft_seeds.py: the HuFT-vs-standard grid over seeds on a registered task (tiny files in its format),
resumed without retraining, and its means and t-intervals against a hand computation."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from benchmarks import huft_seeds
from hullama.data.synthetic import synthetic_corpus
from hullama.eval.tasks import STANCE_LABELS
from hullama.train import hulm

TINY = ["--num_train_epochs", "1", "--block_size", "32", "--max_blocks", "2", "--eval_max_blocks", "2",
        "--quantization", "none", "--report_to", "none", "--per_device_train_batch_size", "4"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Task files of stance_abortion (synthetic authors, a stance tied to the persona) and two tiny pre-trained
    models: recurrent (HuLM) and none."""
    root = tmp_path_factory.mktemp("huft_seeds")
    frame = synthetic_corpus(n_authors=24, messages_per_author=5, seed=2)
    stance = frame["persona"].map(lambda p: STANCE_LABELS[sorted(set(frame["persona"])).index(p) % 3])
    frame = frame.assign(label=stance.where(frame.index % 2 == 0, None), timestamp=frame["timestamp"].astype(str))
    (root / "data" / "hart").mkdir(parents=True)
    authors = sorted(frame["user_id"].unique())
    for name, users in (("train", authors[:16]), ("dev", authors[16:])):
        part = frame[frame["user_id"].isin(users)][["user_id", "message_id", "timestamp", "message", "label"]]
        part.to_json(root / "data" / "hart" / f"abo_{name}.jsonl", orient="records", lines=True)
    hulm.main(["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1",
               "--scratch_vocab_size", "300", "--scratch_hidden_size", "32", "--scratch_layers", "2",
               "--scratch_heads", "2", "--block_size", "32", "--max_blocks", "2", "--variants", "recurrent,none",
               "--save_strategy", "no", "--report_to", "none", "--output_dir", str(root / "pretrained")])
    return root


def test_the_grid_runs_resumes_and_reports_intervals_over_seeds(setting, capfd):
    out = setting / "grid"
    args = ["--standard", str(setting / "pretrained" / "none"), "--huft", str(setting / "pretrained" / "recurrent"),
            "--tasks", "stance_abortion", "--seeds", "1", "2", "--output_dir", str(out),
            "--data_dir", str(setting / "data"), *TINY]
    result = huft_seeds.main(args)
    values = {cell: [json.loads((out / "stance_abortion" / f"{cell}_seed{s}" / "metrics.json").read_text())["value"]
                     for s in (1, 2)] for cell in ("standard", "huft")}
    runs = {cell: json.loads((out / "stance_abortion" / f"{cell}_seed1" / "run_args.json").read_text())
            for cell in ("standard", "huft")}
    assert "recurrent" in json.dumps(runs["huft"]) and '"none"' in json.dumps(runs["standard"])
    task = result["tasks"]["stance_abortion"]
    delta = np.subtract(values["huft"], values["standard"])
    half = stats.t.ppf(0.975, 1) * delta.std(ddof=1) / np.sqrt(2)
    assert task["huft_minus_standard"]["mean"] == pytest.approx(delta.mean())
    assert task["huft_minus_standard"]["ci95"] == pytest.approx([delta.mean() - half, delta.mean() + half])
    assert task["standard"]["mean"] == pytest.approx(np.mean(values["standard"]))
    assert result["mean_of_tasks"]["huft"]["mean"] == pytest.approx(np.mean(values["huft"]))
    assert "| stance_abortion |" in (out / "huft_seeds.md").read_text()
    # a second call finds every run finished: nothing is trained again
    stamps = sorted(p.stat().st_mtime for p in out.rglob("metrics.json"))
    huft_seeds.main(args)
    assert sorted(p.stat().st_mtime for p in out.rglob("metrics.json")) == stamps
    capfd.readouterr()
    for wrong, message in ((["--seeds", "1"], "needs at least two"), (["--seed", "4"], "--seed is set by"),
                           (["--seeds", "1", "1", "2"], "names one twice"),
                           (["--learning_rate", "0.5"], "holds runs trained with other models or flags")):
        with pytest.raises(SystemExit):
            huft_seeds.main([*args, *wrong])
        assert message in capfd.readouterr().err


def test_the_grid_continues_qlora_adapters(setting, tiny_llama_dir, tokenizer, tmp_path):
    """HuLM on a pre-trained base writes adapters, not models: each run continues its own adapter (the none-trained
    one for standard fine-tuning, the recurrent one for HuFT)."""
    import shutil

    base = tmp_path / "llama"
    shutil.copytree(tiny_llama_dir, base)
    tokenizer.save_pretrained(base)
    hulm.main(["--base_model", str(base), "--quantization", "none", "--lora_r", "4", "--synthetic_authors", "12",
               "--synthetic_messages", "6", "--num_train_epochs", "1", "--block_size", "32", "--max_blocks", "2",
               "--variants", "recurrent,none", "--per_device_train_batch_size", "4", "--save_strategy", "no",
               "--report_to", "none", "--output_dir", str(tmp_path / "hulm")])
    out = tmp_path / "grid"
    adapters = tmp_path / "hulm"
    result = huft_seeds.main(["--standard", str(adapters / "none"), "--huft", str(adapters / "recurrent"),
                              "--tasks", "stance_abortion", "--seeds", "1", "2", "--output_dir", str(out),
                              "--data_dir", str(setting / "data"), *TINY])
    for cell, adapter in (("standard", "none"), ("huft", "recurrent")):
        run = json.loads((out / "stance_abortion" / f"{cell}_seed1" / "run_args.json").read_text())
        assert run["ModelArguments"]["adapter"] == str(tmp_path / "hulm" / adapter)
    assert result["tasks"]["stance_abortion"]["huft_minus_standard"]["ci95"][0] <= \
        result["tasks"]["stance_abortion"]["huft_minus_standard"]["ci95"][1]


def test_a_hullama_base_lends_its_tokenizer_without_warnings(setting):
    """AutoTokenizer also reads the folder's config.json and would warn that it does not know the type "hullama"."""
    code = ("import sys; from hullama.train.args import ModelArguments; from hullama.train.qlora import load_tokenizer;"
            " print(len(load_tokenizer(ModelArguments(base_model=sys.argv[1]))))")
    run = subprocess.run([sys.executable, "-c", code, str(setting / "pretrained" / "recurrent")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and int(run.stdout) == 300
    assert "model of type" not in run.stderr and "custom code" not in run.stderr, run.stderr
