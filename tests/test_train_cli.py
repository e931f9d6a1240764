"""The training scripts' command lines: bad arguments give one clear line (exit status 2), not a traceback."""

import shutil

import pytest
from transformers import GPT2Config

from hullama.train import huft, hulm

TINY = ["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "64", "--scratch_layers", "2", "--block_size", "32", "--max_blocks", "2"]


def _one_line_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_unknown_quantization(capsys):
    line = _one_line_error(capsys, hulm.main, ["--base_model", "x", "--quantization", "fp3"])
    assert line == "hulm.py: error: --quantization 'fp3' is unknown: choose one of nf4, int8, none"


def test_lora_rank_zero(capsys):
    assert "--lora_r 0 is invalid" in _one_line_error(capsys, hulm.main, ["--lora_r", "0"])


def test_negative_schedule_arguments(capsys):
    assert "--author_pool -1 is invalid" in _one_line_error(capsys, hulm.main, ["--author_pool", "-1"])
    assert "--author_draw 'sideways' is unknown" in _one_line_error(capsys, hulm.main, ["--author_draw", "sideways"])
    assert "--blocks_per_step -2 is invalid" in _one_line_error(capsys, hulm.main, ["--blocks_per_step", "-2"])


def test_base_that_is_not_llama(capsys, tmp_path):
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    line = _one_line_error(capsys, hulm.main, ["--base_model", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    assert "is a 'gpt2' model: HuLlama needs a Llama-architecture base" in line


def test_unknown_variant_and_missing_file(capsys, tmp_path):
    assert "--variants 'flat'" in _one_line_error(capsys, hulm.main, ["--variants", "flat"])
    assert "no such file" in _one_line_error(capsys, hulm.main, ["--train_file", str(tmp_path / "nope.jsonl")])


def test_huft_corpus_without_label_column(capsys, tmp_path):
    corpus = tmp_path / "authors.jsonl"
    corpus.write_text("".join(f'{{"user_id": {i % 3}, "message": "hello number {i}"}}\n' for i in range(12)))
    line = _one_line_error(capsys, huft.main, ["--train_file", str(corpus), "--output_dir", str(tmp_path / "o"), *TINY])
    assert line.startswith("huft.py: error:") and "label" in line


def test_push_without_repo_name(capsys, tmp_path):
    line = _one_line_error(capsys, hulm.main, [*TINY, "--output_dir", str(tmp_path), "--push_to_hub"])
    assert line == "hulm.py: error: --push_to_hub needs --hub_model_id NAME"


def test_yaml_arguments_and_saved_run_args(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("\n".join([
        "synthetic_authors: 12", "synthetic_messages: 6", "num_train_epochs: 1", "scratch_vocab_size: 300",
        "scratch_hidden_size: 64", "scratch_layers: 2", "block_size: 32", "max_blocks: 2", "variants: recurrent",
        f"output_dir: {tmp_path / 'out'}", "learning_rate: 0.001", "state_pooling: mean",
    ]))
    results = hulm.main([str(config)])
    assert set(results["variants"]) == {"recurrent", "recurrent_zeroed_state"}
    import json

    saved = json.loads((tmp_path / "out" / "run_args.json").read_text())
    assert saved["TrainingArguments"]["learning_rate"] == 0.001
    assert saved["DataArguments"]["block_size"] == 32
    model_config = json.loads((tmp_path / "out" / "recurrent" / "config.json").read_text())
    assert model_config["state_pooling"] == "mean"  # a HuLlamaConfig field set from the command line


def test_huft_task_name_errors(capsys, tmp_path):
    line = _one_line_error(capsys, huft.main, ["--task_name", "stance_abortoin", "--output_dir", str(tmp_path)])
    assert line.startswith("huft.py: error: --task_name:") and "stance_abortion" in line
    data = tmp_path / "no-data"
    data.mkdir()
    line = _one_line_error(capsys, huft.main, ["--task_name", "sentiment", "--data_dir", str(data), *TINY,
                                               "--output_dir", str(tmp_path / "o")])
    assert "--task_name sentiment:" in line and "sent_dev.jsonl" in line
    corpus = tmp_path / "a.jsonl"
    corpus.write_text('{"user_id": 1, "message": "hi", "label": "favor"}\n')
    line = _one_line_error(capsys, huft.main, ["--task_name", "sentiment", "--train_file", str(corpus),
                                               "--output_dir", str(tmp_path / "o")])
    assert "leave out --train_file, --validation_file and --dataset_name" in line


def test_several_train_files_are_one_corpus(capsys, tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text("")
    assert "no such file" in _one_line_error(capsys, hulm.main, ["--train_file", f"{first},{tmp_path / 'x.jsonl'}"])


def test_huft_on_a_model_that_cannot_take_a_llama_classification_head(capsys, tmp_path):
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    line = _one_line_error(capsys, huft.main, ["--base_model", str(tmp_path), "--task_name", "stance_abortion",
                                               "--output_dir", str(tmp_path / "o")])
    assert "is a 'gpt2' model: HuLlama needs a Llama-architecture base" in line


def test_huft_starts_from_a_hulm_adapter_with_its_own_tokenizer(tmp_path, tiny_llama_dir, tokenizer):
    """The HuLM adapter has no head: HuFT adds a fresh head, reads the adapter's tokenizer, and starts from the
    adapter's LoRA and state weights."""
    import torch
    from peft.utils import load_peft_weights

    base = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, base)
    tokenizer.save_pretrained(base)
    small = ["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1", "--block_size", "32",
             "--max_blocks", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--lora_r", "4"]
    hulm.main([*small, "--base_model", str(base), "--quantization", "none", "--variants", "recurrent",
               "--save_strategy", "no", "--output_dir", str(tmp_path / "hulm")])
    adapter = tmp_path / "hulm" / "recurrent"
    assert (tmp_path / "hulm" / "hullama-base" / "tokenizer.json").exists()  # the pushed base loads on its own
    results = huft.main([*small, "--adapter", str(adapter), "--quantization", "none", "--author_context", "recurrent",
                         "--num_train_epochs", "1", "--learning_rate", "1e-12", "--eval_strategy", "epoch",
                         "--save_strategy", "epoch", "--output_dir", str(tmp_path / "huft")])
    assert 0 <= results["value"] <= 1
    start = load_peft_weights(str(adapter))
    tuned = load_peft_weights(str(tmp_path / "huft" / "model"))
    shared = [k for k in start if "lora_" in k or "author_state" in k]
    # a learning rate of 1e-12 (0 is refused: it trains nothing) moves them by about 1e-12: started from them
    assert shared and all(torch.allclose(start[k], tuned[k], rtol=0, atol=1e-9) for k in shared)
    assert any("score" in k for k in tuned) and not any("score" in k for k in start)


def test_a_dataset_named_like_transformers_examples_name_it(capsys, tmp_path, monkeypatch):
    """--dataset_name (datasets.load_dataset) on a local dataset folder, offline: --dataset_split trains, and
    --validation_split holds the held-out authors; conflicting data arguments are one-line errors."""
    from hullama.data.synthetic import synthetic_corpus

    frame = synthetic_corpus(12, 6, seed=0)[["user_id", "message_id", "timestamp", "message"]]
    frame = frame.assign(timestamp=frame["timestamp"].astype(str))
    authors = list(dict.fromkeys(frame.user_id))
    folder = tmp_path / "authors"
    folder.mkdir()
    frame[frame.user_id.isin(authors[:9])].to_json(folder / "train.jsonl", orient="records", lines=True)
    frame[frame.user_id.isin(authors[9:])].to_json(folder / "test.jsonl", orient="records", lines=True)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    tiny = [arg for arg in TINY if arg not in ("--synthetic_authors", "12", "--synthetic_messages", "6")]
    results = hulm.main(["--dataset_name", str(folder), "--validation_split", "test", *tiny, "--variants", "none",
                         "--output_dir", str(tmp_path / "out")])
    assert results["corpus"] == f"{folder} [test]" and results["num_authors"] == 3
    capsys.readouterr()

    assert "give one" in _one_line_error(capsys, hulm.main, ["--dataset_name", str(folder), "--train_file",
                                                              str(folder / "train.jsonl")])
    assert "--validation_split belongs to --dataset_name" in _one_line_error(
        capsys, hulm.main, ["--validation_split", "test"])
    assert "held-out authors must not be training authors" in _one_line_error(
        capsys, hulm.main, ["--dataset_name", str(folder), "--validation_split", "train"])
    capsys.readouterr()
    with pytest.raises(SystemExit):  # datasets prints its progress before it finds the split missing
        hulm.main(["--dataset_name", str(folder), "--dataset_split", "dev", *tiny, "--output_dir", str(tmp_path / "o")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"hulm.py: error: {folder} [dev]: datasets.load_dataset could not read it") and "'train', 'test'" in line
