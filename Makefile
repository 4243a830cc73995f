# snnlib: every result from the notebooks, every figure from the results.
#   make reproduce            run every notebook at cpu scale (SCALE=smoke|cpu|full|paper)
#   make data                 install or download the datasets the scale needs (reproduce and test do it)
#   make test                 unit tests + the notebooks under nbval (smoke defaults)
#   make lab                  JupyterLab on the notebooks
#   make bench                speed and memory against SpikingJelly, snnTorch and Norse
#   make site                 static results site (report, executed notebooks, figures) in build/site
#   make interop              NIR export/import, checked against Norse and snnTorch
SCALE ?= cpu
# Where run_many trains: inline (this process) | local (subprocesses) | slurm | submitit-local
EXECUTOR ?= $(or $(SNNLIB_EXECUTOR),inline)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.snnlib-installed
BENCH_STAMP := $(VENV)/.snnlib-bench-installed

# Quiet OpenMP threads: spinning workers make 2-core steps erratic (see shared bench notes).
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONHASHSEED ?= 0
export MPLBACKEND ?= Agg

.PHONY: all install data test-data reproduce test test-unit test-notebooks lab bench interop site clean-results strip

all: reproduce

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (snnlib)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

# The datasets a scale needs: present -> nothing to do; else the Debian package (root with apt-get),
# else a download; otherwise it stops with what is missing and how to get it.
data: $(STAMP)
	$(PY) -m snnlib data --scale $(SCALE)

test-data: $(STAMP)
	$(PY) -m snnlib data --scale smoke

reproduce: data
	SNNLIB_EXECUTOR=$(EXECUTOR) $(PY) -m snnlib reproduce --scale $(SCALE)

test: test-unit test-notebooks

test-unit: test-data
	$(PY) -m pytest -q

test-notebooks: test-data
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks/

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

$(BENCH_STAMP): $(STAMP)
	-$(PY) -m pip install --disable-pip-version-check -q -e ".[bench]" || echo "some peer frameworks failed to install; the benchmark reports and skips them"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m snnlib.bench

# NIR round trips and a trained Fashion-MNIST net run by Norse and snnTorch through a .nir file.
interop: $(BENCH_STAMP)
	$(PY) -m pytest -q -rs tests/test_nir.py

# Static results site from the committed files (README, report, executed notebooks, figures,
# benchmark tables) into build/site; open build/site/index.html or serve it on 127.0.0.1.
site: $(STAMP)
	$(PY) -m snnlib.pipeline.publish site --scale $(SCALE) --out build/site

# Remove outputs from notebooks before committing them.
strip: $(STAMP)
	$(PY) -m snnlib.experiments.nbtools strip notebooks/*.ipynb

clean-results:
	rm -rf results
