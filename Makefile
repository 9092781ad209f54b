# The Annotated Multi-Task Ranker: two commands do everything on a fresh machine.
#   make book   builds the HTML book into _build/html (executes every chapter)
#   make test   runs every test: package tests, every notebook (nbval), the -W book build,
#               the real-browser check of every page, every chapter alone in a fresh venv
#   make student   student notebooks without solutions in student/
#   make fork REPO=https://github.com/you/your-fork   repoint Colab buttons and install cells
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: venv book fork test test-package test-notebooks clean mathjax chromium test-browser \
	test-standalone student

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

# MathJax 3 from the npm registry (cached; never committed): html_extra_path in _config.yml
# copies it into _build/html/_static/_mathjax, so math renders from file:// and offline.
MATHJAX := _build/mathjax/_static/_mathjax/tex-mml-chtml.js
$(MATHJAX): tools/fetch_mathjax.py
	$(PYTHON) tools/fetch_mathjax.py $(dir $@)

mathjax: $(MATHJAX)

# Debian's Chromium for the browser check, installed when absent (root, apt).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q chromium; }

# Sphinx re-executes only the notebooks that changed; the chapters also show and assert on the
# package, so when a package source is newer than the last good build every page is rebuilt (--all).
BOOK_STAMP := _build/html/.built
book: $(STAMP) $(MATHJAX)
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going \
	  $(if $(wildcard $(BOOK_STAMP)),$(if $(shell find mmoe_annotated -name '*.py' -newer $(BOOK_STAMP)),--all),--all)
	@touch $(BOOK_STAMP)

# Point the Colab buttons and every chapter's install cell at another repository (a fork).
# (tools/repoint.py: repository.url in _config.yml, every install cell, other mentions of the
# old URL in book/, README.md, CONTRIBUTING.md; BRANCH=... also sets repository.branch.)
fork: $(STAMP)
	@test -n "$(REPO)" || { echo "usage: make fork REPO=https://github.com/you/your-fork [BRANCH=main]"; exit 2; }
	$(PY) tools/repoint.py "$(REPO)" $(if $(BRANCH),--branch "$(BRANCH)")

test-package: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile tests

test-notebooks: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax book

# Every page of the built book in headless Chromium: rendered math, images, links, Colab
# buttons, no tracebacks; screenshots in _build/screenshots/.
test-browser: book chromium
	$(PY) tools/browser_check.py _build/html --chromium $(CHROMIUM)

# Colab's situation: each chapter alone in an empty folder, with only the installed wheel.
test-standalone: $(STAMP)
	$(PY) tools/standalone_check.py --jobs $(JOBS)

student: $(STAMP)
	$(PY) tools/make_student.py book student

# The paper's synthetic study (chapter 8), default scale (a few minutes on 2 cores); flags: --help.
.PHONY: experiments
experiments: $(STAMP)
	$(PY) -m mmoe_annotated.experiments synthetic --out _build/experiments/synthetic

test: chromium mathjax test-package test-notebooks book test-browser test-standalone

clean:
	rm -rf _build .pytest_cache
