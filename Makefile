# The commands people type. Each target builds .venv itself and is quick once installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
DEPS   := pyproject.toml constraints.txt

.PHONY: demo test lab bench lint clean browser notebooks

$(VENV)/.core: $(DEPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e ".[test]"
	touch $@

$(VENV)/.lint: $(VENV)/.core
	$(PIP) -e ".[lint]"
	touch $@

$(VENV)/.notebooks: $(VENV)/.core
	$(PIP) -e ".[notebooks]"
	touch $@

## demo: a real grokking run (modular addition) with its report, on the CPU
demo: $(VENV)/.core
	$(VENV)/bin/grokwidgets run modular-addition --dir runs/demo --overwrite

## test: the whole test suite (pytest exit 5, no tests collected, is a failure), then every
## notebook under nbval in smoke mode
test: $(VENV)/.test browser
	$(PY) -m pytest
	GROKWIDGETS_SMOKE=1 $(PY) -m pytest --nbval-lax -p no:cacheprovider notebooks

## notebooks: re-execute every notebook in full mode in place; refresh notebooks/README.md
notebooks: $(VENV)/.notebooks
	$(PY) notebooks/run.py

# Real-browser tests use Debian's chromium; install it where we can (root on Debian),
# otherwise those tests skip and say how to enable them.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	    && echo "installed chromium for the browser tests" \
	    || echo "could not install chromium: browser tests will skip"; \
	  else echo "chromium not found: browser tests will skip (sudo apt-get install chromium)"; fi; }

## lab: JupyterLab with the notebooks
lab: $(VENV)/.notebooks
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root,)

## bench: every benchmark in bench/, results in bench/RESULTS.md
bench: $(VENV)/.test
	for f in bench/*.py; do $(PY) $$f || exit 1; done

## lint: ruff and mypy
lint: $(VENV)/.lint
	$(VENV)/bin/ruff check grokwidgets tests bench notebooks
	$(VENV)/bin/ruff format --check grokwidgets tests bench notebooks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
