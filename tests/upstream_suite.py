"""transformers' own model test suite (`ModelTesterMixin`, `ConfigTester`), from the installed release's sdist.

The suite ships in transformers' source distribution, not in its wheel. `python tests/upstream_suite.py` (run by the
make test targets, like an install step) downloads the sdist of the installed version once with pip and lays out its
two common test files as a package in a cache outside the repository. The tests import it from there and skip, with
the command to run, where it is absent: a test run itself never downloads anything.

The sdist lacks three folders those files import from: `tests/generation/` and `tests/exporters/` (two further
mixins, not run here: HuLlama's own generation tests stand in for the first) and `tests/utils/` (a dict of common
config keyword arguments for `ConfigTester`). Each is replaced by a small module written here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "transformers_common_tests"
UPSTREAM_FILES = ("test_modeling_common.py", "test_configuration_common.py")
STAND_INS = {
    "exporters/test_export.py": '"""Stand-in: the sdist lacks tests/exporters/; export tests are not run."""\n\n\n'
                                "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": '"""Stand-in: the sdist lacks tests/generation/; HuLlama tests its generation itself."""'
                                "\n\n\nclass GenerationTesterMixin:\n    pass\n",
    # Our own choice of common config arguments (ConfigTester checks that each is set as given).
    "utils/test_configuration_utils.py": '"""Stand-in: the sdist lacks tests/utils/."""\n\n'
                                         "config_common_kwargs = {\n"
                                         '    "return_dict": False,\n'
                                         '    "output_hidden_states": True,\n'
                                         '    "dtype": "float16",\n'
                                         '    "tie_word_embeddings": False,\n'
                                         '    "problem_type": "single_label_classification",\n'
                                         '    "id2label": {0: "against", 1: "favor"},\n'
                                         '    "label2id": {"against": 0, "favor": 1},\n'
                                         '    "pad_token_id": 3,\n'
                                         '    "bos_token_id": 2,\n'
                                         '    "eos_token_id": 1,\n'
                                         "}\n",
}


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hullama" / "transformers-tests"
    return Path(os.environ.get("HULLAMA_TRANSFORMERS_TESTS", default))


def installed_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def suite_dir(version: str | None = None) -> Path:
    """The folder that holds the package `transformers_common_tests` for this transformers version."""
    return cache_root() / (version or installed_version())


def fetch(version: str | None = None) -> Path:
    """Download (once) and lay out the common suite of `version` (default: the installed one); returns its folder."""
    version = version or installed_version()
    target = suite_dir(version)
    if (target / PACKAGE / UPSTREAM_FILES[0]).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        scratch = Path(scratch)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-binary", ":all:", f"transformers=={version}", "-d", str(scratch / "sdist")], check=True)
        (sdist,) = (scratch / "sdist").glob("transformers-*.tar.gz")
        package = scratch / "layout" / PACKAGE
        package.mkdir(parents=True)
        with tarfile.open(sdist) as archive:
            for name in UPSTREAM_FILES:
                source = archive.extractfile(f"transformers-{version}/tests/{name}")
                (package / name).write_bytes(source.read())
        (package / "__init__.py").write_text(f'"""transformers {version}: tests/ of its sdist (see tests/upstream_suite.py)."""\n')
        for relative, text in STAND_INS.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        if target.exists():  # a half-written earlier attempt
            shutil.rmtree(target)
        (scratch / "layout").rename(target)
    return target


if __name__ == "__main__":
    print(f"transformers' common model tests: {fetch()}")
