# RadJEPA Lab — two commands: `make demo` and `make test`.
# Everything runs inside .venv, created on first use.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.radjepa-installed
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: venv demo test test-unit test-notebooks e2e lab bench bench-gpu lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,xrv]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job, headless, on the embedded phantom data; writes runs/demo/index.html
demo: $(STAMP)
	$(PY) -m radjepa_lab demo --out runs/demo

## Unit, reliability, fuzz and browser tests, then every notebook under the smoke profile
test: $(STAMP)
	$(PY) -m pytest tests/ -q -p no:cacheprovider
	RADJEPA_LAB_PROFILE=smoke $(PY) -m pytest --nbmake --nbmake-timeout=600 notebooks/ -q -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest tests/ -q --ignore=tests/e2e

test-notebooks: $(STAMP)
	RADJEPA_LAB_PROFILE=smoke $(PY) -m pytest --nbmake --nbmake-timeout=600 notebooks/ -q

e2e: $(STAMP)
	-bash .ci/install-browser.sh
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/e2e -q -p no:cacheprovider

## JupyterLab on localhost only, with token auth
lab: $(STAMP)
	$(PY) -m jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/phantoms.py
	$(PY) bench/dicom_read.py
	$(PY) bench/throughput.py
	$(PY) bench/memory.py
	$(PY) bench/notebooks.py

bench-gpu:
	bash bench/gpu.sh

lint: $(STAMP)
	$(PY) -m ruff check radjepa_lab tests bench

clean:
	rm -rf runs build *.egg-info .pytest_cache .ruff_cache
