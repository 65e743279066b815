# LiveCore: everything runs from a local virtualenv created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SCENARIO ?= flash-sale
USERS ?= 200
ARGS ?=

.PHONY: demo test lint unit browser-deps bench-engine bench-fanout bench-memory bench-video load docs clean soak

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,embedded]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/livecore up

browser-deps:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (echo "error: Debian chromium is needed for the browser tests (apt-get install chromium)"; exit 1)

lint: $(STAMP)
	$(VENV)/bin/ruff check livecore gateway tests bench loadtests
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

test: $(STAMP) browser-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

# The reliability suite at soak strength: EXAMPLES hypothesis examples per fuzz
# test (make test runs 300/150), each test allowed an hour.
EXAMPLES ?= 5000
soak: $(STAMP)
	RELIABILITY_FUZZ_EXAMPLES=$(EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider --timeout 3600 tests/reliability $(ARGS)

bench-engine: $(STAMP)
	$(PY) -m bench.engine $(ARGS)

bench-fanout: $(STAMP)
	$(PY) -m bench.fanout $(ARGS)

bench-memory: $(STAMP)
	$(PY) -m bench.conn_memory $(ARGS)

bench-video: $(STAMP)
	$(PY) -m bench.video $(ARGS)

load: $(STAMP)
	$(PY) -m loadtests --scenario $(SCENARIO) --users $(USERS) $(ARGS)

docs: $(STAMP)
	$(PY) -m livecore.settings_doc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports
