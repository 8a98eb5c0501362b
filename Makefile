# The one place the project's commands live. `make demo` runs the portal; `make test` proves it.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export DJANGO_SETTINGS_MODULE ?= portal.settings

# Tests run on PostgreSQL (row locks and CHECK constraints are part of what is tested).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal
DEMO_DATABASE_URL ?= sqlite:///$(CURDIR)/demo.sqlite3
# pytest-xdist processes (each its own test database, `<name>_gw0`, ...; tests that need a real
# server or worker start their own on a free port or queue).
TEST_WORKERS ?= 2
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal_bench

.PHONY: install static lock demo demo-data serve worker test lint schema pg-check bench bench-ingest \
	bench-budgets bench-soak clean \
	system-packages audit

# Debian packages the portal needs besides Python's: Pango and fonts for WeasyPrint (invoice,
# credit note and statement PDFs), Chromium for the page tests, poppler-utils (`pdftoppm`) for
# the tests that render PDF pages to PNG, postgresql-client (pgbench) and wrk for `make bench`.
# `.ci/run` installs them; elsewhere:
#   sudo apt-get install $$(make -s system-packages)
SYSTEM_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig \
	fonts-dejavu-core chromium poppler-utils postgresql-client wrk

system-packages:
	@echo $(SYSTEM_PACKAGES)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Front-end libraries come from npm (package-lock.json) and are copied into the static files.
VENDOR := portal/static/portal/vendor
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENDOR)/.copied: node_modules/.installed
	mkdir -p $(VENDOR)
	sed '/sourceMappingURL/d' node_modules/chart.js/dist/chart.umd.min.js > $(VENDOR)/chart.umd.min.js
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx.min.js
	cp node_modules/htmx.org/LICENSE $(VENDOR)/htmx.LICENSE
	touch $@

static: $(VENDOR)/.copied

install: $(VENV)/.installed static

lock:  ## re-resolve the pins after changing pyproject.toml
	rm -rf /tmp/portal-lock && $(PYTHON) -m venv /tmp/portal-lock
	/tmp/portal-lock/bin/pip install --quiet -e ".[dev]"
	/tmp/portal-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

demo-data demo serve: export DEBUG = 1
demo-data: install  ## the demo organization on SQLite, without serving
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) manage.py migrate --noinput
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) manage.py demo_load
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) manage.py ledger_verify
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) manage.py audit_verify

demo: demo-data
	@echo
	@echo "  Portal:  http://127.0.0.1:8000/   (log in as owner@acme.example / demo-password)"
	@echo "  API:     http://127.0.0.1:8000/api/v1/schema/swagger/"
	@echo
	@# The production server (README, "Running in production"): ASGI, gunicorn with a uvicorn
	@# worker; one worker, as the demo's cache is per process.
	DATABASE_URL=$(DEMO_DATABASE_URL) $(VENV)/bin/gunicorn portal.asgi:application \
		-k portal.workers.UvicornWorker --reuse-port -w 1 -b 127.0.0.1:8000

serve: install  ## Django's development server (reloads on change)
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) manage.py runserver 127.0.0.1:8000

worker: install
	$(PY) manage.py beat_schedule_sync
	$(VENV)/bin/celery -A portal worker -B --loglevel=info

pg-check: install
	@DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m portal.dbcheck

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# drf-spectacular's own check, then an independent validator on the same document.
schema: install
	@schema=$$(mktemp --suffix=.yaml) && trap 'rm -f "$$schema"' EXIT && \
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) manage.py spectacular --validate --fail-on-warn --file "$$schema" && \
	$(VENV)/bin/openapi-spec-validator --validation-errors all "$$schema"

test pg-check schema: export SECRET_KEY ?= test-only-secret-key-not-for-production
test pg-check schema: export SECURE_SSL_REDIRECT = 0
test: lint pg-check schema
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) manage.py makemigrations --check --dry-run
	@# --durations: the slowest tests at the end, to keep the whole under 15 minutes.
	DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest --create-db -n $(TEST_WORKERS) --dist worksteal \
		--durations=25

# Known vulnerabilities with a fix available, in the pinned Python packages (pip-audit in a venv
# of its own, PyPI's vulnerability data; --strict: a package it cannot check fails the audit
# rather than being skipped) and in the npm packages (the npm registry's audit endpoint).
# `portal.auditcheck` fails on those with a fix (bump the pin) and lists the others.
# Not yet part of `test`: see docs/operations.md ("Dependency audit").
AUDIT_VENV ?= .venv-audit
$(AUDIT_VENV)/.installed:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet pip-audit==2.10.1
	touch $@

audit: $(AUDIT_VENV)/.installed  # npm audit reads package-lock.json: nothing to install
	@reports=$$(mktemp -d) && trap 'rm -rf "$$reports"' EXIT && \
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		-r constraints.txt --format json --output "$$reports/pip.json" ; \
	status=$$? ; if [ ! -s "$$reports/pip.json" ]; then \
		echo "audit: pip-audit could not check the pins (exit $$status): no vulnerability data" >&2; exit 1; fi ; \
	npm audit --json > "$$reports/npm.json" ; \
	$(PY) -m portal.auditcheck "$$reports/pip.json" "$$reports/npm.json"

# The figures against their goals and against pgbench's limits on the same PostgreSQL, in one
# sitting (bench/run.py: wrk, the paced client, the Azure hour, bench/gateway.py, a history of
# BENCH_HISTORY usage events loaded by SQL, the reads over it, profiles of the figures that miss
# their goal). It drops and recreates BENCH_DATABASE_URL's database. Needs pgbench and wrk
# (SYSTEM_PACKAGES). Results: bench/results/bench.json and docs/performance.md.
BENCH_SECONDS ?= 20
BENCH_HISTORY ?= 10000000
bench: install  ## figures vs goals in bench/results/bench.json and docs/performance.md
	@command -v wrk >/dev/null && command -v pgbench >/dev/null || \
		{ echo "make bench needs wrk and pgbench: apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; }
	DATABASE_URL=$(BENCH_DATABASE_URL) PYTHONPATH=$(CURDIR) $(PY) bench/run.py \
		--seconds $(BENCH_SECONDS) --history $(BENCH_HISTORY) $(BENCH_ARGS)

# Ingest scenarios alone (single events from 1, 8 and 32 Python clients, batches of 100 and 1,000).
bench-ingest: install  ## bench/results/ingest.json
	DATABASE_URL=$(BENCH_DATABASE_URL) PYTHONPATH=$(CURDIR) $(PY) bench/ingest.py

# Budgets on the debit path: four levels against none, with 0 and 1,000,000 events in the windows.
BENCH_BUDGETS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal_budgets_bench
bench-budgets: install  ## bench/results/budgets.json, described in docs/performance.md
	DATABASE_URL=$(BENCH_BUDGETS_DATABASE_URL) PYTHONPATH=$(CURDIR) $(PY) bench/budgets.py

# Soak: mixed traffic at half the probed capacity for SOAK_MINUTES against the ASGI server.
BENCH_SOAK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal_soak
SOAK_MINUTES ?= 10
bench-soak: install  ## bench/results/soak.json, described in docs/performance.md
	DATABASE_URL=$(BENCH_SOAK_DATABASE_URL) PYTHONPATH=$(CURDIR) $(PY) bench/soak.py \
		--minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) demo.sqlite3* node_modules $(VENDOR)
