# The two commands of the README: `make demo` and `make test`.
# Each creates .venv if missing, installs torch==2.13.0 explicitly (a CPU
# build; an unpinned torch would pull a multi-GB CUDA build), then the package.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vqaudio-installed

.PHONY: demo test lint setup system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,eval]"
	touch $(STAMP)

setup: $(STAMP)

# espeak-ng makes the synthetic speech corpus; installed when we may (root + apt).
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && apt-get install -y -q espeak-ng) >/dev/null; \
	  else echo "note: espeak-ng not installed; tests that need it are skipped"; fi; }

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check vqaudio tests benchmarks examples

test: $(STAMP) system-deps lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo_out .pytest_cache
