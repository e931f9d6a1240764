"""Write the unlabelled history tweets of the HaRT files as one author corpus (JSON Lines).

HuLM pre-training and the state study read authors' histories; the labelled tweets stay out, so no downstream
label or test tweet is seen in pre-training. Most labelled authors have no history at all, and a one-tweet author
only adds padding to a block-sized step.

    python scripts/hart_history.py --split train --output outputs/data/hart_history_train.jsonl
    python scripts/hart_history.py --split dev --output outputs/data/hart_history_dev.jsonl   # held-out authors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_HART = Path(__file__).resolve().parents[2] / "shared" / "data" / "hart"
KEPT_COLUMNS = ("user_id", "message_id", "timestamp", "message")


def history_rows(files: list[Path]) -> list[dict]:
    """Rows without a label, once each (a tweet id seen in two files is kept once), in file order."""
    rows, seen = [], set()
    for path in files:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                record = json.loads(line)
                if record.get("label") is not None or record["message_id"] in seen:
                    continue
                seen.add(record["message_id"])
                rows.append({k: record.get(k) for k in KEPT_COLUMNS})
    return rows


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hart_dir", default=str(DEFAULT_HART), help="folder holding the HaRT *_train/_dev files")
    parser.add_argument("--split", default="train", choices=["train", "dev"], help="which files to read")
    parser.add_argument("--output", required=True, help="JSON Lines file to write")
    args = parser.parse_args(argv)
    files = sorted(Path(args.hart_dir).glob(f"*_{args.split}.jsonl"))
    if not files:
        parser.error(f"no *_{args.split}.jsonl files in {args.hart_dir}")
    rows = history_rows(files)
    if args.split == "dev":  # held-out authors only: a few dev authors also wrote in the train files
        train_users = {json.loads(line)["user_id"] for path in Path(args.hart_dir).glob("*_train.jsonl")
                       for line in path.open(encoding="utf-8") if line.strip()}
        rows = [row for row in rows if row["user_id"] not in train_users]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows):,} history tweets of {len({r['user_id'] for r in rows}):,} authors "
          f"from {len(files)} files to {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
