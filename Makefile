# Two commands matter to a newcomer: `make demo` and `make test`. Both install what they need into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-gpu bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch is on disk on our machines; pinning it first keeps pip from pulling CUDA wheels.
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[test,gpu]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m auditor.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu" tests

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu tests

bench: $(STAMP)
	$(BIN)/python -m auditor.bench

lint: $(STAMP)
	$(BIN)/ruff check auditor rules reference_model tests
	$(BIN)/ruff format --check auditor rules reference_model tests

clean:
	rm -rf $(VENV) build *.egg-info
