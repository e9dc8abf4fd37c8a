# One-command set-up on a fresh machine: `make demo` and `make test` create .venv and install
# everything they need (core + every architecture plugin + kernels + transport servers, editable).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
PLUGINS := $(wildcard architectures/*/pyproject.toml)
# the third-party kit's worked plugin, installed like one (tests/test_kit_gpt2.py runs its own tests)
KIT_PLUGIN := plugins/example-gpt2
SERVERS := $(wildcard servers/*/pyproject.toml)
# MII Legacy's task plugins (mii_core.legacy)
TASK_PLUGINS := $(wildcard plugins/tasks-*/pyproject.toml)
MODEL ?=
DEMO_MODEL_DIR ?= demo-model
PYTEST_ARGS ?=
# pytest-xdist workers (CI has 2 cores; each worker peaks near 4 GB). --dist loadfile keeps a test file on one
# worker, so its module fixtures (pipelines, deployments) are built once. TEST_WORKERS=0: one process.
# Tests marked `alone` (a race against the clock that a busy neighbour can lose) run afterwards, by themselves.
TEST_WORKERS ?= 2

.PHONY: install demo test clean

install: $(STAMP)

# On a machine without a working NVIDIA driver the CPU build of torch goes in first, so that the
# plain `torch` requirement of the packages is already met and pip never pulls the CUDA wheels.
$(STAMP): pyproject.toml kernels/pyproject.toml $(PLUGINS) $(KIT_PLUGIN)/pyproject.toml $(SERVERS) \
		$(TASK_PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "setuptools>=68" wheel
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA driver found: installing torch with CUDA"; $(PIP) install -q torch; \
	else \
		echo "no CUDA driver: installing the CPU build torch==2.13.0"; $(PIP) install -q torch==2.13.0; \
	fi
	$(PIP) install -q --no-build-isolation -e ".[test,compressed-tensors]" -e kernels $(addprefix -e ,$(dir $(PLUGINS))) \
		$(addprefix -e ,$(dir $(SERVERS))) $(addprefix -e ,$(dir $(TASK_PLUGINS))) -e $(KIT_PLUGIN)
	touch $(STAMP)

demo: install
	$(PY) scripts/demo.py $(if $(MODEL),--model "$(MODEL)",--build-tiny "$(DEMO_MODEL_DIR)")

# the parallel run's kernel tests record their Triton launches here, and an `alone` test compiles them for sm_90
LAUNCH_DIR := .triton-launches

test: install
	rm -rf $(LAUNCH_DIR)
	MII_TRITON_LAUNCH_DIR=$(abspath $(LAUNCH_DIR)) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not alone" $(PYTEST_ARGS)
	MII_TRITON_LAUNCH_DIR=$(abspath $(LAUNCH_DIR)) $(PY) -m pytest -q -m alone $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_MODEL_DIR) .pytest_cache $(LAUNCH_DIR)
