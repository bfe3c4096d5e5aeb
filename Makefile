# The two commands README.md promises: `make demo` and `make test`. Each creates the
# virtualenv and installs Baton with the pinned constraints first (torch 2.13.0 CPU).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser demo test check protos clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/baton demo --report demo-report.json

# Headless Chromium for the report screenshot test (about 20 s with apt); where it cannot be
# installed, the reason goes to a file the test's skip message quotes.
browser:
	@command -v chromium-headless-shell >/dev/null && rm -f $(VENV)/browser-missing.txt || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 \
	      || (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	        chromium-headless-shell >/dev/null 2>&1)) \
	    && rm -f $(VENV)/browser-missing.txt \
	    || echo "apt-get install chromium-headless-shell failed or needs root" \
	      > $(VENV)/browser-missing.txt; }

test: $(STAMP) browser
	PY=$(PY) scripts/check.sh

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-report.json
