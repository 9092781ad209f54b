# The Annotated Multi-Task Ranker: two commands do everything on a fresh machine.
#   make book   builds the HTML book into _build/html (executes every chapter)
#   make test   runs every test: package tests, every notebook (nbval), the -W book build
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: venv book fork test test-package test-notebooks clean

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

# Sphinx re-executes only the notebooks that changed; the chapters also show and assert on the
# package, so when a package source is newer than the last good build every page is rebuilt (--all).
BOOK_STAMP := _build/html/.built
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going \
	  $(if $(wildcard $(BOOK_STAMP)),$(if $(shell find mmoe_annotated -name '*.py' -newer $(BOOK_STAMP)),--all),--all)
	@touch $(BOOK_STAMP)

# Point the Colab buttons and every chapter's install cell at another repository (a fork).
fork:
	@test -n "$(REPO)" || { echo "usage: make fork REPO=https://github.com/you/your-fork"; exit 2; }
	@old=$$(sed -n 's/^  url: *//p' _config.yml); \
	  sed -i "s#$$old#$(REPO)#g" _config.yml book/*.ipynb README.md CONTRIBUTING.md && \
	  echo "repointed $$old -> $(REPO) in _config.yml, book/*.ipynb, README.md, CONTRIBUTING.md"

test-package: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile tests

test-notebooks: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax book

test: test-package test-notebooks book

clean:
	rm -rf _build .pytest_cache
