# Two commands make the quick start: `make demo` (train the default HuLM job) and `make test`.
# Every target runs in a virtual environment inside the checkout ($(VENV)), installed from the lock file
# (requirements/lock.txt: the exact versions the test suite passed with), so nothing is installed into the system
# Python. torch is pinned and installed in the same pip command as everything else, so that pip never swaps in a
# multi-GB CUDA build to satisfy peft or accelerate.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
# Constraints for the install; `make install LOCK=` resolves to the newest releases within setup.cfg's ranges.
LOCK ?= requirements/lock.txt
PY := $(VENV)/bin/python
# The tests of the Hub code (the two modules a model repo ships), run on more than one transformers release in CI;
# transformers' own common model tests are run on their own first, so that their counts stand in the log.
UPSTREAM_SUITE := tests/test_transformers_suite.py
HUB_TESTS := tests/test_transformers_versions.py tests/test_generation.py tests/test_model_contract.py \
	tests/test_parity.py tests/test_remote_code.py tests/test_state.py tests/test_mechanisms.py tests/test_pipelines.py \
	tests/test_quantized.py tests/test_config.py
MIN_TRANSFORMERS := $(shell sed -n 's/^MIN_TRANSFORMERS_VERSION = "\(.*\)"/\1/p' configuration_hullama.py)

.PHONY: install upstream-suite test test-slow test-hub test-hub-oldest demo bench lock

# Reinstalled whenever the package's requirements or the lock change.
$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(if $(LOCK),-c $(LOCK)) "$(TORCH)" -e ".[train,dev]"
	touch $@

install: $(VENV)/.installed

# transformers' common model tests ship in its sdist only: fetched once per release into ~/.cache/hullama (pip).
upstream-suite: install
	$(PY) tests/upstream_suite.py

# One torch thread per process: tests run tiny models (where threads only add overhead) and subprocesses.
test: install upstream-suite
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-slow: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

test-hub: install upstream-suite
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -rs $(UPSTREAM_SUITE)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(HUB_TESTS)

# One torch thread: float sums depend on the thread count, so this pins the numbers the README shows. A second
# `make demo` replaces the first one's outputs/hulm (asked for by running the demo again).
demo: install
	OMP_NUM_THREADS=1 $(PY) -m accelerate.commands.launch --num_processes 1 train/hulm.py --overwrite_output_dir

bench: install
	$(PY) benchmarks/bench_model.py

# Regenerate the lock: a fresh environment at the newest releases within setup.cfg's ranges (torch pinned), the
# whole default suite on it, and only then its exact versions written to the lock.
lock:
	rm -rf .venv-lock
	$(MAKE) install VENV=.venv-lock LOCK=
	OMP_NUM_THREADS=1 .venv-lock/bin/python -m pytest -q
	{ echo "# The exact versions the test suite passed with (written by 'make lock'; pip constraints)."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
	    | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > requirements/lock.txt
	rm -rf .venv-lock

# The Hub code on the oldest transformers release setup.cfg admits (CI runs it beside the locked suite).
test-hub-oldest:
	$(MAKE) install VENV=.venv-oldest
	.venv-oldest/bin/python -m pip install --quiet --disable-pip-version-check "transformers==$(MIN_TRANSFORMERS)"
	$(MAKE) test-hub VENV=.venv-oldest
