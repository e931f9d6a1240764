"""benchmarks/study_seeds.py on two real tiny studies that differ only in their seed."""

import math

import numpy as np
import pytest
from test_study_state import TINY

from benchmarks import study_seeds, study_state

RUN = "recurrent-gate-stagger-learnrec-normupd"


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """The synthetic study, and the same study (its train / test files) trained from another seed."""
    first, second = tmp_path_factory.mktemp("seed1"), tmp_path_factory.mktemp("seed2")
    study_state.main([*TINY, "--mechanisms", "gate", "--seed", "1", "--output_dir", str(first)])
    study_state.main([*TINY, "--mechanisms", "gate", "--seed", "2", "--data", "files",
                      "--train_file", str(first / "data" / "train.jsonl"),
                      "--test_file", str(first / "data" / "test.jsonl"), "--output_dir", str(second)])
    return [first, second]


def _nll_blocks_2(folder, run, key):
    arrays = np.load(folder / "runs" / run / "study_scores.npz")
    return arrays[key][arrays["block"] >= 1].mean()


def test_pooled_perplexity_is_the_seed_average(two_seeds):
    report = study_seeds.main([*map(str, two_seeds), "--run", RUN, "--bootstrap_samples", "50"])
    expected = math.exp(np.mean([_nll_blocks_2(f, "in_context", "nll/in_context") for f in two_seeds]))
    assert report["perplexity_blocks_2+"]["in_context"] == pytest.approx(expected)
    single = [math.exp(_nll_blocks_2(f, "in_context", "nll/in_context")) for f in two_seeds]
    assert min(single) <= report["perplexity_blocks_2+"]["in_context"] <= max(single)
    for key in ("recurrent_minus_in_context", "recurrent_minus_zeroed"):
        low, high = report[key]["ci95"]
        assert low <= high
    assert report["criterion_met"] == (report["recurrent_minus_in_context"]["ci95"][1] < 0
                                       and report["ablation_cost_percent"] >= 3)


def test_seeds_must_have_scored_the_same_tokens(two_seeds, tmp_path):
    other = tmp_path / "other"  # the synthetic corpus split by another seed: other held-out authors
    study_state.main([*TINY, "--mechanisms", "gate", "--seed", "2", "--output_dir", str(other)])
    with pytest.raises(SystemExit, match="scored other tokens"):
        study_seeds.pool([two_seeds[0], other], RUN)
    with pytest.raises(SystemExit, match="is missing"):
        study_seeds.pool([two_seeds[0]], "recurrent-telepathy")
