"""HuFT end to end on a real stance file (../shared/data/hart), a tiny model, all three author-context variants."""

import json

import pytest

from hullama.train import huft


@pytest.mark.slow
@pytest.mark.parametrize("context", ["none", "in_context", "recurrent"])
def test_huft_on_abortion_stance(shared_data, tmp_path, context):
    results = huft.main([
        "--train_file", str(shared_data / "hart" / "abo_train.jsonl"),
        "--validation_file", str(shared_data / "hart" / "abo_dev.jsonl"),
        "--author_context", context, "--num_train_epochs", "1", "--scratch_hidden_size", "64",
        "--scratch_layers", "2", "--scratch_vocab_size", "1000", "--block_size", "64", "--max_blocks", "2",
        "--per_device_train_batch_size", "16", "--output_dir", str(tmp_path),
    ])
    assert results["metric"] == "weighted_f1" and 0 <= results["value"] <= 1
    assert results["held_out_labels"] > 40  # the dev file's labelled tweets (kept within 2 blocks)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "against", "1": "favor", "2": "none"}
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "model" / "README.md").is_file()
