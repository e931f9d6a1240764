"""benchmarks/study_seeds.py on two real tiny studies (train/hulm.py run files) that differ only in their seed."""

import math

import numpy as np
import pytest
import yaml

from benchmarks import study_seeds
from hullama.data.synthetic import synthetic_corpus
from hullama.train import hulm

TINY = {"scratch_hidden_size": 64, "scratch_layers": 2, "scratch_heads": 2, "scratch_vocab_size": 300,
        "block_size": 32, "max_blocks": 3, "num_train_epochs": 1, "per_device_train_batch_size": 4,
        "eval_strategy": "no", "save_strategy": "no"}


def _data(folder, held_out_from: int):
    frame = synthetic_corpus(16, 8, seed=0)[["user_id", "message_id", "timestamp", "message"]]
    frame = frame.assign(timestamp=frame["timestamp"].astype(str))
    authors = list(dict.fromkeys(frame.user_id))
    for name, keep in (("train", authors[:held_out_from]), ("test", authors[held_out_from:])):
        frame[frame.user_id.isin(keep)].to_json(folder / f"{name}.jsonl", orient="records", lines=True)


def _study(folder, seed: int):
    """A study folder: the baselines and the gate run, trained from `seed` (run files as benchmarks/state_study/)."""
    folder.mkdir()
    for name, variants in (("baselines", "none,in_context"), ("gate", "recurrent")):
        run_file = folder / f"{name}.yaml"
        run_file.write_text(yaml.safe_dump({**TINY, "seed": seed, "variants": variants,
                                            "train_file": str(folder.parent / "train.jsonl"),
                                            "validation_file": str(folder.parent / "test.jsonl"),
                                            "output_dir": str(folder / name)}))
        hulm.main([str(run_file)])
    return folder


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    _data(root, 12)
    return [_study(root / "seed1", 1), _study(root / "seed2", 2)]


def _nll_blocks_2(folder, run, variant):
    arrays = np.load(folder / run / "held_out_scores.npz")
    return arrays[f"nll/{variant}"][arrays["block"] >= 1].mean()


def test_pooled_perplexity_is_the_seed_average(two_seeds):
    report = study_seeds.main([*map(str, two_seeds), "--run", "gate", "--bootstrap_samples", "50"])
    expected = math.exp(np.mean([_nll_blocks_2(f, "baselines", "in_context") for f in two_seeds]))
    assert report["perplexity_blocks_2+"]["in_context"] == pytest.approx(expected)
    single = [math.exp(_nll_blocks_2(f, "baselines", "in_context")) for f in two_seeds]
    assert min(single) <= report["perplexity_blocks_2+"]["in_context"] <= max(single)
    recurrent = math.exp(np.mean([_nll_blocks_2(f, "gate", "recurrent") for f in two_seeds]))
    assert report["perplexity_blocks_2+"]["recurrent"] == pytest.approx(recurrent)
    for key in ("recurrent_minus_in_context", "recurrent_minus_zeroed"):
        low, high = report[key]["ci95"]
        assert low <= high
    assert report["criterion_met"] == (report["recurrent_minus_in_context"]["ci95"][1] < 0
                                       and report["ablation_cost_percent"] >= 3)


def test_seeds_must_have_scored_the_same_tokens(two_seeds, tmp_path):
    _data(tmp_path, 10)  # other held-out authors
    other = _study(tmp_path / "other", 2)
    with pytest.raises(SystemExit, match="scored other tokens"):
        study_seeds.pool([two_seeds[0], other], "gate")
    with pytest.raises(SystemExit, match="no scores of recurrent\\[telepathy\\]"):
        study_seeds.pool([two_seeds[0]], "telepathy")
