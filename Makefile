# Two commands for a newcomer: `make run` (install and start the app) and `make test`.
# Both build and use .venv at the repository root.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PORT   ?= 8501

.PHONY: run test lint chromium postgresql samples clean bench bench-smoke bench-data-aware

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

# The browser test drives Debian's chromium; install it when missing (needs root or sudo).
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The sweep tests start a throwaway PostgreSQL server; install Debian's when initdb is missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; }

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed-test chromium postgresql lint
	$(PY) -m pytest

# Retrain the bundled sample models (deterministic).
samples: $(VENV)/.installed-run
	$(PY) -m sample_models.train

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmarks (not timed tests): full run writes bench/results/latest.json and prints a table.
bench: $(VENV)/.installed-test
	$(PY) -m bench.bench

bench-smoke: $(VENV)/.installed-test
	$(PY) -m bench.bench --smoke --out /tmp/bench-smoke.json

# Plain vs data-aware (GPTQ, SparseGPT, bias correction) on the samples, MobileNetV2, ResNet50.
bench-data-aware: $(VENV)/.installed-test
	$(PY) -m bench.data_aware
