# Two commands make the quick start: `make demo` (train the default HuLM job) and `make test`.
# torch is pinned and installed in the same pip command as everything else, so that pip never
# swaps in a multi-GB CUDA build to satisfy peft or accelerate.
PYTHON ?= python3
TORCH ?= torch==2.13.0

.PHONY: install test test-slow demo bench

install:
	$(PYTHON) -m pip install --quiet "$(TORCH)" -e ".[train,dev]"

# One torch thread per process: tests run tiny models (where threads only add overhead) and subprocesses.
test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q

test-slow: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m slow

demo: install
	$(PYTHON) -m accelerate.commands.launch --num_processes 1 train/hulm.py

bench: install
	$(PYTHON) benchmarks/bench_model.py
