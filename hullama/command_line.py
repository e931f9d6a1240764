"""Command-line helpers every HuLlama script shares: the one-line user error, and dataclass arguments parsed with
transformers' HfArgumentParser without abbreviations, repeated flags or tracebacks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from transformers import HfArgumentParser


class ArgumentError(ValueError):
    """A bad argument: the scripts print it as one line and exit with status 2."""


class OneLineErrors:
    """An argparse parser's errors as one line, `prog: error: message`, exit status 2 (no usage block)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class OneLineArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse for the benchmark and study scripts: no abbreviated flags (`--batch 8` is not `--batch_size 8`), and
    one-line errors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)


class DataclassArgumentParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser for HuLlama's evaluation commands: the flags and their help come from dataclasses (as for
    training), no flag is abbreviated (`--batch 8` is not `--batch_size 8`), a flag given twice is refused rather
    than the last one silently kept, and an error is one line, `prog: error: message`, exit status 2."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def parse(self, argv: Sequence[str] | None = None) -> tuple:
        """The command line (default: sys.argv) as one instance of each dataclass."""
        argv = list(sys.argv[1:] if argv is None else argv)
        seen: dict[str, str] = {}
        for token in argv:
            action = self._option_string_actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
            if action is not None and action.dest in seen:
                self.error(f"{action.option_strings[0]} is given twice ({seen[action.dest]} and {token}): give it once, "
                           "with every value after it")
            if action is not None:
                seen[action.dest] = token
        try:
            return self.parse_args_into_dataclasses(args=argv)
        except ValueError as error:
            unused = str(error).partition("not used by the HfArgumentParser: ")[2]
            if unused:
                self.error(f"unknown arguments {unused}: spell every argument out in full")
            raise


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
