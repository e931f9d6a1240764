"""The main job exactly as `make demo` runs it (defaults, embedded synthetic corpus): about 6 minutes on 2 cores."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_job_saves_outputs_and_recurrent_beats_none(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train" / "hulm.py"), "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out perplexity" in done.stdout
    for variant in ("recurrent", "none"):
        assert (tmp_path / variant / "model.safetensors").is_file()
        assert (tmp_path / variant / "modeling_hullama.py").is_file()
    assert (tmp_path / "recurrent" / "README.md").is_file()
    results = json.loads((tmp_path / "results.json").read_text())
    comparison = next(c for c in results["comparisons"] if (c["a"], c["b"], c["tokens"]) == ("recurrent", "none", "all"))
    assert comparison["delta_perplexity"] < 0 and comparison["ci95"][1] < 0, comparison
