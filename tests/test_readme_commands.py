"""Every command README.md shows names things that exist: each `make` target, console command, script, accelerate
config and flag. Run for real elsewhere: `make test` and `make demo` by CI, the Python block by test_docs_code, the
training and evaluation commands' behaviour by their own tests; here, nothing in the README can drift from the code."""

import importlib
import re
import shlex
from configparser import ConfigParser
from pathlib import Path

from hullama.eval.commands import perplexity_parser, probe_parser, tasks_parser
from hullama.train.args import DataArguments, HubArguments, ModelArguments, _ArgumentsParser
from hullama.train.huft import HuFTArguments
from hullama.train.hulm import HuLMArguments
from hullama.train.training_args import HuFTTrainingArguments, HuLMTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def console_scripts() -> dict[str, str]:
    config = ConfigParser()
    config.read(ROOT / "setup.cfg")
    entries = [line.split("=") for line in config["options.entry_points"]["console_scripts"].strip().splitlines()]
    return {name.strip(): target.strip() for name, target in entries}


def _options(parser) -> set[str]:
    return set(parser._option_string_actions)


def known_flags() -> dict[str, set[str]]:
    """Every flag each script takes, from its own parser."""
    return {
        "train/hulm.py": _options(_ArgumentsParser((ModelArguments, DataArguments, HuLMArguments, HubArguments,
                                                    HuLMTrainingArguments))),
        "train/huft.py": _options(_ArgumentsParser((ModelArguments, DataArguments, HuFTArguments, HubArguments,
                                                    HuFTTrainingArguments))),
        "eval/perplexity.py": _options(perplexity_parser()),
        "eval/probe.py": _options(probe_parser()),
        "eval/tasks.py": _options(tasks_parser()),
    }


def test_every_readme_command_names_what_exists():
    scripts = console_scripts()
    # the file each command runs as (the same arguments), and its entry point, which must exist
    as_file = {"hullama-train": "train/hulm.py", "hullama-finetune": "train/huft.py",
               "hullama-perplexity": "eval/perplexity.py", "hullama-probe": "eval/probe.py"}
    assert set(scripts) == set(as_file)
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    flags = known_flags()
    make_targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    checked = 0
    for command in readme_commands():
        if command[0] == "make":
            assert set(command[1:]) <= make_targets, command
            continue
        if command[0] == "pip":
            continue
        if command[0] in scripts:
            script, args = as_file[command[0]], command[1:]
        else:  # python / accelerate launch / torchrun: the script is the first .py argument
            at = next(i for i, token in enumerate(command) if token.endswith(".py"))
            script, args = command[at], command[at + 1:]
            if "--config_file" in command[:at]:
                assert (ROOT / command[command.index("--config_file") + 1]).is_file(), command
        assert (ROOT / script).is_file(), command
        assert script in flags, f"no flag list for {script}"
        unknown = [a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in flags[script]]
        assert not unknown, f"{' '.join(command)}: {unknown} not taken by {script}"
        checked += 1
    assert checked >= 12
