# snnlib: every result from the notebooks, every figure from the results.
#   make reproduce            run every notebook at cpu scale (SCALE=smoke|cpu|paper)
#   make test                 unit tests + the notebooks under nbval (smoke defaults)
#   make lab                  JupyterLab on the notebooks
#   make bench                speed and memory against SpikingJelly, snnTorch and Norse
SCALE ?= cpu
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.snnlib-installed
BENCH_STAMP := $(VENV)/.snnlib-bench-installed

# Quiet OpenMP threads: spinning workers make 2-core steps erratic (see shared bench notes).
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONHASHSEED ?= 0
export MPLBACKEND ?= Agg

.PHONY: all install reproduce test test-unit test-notebooks lab bench clean-results strip

all: reproduce

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (snnlib)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m snnlib reproduce --scale $(SCALE)

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest -q

test-notebooks: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks/

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

$(BENCH_STAMP): $(STAMP)
	-$(PY) -m pip install --disable-pip-version-check -q -e ".[bench]" || echo "some peer frameworks failed to install; the benchmark reports and skips them"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m snnlib.bench

# Remove outputs from notebooks before committing them.
strip: $(STAMP)
	$(PY) -m snnlib.experiments.nbtools strip notebooks/*.ipynb

clean-results:
	rm -rf results
