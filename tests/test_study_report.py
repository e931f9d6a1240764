"""The state study as run files: each run trained by train/hulm.py from a YAML file, the report comparing the runs
token by token (benchmarks/study_report.py); and the study's own run files name only flags train/hulm.py takes."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmarks import study_report
from hullama.data.synthetic import synthetic_corpus
from hullama.train import hulm
from hullama.train.args import DataArguments, HubArguments, ModelArguments, _ArgumentsParser
from hullama.train.training_args import HuLMTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
TINY = {"scratch_hidden_size": 64, "scratch_layers": 2, "scratch_heads": 2, "scratch_vocab_size": 300,
        "block_size": 32, "max_blocks": 3, "num_train_epochs": 1, "per_device_train_batch_size": 4,
        "eval_strategy": "no", "save_strategy": "no", "seed": 42}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny study: baselines, two mechanisms, the control (state held at U0), and a run scored on other tokens
    (block size 16)."""
    root = tmp_path_factory.mktemp("study")
    frame = synthetic_corpus(16, 8, seed=0)[["user_id", "message_id", "timestamp", "message"]]
    frame = frame.assign(timestamp=frame["timestamp"].astype(str))
    authors = list(dict.fromkeys(frame.user_id))
    for name, keep in (("train", authors[:12]), ("test", authors[12:])):
        frame[frame.user_id.isin(keep)].to_json(root / f"{name}.jsonl", orient="records", lines=True)
    runs = {"baselines": {"variants": "none,in_context"}, "gate": {"variants": "recurrent", "state_mechanism": "gate"},
            "query": {"variants": "recurrent", "state_mechanism": "query"},
            "u0": {"variants": "recurrent", "state_mechanism": "gate", "hold_state_at_initial": True},
            "other_blocks": {"variants": "recurrent", "block_size": 16}}
    for name, settings in runs.items():
        run_file = root / f"{name}.yaml"
        run_file.write_text(yaml.safe_dump({**TINY, "train_file": str(root / "train.jsonl"),
                                            "validation_file": str(root / "test.jsonl"),
                                            "output_dir": str(root / "runs" / name), **settings}))
        hulm.main([str(run_file)])
    return root / "runs"


def test_the_report_compares_runs_on_the_same_tokens(trained, tmp_path):
    study = study_report.main([str(trained / name) for name in ("baselines", "gate", "query")] +
                              ["--output_dir", str(tmp_path), "--bootstrap_samples", "50"])
    assert [row["run"] for row in study["rows"]] == ["gate", "query"]
    for row in study["rows"]:
        own = json.loads((trained / row["run"] / "results.json").read_text())["variants"]
        assert row["perplexity"]["recurrent"]["all"] == pytest.approx(own["recurrent"]["perplexity"])
        zeroed = own["recurrent_zeroed_state"]["by_block"]["2+"]["perplexity"]
        assert row["ablation_cost_percent"] == pytest.approx(100 * (zeroed / own["recurrent"]["by_block"]["2+"][
            "perplexity"] - 1))
        assert set(row["criterion"]) == {"recurrent_beats_in_context", "ablation_cost_at_least_3_percent", "met"}
        assert row["settings"]["state_mechanism"] == row["run"]
    baseline = json.loads((trained / "baselines" / "results.json").read_text())["variants"]
    assert study["rows"][0]["perplexity"]["in_context"]["all"] == pytest.approx(baseline["in_context"]["perplexity"])
    assert "| gate |" in (tmp_path / "study.md").read_text() and (tmp_path / "study.json").is_file()


def test_the_control_splits_recurrent_minus_in_context_into_state_and_schedule(trained, tmp_path, capsys):
    study = study_report.main([str(trained / name) for name in ("baselines", "gate", "query", "u0")] +
                              ["--output_dir", str(tmp_path), "--bootstrap_samples", "50"])
    assert [row["run"] for row in study["rows"]] == ["gate", "query"]  # the control is not a state run
    held = json.loads((trained / "u0" / "results.json").read_text())["variants"]["recurrent_zeroed_state"]["by_block"]
    for row in study["rows"]:
        control = row["control"]
        assert control["run"] == "u0" and control["perplexity"]["blocks_2+"] == pytest.approx(held["2+"]["perplexity"])
        state, schedule = control["state_benefit_blocks_2+"], control["schedule_blocks_2+"]
        assert state["delta_perplexity"] == pytest.approx(
            row["perplexity"]["recurrent"]["blocks_2+"] - held["2+"]["perplexity"])
        # recurrent - in_context = (recurrent - control) + (control - in_context)
        assert state["delta_perplexity"] + schedule["delta_perplexity"] == pytest.approx(
            row["recurrent_minus_in_context"]["delta_perplexity"])
        assert control["state_benefit_block_1"]["num_authors"] == study["num_authors"]
    assert "| gate | u0 |" in (tmp_path / "study.md").read_text()
    capsys.readouterr()
    second = shutil.copytree(trained / "u0", tmp_path / "u0_again")
    with pytest.raises(SystemExit):  # two controls: which one is meant is not clear
        study_report.main([str(trained / name) for name in ("baselines", "gate", "u0")] + [str(second)])
    assert "2 control runs" in capsys.readouterr().err


def test_runs_on_other_tokens_or_without_baselines_are_refused(trained, capsys):
    for runs, message in (((trained / "baselines", trained / "other_blocks"), "different blocks"),
                          ((trained / "gate",), "baselines")):
        with pytest.raises(SystemExit) as exit_info:
            study_report.main([str(run) for run in runs])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_the_studys_run_files_name_only_what_hulm_takes():
    options = _ArgumentsParser((ModelArguments, DataArguments, hulm.HuLMArguments, HubArguments,
                                HuLMTrainingArguments))._option_string_actions
    files = sorted((ROOT / "benchmarks" / "state_study").rglob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        settings = yaml.safe_load(path.read_text())
        assert not [key for key in settings if f"--{key}" not in options], path
        assert settings["output_dir"] == f"outputs/state_study/{path.parent.name}/{path.stem}"
