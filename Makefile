# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast gpu-check system-deps clean

# Debian packages the tests use for real (Open MPI for mpi4py and mpirun, SLURM and munge for the
# cluster tests). Installed only where missing and only as root; elsewhere those tests skip.
system-deps:
	@bash scripts/system_deps.sh

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, pinned as a pair (PyPI's torchvision fails beside other torch builds).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mmdist.train --config configs/demo.yaml output_dir=runs/demo

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Everything except the slow and cluster checks (for a quick loop while developing).
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow and not slurm" $(PYTEST_ARGS)

# GPU acceptance (mmdist/gpucheck): the project as it is, with the machine's own Python and torch
# (>= 2.11); no venv, no install, no download. At most six minutes on one GPU; a table and
# DIR/gpucheck.json (written row by row). Exit 0 passed, 1 a row FAILED, 3 nothing verified (no GPU).
GPUCHECK_OUT ?= runs/gpucheck
gpu-check:
	PYTHONPATH=. $(PYTHON) -m mmdist.gpucheck --out $(GPUCHECK_OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache
