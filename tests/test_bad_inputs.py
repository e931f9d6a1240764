"""Every bad or hostile input of scripts/bad_inputs.py gets what its case promises: one line naming the input and exit
status 2 (a ValueError from the Python API), or the handling the case names; code in a model folder runs only with
--trust_remote_code (a marker file the code would write must not appear otherwise). docs/bad_inputs.md is the table
of what each input gets, written by the same script."""

import hashlib
from pathlib import Path

import pytest

from scripts import bad_inputs
from scripts.bad_inputs import CASES, TINY, run_case, verdict


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_what_its_case_promises(case, tmp_path):
    outcome = run_case(case, tmp_path)
    ok, answer = verdict(case, outcome)
    assert ok, f"{case.what}: exit {outcome.exit_code}, {answer}\n" + "\n".join(outcome.stderr[-5:])


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_second_run_leaves_every_file_of_the_first_unchanged(tmp_path):
    from hullama.train import hulm

    argv = [*TINY, "--output_dir", str(tmp_path / "out")]
    hulm.main(argv)
    before = _hashes(tmp_path / "out")
    assert "run_args.json" in before and "results.json" in before and "recurrent/README.md" in before
    with pytest.raises(SystemExit) as refused:
        hulm.main([*argv, "--learning_rate", "0.01"])
    assert refused.value.code == 2
    assert _hashes(tmp_path / "out") == before
    hulm.main([*argv, "--overwrite_output_dir", "--learning_rate", "0.01"])  # asked for: replaced
    after = _hashes(tmp_path / "out")
    assert after["run_args.json"] != before["run_args.json"]


def test_a_base_inside_the_output_folder_is_left_intact(tmp_path):
    from hullama.train import hulm

    base = bad_inputs.tiny_llama(tmp_path / "out", "hullama-base")
    before = _hashes(base)
    with pytest.raises(SystemExit) as refused:
        hulm.main(["--base_model", str(base), *TINY, "--output_dir", str(tmp_path / "out")])
    assert refused.value.code == 2
    assert _hashes(base) == before and "model.safetensors" in before
