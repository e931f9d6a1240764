"""scripts/real_run_report.py on a tiny real run: HuLM pre-training, perplexity, HuFT, then the tables and the card."""

import json

from huggingface_hub import ModelCard

from hullama.eval import perplexity
from hullama.hub_card import validate_card
from hullama.train import huft, hulm
from scripts.real_run_report import main as report

TINY = ["--synthetic_authors", "16", "--synthetic_messages", "6", "--num_train_epochs", "1", "--scratch_vocab_size",
        "300", "--scratch_hidden_size", "32", "--scratch_layers", "2", "--scratch_heads", "2", "--block_size", "32",
        "--max_blocks", "2", "--report_to", "none", "--save_strategy", "no"]


def test_report_tables_and_card_from_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    hulm.main([*TINY, "--variants", "recurrent,none", "--output_dir", str(run / "hulm")])
    data = tmp_path / "authors.jsonl"
    from hullama.data.synthetic import synthetic_corpus

    synthetic_corpus(6, 6, seed=5).to_json(data, orient="records", lines=True)
    perplexity.main(["--model", str(run / "hulm" / "recurrent"), "--data", str(data), "--block_size", "32",
                     "--bootstrap_samples", "20", "--device", "cpu", "--output_dir", str(run / "perplexity" /
                                                                                          "hulm_synthetic")])
    for context in ("none", "in_context", "recurrent"):
        huft.main([*TINY, "--author_context", context, "--eval_strategy", "epoch", "--save_strategy", "epoch",
                   "--output_dir", str(run / "huft" / "synthetic_stance" / context)])
    (run / "timings.txt").write_text("hulm: 12 s\n")

    notes = tmp_path / "notes.md"
    notes.write_text("Measured on a test machine; author context did not help here.\n")
    text = report(["--run_dir", str(run), "--repo_id", "me/tiny-hulm", "--notes", str(notes)]).read_text()
    assert "| recurrent | " in text and "| none | " in text  # the trained variants on the same tokens
    assert "| hulm | synthetic (" in text and "recurrent_zeroed_state" in text
    assert "| synthetic_stance | weighted_f1 |" in text and "probe stage did not run" in text
    assert "| standard fine-tuning (none) | in_context | HuFT (recurrent, from HuLM) |" in text
    assert "hulm: 12 s" in text
    rows = json.loads((run / "eval_rows.json").read_text())
    huft_values = {r["task_name"]: r["metric_value"] for r in rows if r["dataset_name"] == "synthetic_stance"}
    saved = {c: json.loads((run / "huft" / "synthetic_stance" / c / "metrics.json").read_text())["value"]
             for c in ("none", "in_context", "recurrent")}
    assert huft_values == {f"fine-tuning, {c} author context": round(v, 4) for c, v in saved.items()}
    card = ModelCard.load(run / "hulm" / "recurrent" / "README.md")
    validate_card(card)
    index = card.data.to_dict()["model-index"][0]["results"]
    assert sum(len(r["metrics"]) for r in index) == len(rows)  # every result (grouped by task and dataset)
    assert card.data.to_dict().get("widget")  # the widget examples of the training card are kept
    assert "# tiny-hulm" in card.text and "author context did not help here." in card.text  # under the results
    assert card.text.index("author context did not help") > card.text.index("| Task | Dataset | Split |")
