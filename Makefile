# The two commands of the README: `make demo` and `make test`.
# Each creates .venv if missing, installs torch==2.13.0 explicitly (an unpinned
# torch would pull a multi-GB CUDA build), then the package. On a machine whose pip
# does not already find a CPU wheel, `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# takes torch from PyTorch's CPU index (PyPI's Linux wheel depends on the CUDA libraries).

VENV ?= .venv
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vqaudio-installed

.PHONY: demo test lint setup system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[test,eval]"
	touch $(STAMP)

setup: $(STAMP)

# espeak-ng makes the synthetic speech corpus; installed when we may (root + apt).
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && apt-get install -y -q espeak-ng) >/dev/null; \
	  else echo "note: espeak-ng not installed; tests that need it are skipped"; fi; }

# The main job on the shipped default model; outputs land in demo_out/.
demo: $(STAMP)
	@mkdir -p demo_out
	$(VENV)/bin/vqaudio encode examples/speech.wav -o demo_out/speech.vqa
	$(VENV)/bin/vqaudio info demo_out/speech.vqa
	$(VENV)/bin/vqaudio decode demo_out/speech.vqa -o demo_out/speech.decoded.wav
	$(VENV)/bin/vqaudio resynthesize examples/speech.wav --speaker fl002 -o demo_out/speech.as_fl002.wav
	$(VENV)/bin/vqaudio sample --speaker fe001 --seconds 3 -o demo_out/sample.wav
	$(PY) examples/demo.py
	@echo "demo outputs in demo_out/: speech.vqa speech.decoded.wav speech.as_fl002.wav sample.wav"

lint: $(STAMP)
	$(VENV)/bin/ruff check vqaudio tests benchmarks examples

test: $(STAMP) system-deps lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo_out .pytest_cache
