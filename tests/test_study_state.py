"""benchmarks/study_state.py end to end on a tiny synthetic study: training, scoring, the report, and reuse."""

import json

import pytest

from benchmarks import study_state

TINY = ["--data", "synthetic", "--synthetic_authors", "12", "--synthetic_messages", "6", "--synthetic_test_fraction",
        "0.25", "--hidden_size", "64", "--layers", "2", "--vocab_size", "300", "--block_size", "32", "--max_blocks", "2",
        "--num_train_epochs", "1", "--logging_steps", "1", "--mechanisms", "query,gate", "--bootstrap_samples", "50",
        "--device", "cpu"]


def _ppl_cell(cell):
    return set(cell) == {"all", "block_1", "blocks_2+"} and all(v is None or v > 1 for v in cell.values())


def test_study_end_to_end_and_reuse(tmp_path, capsys):
    argv = [*TINY, "--output_dir", str(tmp_path)]
    study = study_state.main(argv)
    assert json.loads((tmp_path / "study.json").read_text()) == json.loads(json.dumps(study))
    markdown = (tmp_path / "study.md").read_text()
    query, gate = "recurrent[query,stagger,learnrec,normupd]", "recurrent[gate,stagger,learnrec,normupd]"
    assert f"| {query} |" in markdown and f"| {gate} |" in markdown
    assert f"| {gate} |" in capsys.readouterr().out

    assert set(study) == {"settings", "data", "machine", "scoring", "mechanisms", "runs", "perplexity"}
    assert set(study["runs"]) == {"none", "in_context", "recurrent-query-stagger-learnrec-normupd",
                                  "recurrent-gate-stagger-learnrec-normupd"}
    n_tokens = study["scoring"]["num_tokens"]
    assert n_tokens > 0 and study["scoring"]["num_authors"] == 3
    for name, run in study["runs"].items():
        assert run["num_tokens_scored"] == n_tokens, name  # every run scored the same tokens
        assert not run["reused"] and run["wall_seconds"] > 0
        budget = run["budget"]
        assert budget["steps"] >= 1 and budget["epochs"] == pytest.approx(1.0)
        assert budget["predicted_tokens"] == study["runs"]["in_context"]["budget"]["predicted_tokens"]
    assert study["runs"]["recurrent-gate-stagger-learnrec-normupd"]["scored_variants"] == [
        "recurrent[gate,stagger,learnrec,normupd]", "recurrent[gate,stagger,learnrec,normupd]_zeroed_state"]
    assert set(study["perplexity"]["variants"]) == {
        "none", "in_context", query, f"{query}_zeroed_state", gate, f"{gate}_zeroed_state"}

    assert [m["label"] for m in study["mechanisms"]] == [query, gate]
    for m in study["mechanisms"]:
        assert set(m["perplexity"]) == {"none", "in_context", "recurrent", "recurrent_zeroed_state"}
        assert all(_ppl_cell(cell) for cell in m["perplexity"].values())
        for key in ("recurrent_minus_in_context", "recurrent_minus_zeroed"):
            low, high = m[key]["ci95"]
            assert low <= high and m[key]["num_authors"] == 3
        assert isinstance(m["ablation_cost_percent"], float)
        criterion = m["criterion"]
        assert set(criterion) == {"recurrent_beats_in_context", "ablation_cost_at_least_3_percent", "met"}
        assert all(type(v) is bool for v in criterion.values())
        assert criterion["met"] == (criterion["recurrent_beats_in_context"]
                                    and criterion["ablation_cost_at_least_3_percent"])
        state = m["state"]
        assert 0 < state["state_abs_mean_held_out"] < 1 and 0 < state["state_abs_mean_end_of_training"] < 1
        assert state["injection_norm_held_out"] >= 0 and state["injection_norm_end_of_training"] >= 0
    assert study["machine"]["torch"] and study["machine"]["platform"]

    # A second call reuses every run (no training) and its cached scores: the same numbers.
    again = study_state.main(argv)
    assert all(run["reused"] for run in again["runs"].values())
    assert again["mechanisms"] == study["mechanisms"]

    # A finished run trained with other arguments is never silently reused.
    with pytest.raises(SystemExit) as exit_info:
        study_state.main([*argv, "--learning_rate", "0.01"])
    assert exit_info.value.code == 2
    assert "--learning_rate: (unset) -> 0.01" in capsys.readouterr().err


def test_pools_name_their_runs_and_runs_train_just_those(tmp_path, capsys):
    from configuration_hullama import HuLlamaConfig
    from hullama.train.hulm import HuLMArguments

    assert HuLMArguments().author_pool == study_state.DEFAULT_POOL and HuLMArguments().stagger_authors
    assert HuLMArguments().learn_recurrence and HuLlamaConfig().normalize_state_update  # the study's defaults too
    argv = [*TINY, "--mechanisms", "gate", "--author_pool", f"0,{study_state.DEFAULT_POOL}", "--stagger_authors",
            "false", "--output_dir", str(tmp_path)]
    trained = study_state.main([*argv, "--runs", "recurrent-gate-pool0-learnrec-normupd", "--train_only"])
    assert trained == {"trained": ["recurrent-gate-pool0-learnrec-normupd"]}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["recurrent-gate-pool0-learnrec-normupd"]
    record = json.loads((tmp_path / "runs" / "recurrent-gate-pool0-learnrec-normupd" / "study_run.json").read_text())
    flags = record["fingerprint"]["flags"]
    assert record["finished"] and flags["--author_pool"] == "0"
    assert flags["--learn_recurrence"] == flags["--normalize_state_update"] == "true"  # explicit: defaults may change
    with pytest.raises(SystemExit):
        study_state.main([*argv, "--runs", "recurrent-telepathy"])
    assert "--runs recurrent-telepathy: not a run of this study" in capsys.readouterr().err


def test_bad_arguments(capsys, tmp_path):
    for argv, message in ((["--mechanisms", "telepathy"], "--mechanisms: telepathy unknown"),
                          (["--layouts", "upside-down"], "--layouts: upside-down unknown"),
                          (["--stagger_authors", "maybe"], "--stagger_authors"),
                          (["--learn_recurrence", "often"], "--learn_recurrence"),
                          (["--author_draw", "sideways"], "--author_draw: sideways unknown"),
                          (["--train_file", str(tmp_path / "nope.jsonl")], "no such file")):
        with pytest.raises(SystemExit) as exit_info:
            study_state.main([*argv, "--output_dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
