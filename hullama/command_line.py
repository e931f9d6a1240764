"""Command-line helpers every HuLlama script shares: the one-line user error, and argparse without abbreviations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class ArgumentError(ValueError):
    """A bad argument: the scripts print it as one line and exit with status 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for the evaluation and study scripts: no abbreviated flags (`--batch 8` is not `--batch_size 8`),
    and an error is one line, `prog: error: message`, exit status 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def check_common_args(parser: argparse.ArgumentParser, args, counts: tuple[str, ...]) -> None:
    """What the evaluation scripts share: counts that must be at least 1, an --output_dir that is not a file."""
    for name in counts:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} is invalid: it must be at least 1")
    if getattr(args, "block_size", None) is not None and args.block_size < 2:
        parser.error(f"--block_size {args.block_size} is invalid: it must be at least 2")
    output_dir = getattr(args, "output_dir", None)
    if output_dir is not None:  # checked now, not once the evaluation has run
        blocked = next((f for f in (Path(output_dir), *Path(output_dir).parents) if f.exists()), None)
        if blocked is not None and not blocked.is_dir():
            parser.error(f"--output_dir {output_dir}: {blocked} is a file, not a folder")
    if getattr(args, "seed", None) is not None and args.seed < 0:
        parser.error(f"--seed {args.seed} is invalid: it must be 0 or more")
    device = getattr(args, "device", None)
    if device is not None:
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            parser.error(f"--device {device!r} is not a device torch knows (cpu, cuda, cuda:1, mps, ...)")
        if kind == "cuda" and not torch.cuda.is_available():
            parser.error(f"--device {device}: this torch has no CUDA device (it is a CPU build or none is visible)")
