"""scripts/hart_history.py: the unlabelled history tweets of the HaRT files as one author corpus."""

import json

import pytest

from hullama.data.corpus import load_corpus
from scripts.hart_history import main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_history_rows_only_once_each_and_dev_keeps_held_out_authors(tmp_path):
    hart = tmp_path / "hart"
    hart.mkdir()
    row = dict(timestamp=None, target="Atheism")
    _write(hart / "abo_train.jsonl", [
        dict(row, message_id=1, user_id=10, message="old news", label=None),
        dict(row, message_id=2, user_id=10, message="labelled", label="favor"),
    ])
    _write(hart / "ath_train.jsonl", [dict(row, message_id=1, user_id=10, message="old news", label=None),
                                      dict(row, message_id=3, user_id=11, message="hello", label=None)])
    _write(hart / "abo_dev.jsonl", [dict(row, message_id=4, user_id=10, message="train author", label=None),
                                    dict(row, message_id=5, user_id=12, message="held out", label=None),
                                    dict(row, message_id=6, user_id=12, message="its label", label="none")])
    train = main(["--hart_dir", str(hart), "--output", str(tmp_path / "train.jsonl")])
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert [r["message"] for r in rows] == ["old news", "hello"]
    assert set(rows[0]) == {"user_id", "message_id", "timestamp", "message"}
    dev = main(["--hart_dir", str(hart), "--split", "dev", "--output", str(tmp_path / "dev.jsonl")])
    assert [json.loads(line)["message"] for line in dev.read_text().splitlines()] == ["held out"]
    assert load_corpus(dev, task="lm").authors == ["12"]


def test_no_files_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--hart_dir", str(tmp_path), "--output", str(tmp_path / "x.jsonl")])
    assert "no *_train.jsonl files in" in capsys.readouterr().err
