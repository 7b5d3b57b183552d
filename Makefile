# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
BSTAMP := $(VENV)/.installed-bench

.PHONY: demo test fuzz bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(TSTAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(BSTAMP): pyproject.toml $(TSTAMP)
	$(PY) -m pip install -q -e '.[bench]' || echo "bench: optional peers (jax, pytensor) could not be installed; they will be skipped"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/graphnn demo

test: $(TSTAMP)
	@# the browser tests drive Debian's chromium; install it when we can (root), else they skip
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
		|| echo "note: chromium could not be installed; browser tests will be skipped"; fi
	$(PY) -m pytest -q -ra

# the fuzz tests (marker `fuzz`) with their large budget: over 10,000 hostile cases
fuzz: $(TSTAMP)
	GRAPHNN_FUZZ=large $(PY) -m pytest -q -ra -m fuzz

bench: $(BSTAMP)
	@# some machines force an older OpenBLAS core (OPENBLAS_CORETYPE, with OPENBLAS_L2_SIZE)
	@# for old builds; numpy's current OpenBLAS then runs at half speed: unset both for the
	@# benchmark alone (bench/run.py prints and records the kernel it ran)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
