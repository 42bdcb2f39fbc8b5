# The two commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: bench install run test lint check test-sqlite test-postgres browser-deps clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_local_staff
	@echo ""
	@echo "  Chat page: http://$(HOST):$(PORT)/"
	@echo "  Admin:     http://$(HOST):$(PORT)/admin/  (usage dashboard linked from its index)"
	@echo "  API docs:  http://$(HOST):$(PORT)/api/docs  (OpenAPI schema: http://$(HOST):$(PORT)/api/schema)"
	@echo "  Register:  curl -X POST http://$(HOST):$(PORT)/api/auth/register -H 'Content-Type: application/json' \\"
	@echo "               -d '{\"username\": \"alice\", \"email\": \"alice@example.com\", \"password\": \"a-long-passphrase\"}'"
	@echo "  Token:     curl -X POST http://$(HOST):$(PORT)/api/auth/token -H 'Content-Type: application/json' \\"
	@echo "               -d '{\"username\": \"alice\", \"password\": \"a-long-passphrase\"}'"
	@echo ""
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c config/gunicorn.conf.py config.wsgi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: install
	env -u DATABASE_URL $(PY) manage.py check
	env -u DATABASE_URL $(PY) manage.py makemigrations --check --dry-run

test-sqlite: install
	env -u DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

# Runs only when DATABASE_URL is set (.ci/run sets it to PostgreSQL).
test-postgres: install
	@if [ -n "$$DATABASE_URL" ]; then \
		echo "== the suite again on $${DATABASE_URL%%@*}@… =="; \
		$(BIN)/pytest $(PYTEST_ARGS); \
	else \
		echo "DATABASE_URL is not set: the PostgreSQL run is skipped"; \
	fi

# Debian's Chromium for the browser tests; they skip with a reason when it cannot be had.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the browser tests will be skipped"; \
	else echo "no /usr/bin/chromium and not root: the browser tests will be skipped"; fi

test: lint check browser-deps test-sqlite test-postgres

# Load benchmark against PostgreSQL + Redis (never part of `make test`); see docs/operations.md.
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
