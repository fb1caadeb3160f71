# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast gpu-check system-deps clean

# Debian packages the tests use for real (Open MPI for mpi4py and mpirun, SLURM and munge for the
# cluster tests). Installed only where missing and only as root; elsewhere those tests skip.
system-deps:
	@bash scripts/system_deps.sh

# The CUDA major version the node's NVIDIA driver supports (nvidia-smi's "CUDA Version"): 13 (the
# default, PyPI's torch and nvidia-dali-cuda130) or 12 (torch from PyTorch's CUDA 12.8 index and
# nvidia-dali-cuda120). `make CUDA=12 test`. A run started with the wrong build says so in one line.
CUDA ?= 13
TORCH_INDEX_13 :=
TORCH_INDEX_12 := --index-url https://download.pytorch.org/whl/cu128
TORCH_INDEX ?= $(TORCH_INDEX_$(CUDA))
# One stamp per build: switching CUDA reinstalls torch and DALI.
STAMP := $(VENV)/.installed-cuda$(CUDA)

$(STAMP): pyproject.toml
	@case "$(CUDA)" in 12|13) ;; *) echo "CUDA=$(CUDA): choose 12 or 13" >&2; exit 2;; esac
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, pinned as a pair (PyPI's torchvision fails beside other torch builds).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 $(TORCH_INDEX)
	# One DALI build only: the other one's files would overwrite it (same nvidia.dali module).
	$(PY) -m pip uninstall -q -y nvidia-dali-cuda$(if $(filter 12,$(CUDA)),130,120) 2>/dev/null || true
	$(PY) -m pip install -q -e '.[test,cuda$(CUDA)]'
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
