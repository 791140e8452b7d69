# Two commands matter: `make demo` runs the product, `make test` proves it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo sandbox test lint typecheck pytest bench venv browser postgres clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp is rebuilt whenever pyproject.toml changes, so a new dependency is picked up.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The browser tests need Chromium at $(CHROMIUM)."; \
		echo "Install it with: sudo apt-get install chromium  (or set CHROMIUM=/path/to/chromium)"; \
		exit 1; \
	fi

# The PostgreSQL tests start a throwaway cluster of their own (tests/support/postgres.py); they
# need the server's binaries, never a running service.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$$CERTWIDGET_POSTGRES_BIN" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's PostgreSQL for the PostgreSQL tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "The PostgreSQL tests need PostgreSQL's initdb (/usr/lib/postgresql/*/bin)."; \
		echo "Install it with: sudo apt-get install postgresql  (or set CERTWIDGET_POSTGRES_BIN=/path/to/bin)"; \
		exit 1; \
	fi

demo: venv
	$(BIN)/certwidget demo

sandbox: venv
	$(BIN)/certwidget sandbox

lint: venv
	$(BIN)/ruff check certwidget tests example_shop bench
	$(BIN)/ruff format --check certwidget tests example_shop bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy --strict certwidget

pytest: venv browser postgres
	CERTWIDGET_CHROMIUM=$(CHROMIUM) $(BIN)/pytest

test: lint typecheck pytest

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
