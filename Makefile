# The Annotated Multi-Task Ranker: two commands do everything on a fresh machine.
#   make book   builds the HTML book into _build/html (executes every chapter)
#   make test   runs every test: package tests, every notebook (nbval), the -W book build,
#               the checks of the built pages and outputs (tools/build_check.py),
#               the real-browser check of every page, every chapter alone in a fresh venv with
#               Colab's library versions, and again with the oldest versions pyproject.toml allows
#   make colab     write colab/book/*.ipynb, the notebooks the Colab buttons open (commit them)
#   make student [STUDENT_REPO=https://github.com/you/course-student] [STUDENT_BRANCH=main]
#                  the student edition, without solutions, in student/ (its own repository)
#   make fork REPO=https://github.com/you/your-fork [BRANCH=main]
#                  repoint Colab buttons and install cells; rewrites colab/ (and student/)
#   make pin REF=v0.1.0   point Colab buttons and install cells at a release tag
#   make strip     clear the outputs of book/*.ipynb after running them in Jupyter
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: venv book fork pin colab strip test test-package test-notebooks clean mathjax chromium \
	test-browser test-build test-colab-html test-standalone test-oldest student

# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the pinned torch from PyTorch's CPU
# wheel index first (on Linux, PyPI's torch is the CUDA build, several GB; see README.md).
TORCH_INDEX ?=
$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: the pinned requirements need Python 3.11 or newer;" \
	    "$(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.11"; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install -q --disable-pip-version-check \
	  "$$(grep -E '^torch==' requirements.txt)" --index-url $(TORCH_INDEX))
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
# old URL in book/, README.md, CONTRIBUTING.md; BRANCH=... also sets repository.branch, the
# branch or tag both use; then colab/ and a make-student student/ are written again.)
fork: $(STAMP)
	@test -n "$(REPO)" || { echo "usage: make fork REPO=https://github.com/you/your-fork [BRANCH=main]"; exit 2; }
	$(PY) tools/repoint.py "$(REPO)" $(if $(BRANCH),--branch "$(BRANCH)")

# The same for a release tag of this repository: `make pin REF=v0.1.0` (see CONTRIBUTING.md).
pin: $(STAMP)
	@test -n "$(REF)" || { echo "usage: make pin REF=v0.1.0 (a tag or branch of repository.url)"; exit 2; }
	$(PY) tools/repoint.py --branch "$(REF)"

# The notebooks the Colab buttons open, from book/ and _config.yml (tools/colab_notebooks.py).
# Run after editing a chapter, _toc.yml or references.bib, and commit colab/.
colab: $(STAMP)
	$(PY) tools/colab_notebooks.py

# Outputs of chapters run in Jupyter; the repository keeps notebooks without them.
strip: $(STAMP)
	$(PY) tools/strip_outputs.py book/*.ipynb

# A test that skips for a reason not in ALLOWED_SKIPS (tests/conftest.py) fails the run; -rfEs
# lists failures, errors and every skip with its reason.
test-package: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile -rfEs tests

test-notebooks: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax book

# Every page of the built book in headless Chromium: rendered math, images and their alt texts,
# links, Colab buttons, no tracebacks; at 1280 and 390 px wide, nothing that scrolls the page
# sideways and no equation, table or figure wider than its column; screenshots in _build/screenshots/.
test-browser: book chromium
	$(PY) tools/browser_check.py _build/html --chromium $(CHROMIUM)

# The built HTML and the executed notebooks (_build/jupyter_execute): unfilled placeholders,
# stderr and warnings, hand-numbered headings, the build machine's paths, build talk, live
# timings worded as claims (tools/build_check.py says what each check is and allows).
test-build: book
	$(PY) tools/build_check.py --build _build

# Colab's situation: each notebook the Colab buttons open, alone in an empty folder, with only
# the installed wheel, in a fresh venv with Colab's versions of numpy, pandas, scikit-learn and
# matplotlib (tools/standalone_check.py); test-oldest: the oldest versions pyproject.toml allows.
# Both install from one wheelhouse, _build/wheelhouse: torch and the packages they share are
# fetched once, and nothing on a second run (`rm -r _build/wheelhouse` takes newer releases).
test-standalone: $(STAMP)
	$(PY) tools/standalone_check.py --versions colab --jobs $(JOBS)

test-oldest: $(STAMP)
	$(PY) tools/standalone_check.py --versions oldest --jobs $(JOBS)

student: $(STAMP)
	$(PY) tools/make_student.py student $(if $(STUDENT_REPO),--student-repo "$(STUDENT_REPO)") \
	  $(if $(STUDENT_BRANCH),--student-ref "$(STUDENT_BRANCH)")

# The paper's synthetic study (chapter 8), default scale (a few minutes on 2 cores); flags: --help.
.PHONY: experiments
experiments: $(STAMP)
	$(PY) -m mmoe_annotated.experiments synthetic --out _build/experiments/synthetic

# The built book numbers every exercise as the notebooks in colab/ do.
test-colab-html: book
	$(PY) tools/colab_notebooks.py --check-html _build/html

test: chromium mathjax test-package test-notebooks book test-build test-browser test-colab-html test-standalone \
	test-oldest

clean:
	rm -rf _build .pytest_cache
