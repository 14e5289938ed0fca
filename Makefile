# The two set-up commands: `make demo` (the built-in example) and `make test` (the suite).
# Both create the virtual environment on first use; everything runs offline on the CPU.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test bench bench-timm clean docs sysdeps

# Graphviz (`dot`, for `synth viz -o x.svg|png`), Chromium (the HTML page's end-to-end test)
# and a font with the lock glyph: installed with apt when missing and we are root on a
# Debian/Ubuntu machine; otherwise a note says how. Nothing else needs them.
APT = DEBIAN_FRONTEND=noninteractive apt-get install -y -q
sysdeps:
	@if command -v dot >/dev/null 2>&1 && { command -v chromium || \
	    command -v chromium-browser; } >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && { $(APT) graphviz chromium || $(APT) graphviz chromium-browser; } \
	  && { $(APT) fonts-symbola || true; }; \
	else \
	  echo "note: SVG/PNG need Graphviz and the browser test needs Chromium:" \
	       "sudo apt-get install graphviz chromium (or brew install graphviz chromium)"; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,hf,lsp,search,compress,export,tb]'
	touch $(STAMP)

# The demo needs neither Graphviz nor Chromium: only the tests (and `make docs`) install them.
demo: $(STAMP)
	$(VENV)/bin/synth demo

test: $(STAMP) sysdeps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/frontend.py
	$(PY) bench/overhead.py
	$(PY) bench/viz.py
	$(PY) bench/assembly_memory.py
	$(PY) bench/train_step.py
	$(PY) bench/export.py

# Every architecture in timm.list_models(), whole and at every stage (about an hour).
bench-timm: $(STAMP)
	$(PY) bench/timm_coverage.py

# Every example's picture, as the README and docs show it.
docs: $(STAMP) sysdeps
	@mkdir -p docs/models
	@for f in models/*.synth; do \
	  $(VENV)/bin/synth viz "$$f" -o "docs/models/$$(basename "$$f" .synth).svg" || exit 1; \
	done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
