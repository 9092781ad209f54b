# The Annotated Multi-Task Ranker: two commands do everything on a fresh machine.
#   make book   builds the HTML book into _build/html (executes every chapter)
#   make test   runs every test: package tests, every notebook (nbval), the -W book build
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: venv book test test-package test-notebooks clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going

test-package: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile tests

test-notebooks: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax book

test: test-package test-notebooks book

clean:
	rm -rf _build .pytest_cache
