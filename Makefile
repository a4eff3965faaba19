# Two commands for a new user: `make run` and `make test` (see README.md); `make test-fast`
# for daily work (CONTRIBUTING.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HOST ?= 127.0.0.1
PORT ?= 8000
# Local development defaults; real deployments set these in the environment or .env.
DEV_ENV := DEBUG=$${DEBUG:-true}
# How often `make run`'s sweep runs (collect_failed --every): the demo's failover shows.
SWEEP_EVERY ?= 5
# Exits 0 (true) when the database has no users yet: `make run` then loads the demo.
DATABASE_IS_EMPTY := from accounts.models import User; raise SystemExit(User.objects.exists())

.PHONY: run test test-fast test-cluster lint format serve setup-production bench-sweep bench-load bench-ab bench-inprocess bench-dashboard bench-bulk bench-login-flood bench-vs-original wrk setup system-deps browser-deps redis-deps cluster-deps clean

run: $(VENV)/.installed .env
	$(DEV_ENV) $(BIN)/python manage.py migrate --noinput -v 0
	@# The demo goes into an empty database only (SQLite or MariaDB), never over real data.
	@if $(DEV_ENV) $(BIN)/python manage.py shell -v 0 -c "$(DATABASE_IS_EMPTY)"; then \
		$(DEV_ENV) $(BIN)/python manage.py loaddata demo; \
	fi
	@echo
	@echo "  taskmgmt is starting on http://$(HOST):$(PORT)/"
	@echo "  Admin site:  http://$(HOST):$(PORT)/admin/   login admin@example.com / demo-admin-pass (opens on the dashboard)"
	@echo "  API docs:    http://$(HOST):$(PORT)/api/docs/  (ReDoc: /api/redoc/)"
	@echo "  Node logins: node1@example.com, node2@example.com, node3@example.com / demo-node-pass"
	@echo "  The sweep runs every $(SWEEP_EVERY) s beside the server (collect_failed --every)."
	@echo
	@# The sweep is a second process that lives as long as the server: Ctrl-C stops both.
	@$(DEV_ENV) $(BIN)/python manage.py collect_failed --every $(SWEEP_EVERY) & sweep=$$!; \
	trap 'kill $$sweep 2>/dev/null' EXIT INT TERM HUP; \
	$(DEV_ENV) $(BIN)/python manage.py runserver $(HOST):$(PORT)

# A development .env on the first `make run` (DEBUG=true, a generated SECRET_KEY), so
# the docs' manage.py commands work as written, and failover on with short liveness
# times, so the demo shows a dead worker's tasks moving within seconds. A .env that
# exists is never touched.
.env:
	@echo "Writing .env for local development: DEBUG=true, a new SECRET_KEY, FAILOVER=reassign"
	@printf '%s\n' \
		"# Written by make run for local development (see .env.example). Not for production." \
		"DEBUG=true" \
		"SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
		"# The demo's failover: a worker unheard for 20 s is down, the sweep moves its tasks." \
		"FAILOVER=reassign" \
		"NODE_HEARTBEAT_SECONDS=5" \
		"NODE_DOWN_AFTER=20" > $@

# Production: DEBUG off, gunicorn (gunicorn.conf.py), static files served by whitenoise.
# Database, SECRET_KEY and the rest come from the environment or .env.
# The address: HOST or PORT given to make (`make serve PORT=8765`), unless GUNICORN_BIND is
# in the environment; else gunicorn.conf.py's GUNICORN_BIND from the environment or .env,
# else 127.0.0.1:8000. Passing HOST:PORT always would hide a GUNICORN_BIND kept in .env.
SERVE_BIND = $(if $(filter-out default file,$(origin HOST) $(origin PORT)),GUNICORN_BIND=$${GUNICORN_BIND:-$(HOST):$(PORT)})
serve: $(VENV)/.installed
	DEBUG=false $(BIN)/python manage.py migrate --noinput -v 0
	DEBUG=false $(BIN)/python manage.py collectstatic --noinput -v 0
	DEBUG=false $(SERVE_BIND) $(BIN)/gunicorn --config gunicorn.conf.py

# Load benchmark on MariaDB (docs/performance.md); DURATION=5 for a quick run.
bench-load: $(VENV)/.installed wrk
	$(BIN)/python bench/load/run.py

# Two builds side by side under load (docs/performance.md): this tree against BASE (a git
# ref, default HEAD), wrk alternating between them on one seeded database.
bench-ab: $(VENV)/.installed wrk
	$(BIN)/python bench/load/ab.py

# The load generator of bench-load and bench-vs-original.
wrk:
	@command -v wrk >/dev/null || { echo "Installing wrk (the load generator)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk; }

# CPU per request of a node's hot paths, the WSGI app called in a loop (docs/performance.md):
# MariaDB database BENCH_DB_NAME (default taskmgmt_inprocess), seeded once and kept.
bench-inprocess: $(VENV)/.installed
	$(BIN)/python bench/inprocess.py

# Sweep benchmark (docs/performance.md): N expired tasks, default 100000. SQLite unless
# DATABASE_URL=mysql://…, whose server gets a database of its own, taskmgmt_bench.
bench-sweep: $(VENV)/.installed
	$(BIN)/python bench/sweep.py $(or $(N),100000)

# Heartbeat latency under a flood of the costliest anonymous logins (docs/performance.md);
# gunicorn over a temporary SQLite file, counting in Redis db 15 (BENCH_CACHE_URL).
bench-login-flood: $(VENV)/.installed
	$(BIN)/python bench/login_flood.py

# Dashboard benchmark (docs/performance.md): N tasks, default 1000000, in a database of its
# own (BENCH_DB_NAME, default taskmgmt_bench_dashboard) on DATABASE_URL's server, else SQLite.
bench-dashboard: $(VENV)/.installed
	$(BIN)/python bench/dashboard.py $(or $(N),1000000)

# taskmgmt beside the original Node.js system, one sitting, the same wrk harness
# (docs/performance.md). ORIGINAL_DIR: a copy of the original prepared by
# ../shared/original-bench/setup.sh, outside this repository. Then the node's other hot paths
# (heartbeat, progress, claim) in the same sitting, and issue 23's targets met or not.
# ROUNDS=1 DURATION=10: a quick look.
ORIGINAL_BENCH ?= ../shared/original-bench
bench-vs-original: $(VENV)/.installed
	@if [ ! -f "$(ORIGINAL_BENCH)/side_by_side.sh" ]; then \
		echo "bench-vs-original skipped: no harness at $(ORIGINAL_BENCH) (ORIGINAL_BENCH=… names it)"; \
	elif [ -z "$(ORIGINAL_DIR)" ] || [ ! -f "$(ORIGINAL_DIR)/start.sh" ] || [ ! -d "$(ORIGINAL_DIR)/app/node_modules" ]; then \
		echo "bench-vs-original skipped: ORIGINAL_DIR=$(or $(ORIGINAL_DIR),<unset>) is not a prepared copy of the original."; \
		echo "  Prepare one (see $(ORIGINAL_BENCH)/README.md): a checkout of the original in DIR/app, then"; \
		echo "  bash $(ORIGINAL_BENCH)/setup.sh DIR   and   make bench-vs-original ORIGINAL_DIR=DIR"; \
	else \
		$(MAKE) --no-print-directory wrk && \
		NODE_DIR="$$(cd "$(ORIGINAL_DIR)" && pwd)" ORIGINAL_BENCH="$(ORIGINAL_BENCH)" $(BIN)/python bench/vs_original.py; \
	fi

# Bulk create benchmark (docs/placement.md): one request of N tasks, default 1000, against
# N single creates. SQLite unless DATABASE_URL=mysql://…, whose server gets taskmgmt_bulk_bench.
bench-bulk: $(VENV)/.installed
	$(BIN)/python bench/bulk.py $(or $(N),1000)

# The browser tests (tests/browser/, tests/test_docs.py) are part of the suite: chromium too.
test: $(VENV)/.installed | browser-deps redis-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Daily work (CONTRIBUTING.md, the test tiers): the in-process tests, in parallel; no
# browser, no processes of their own, no fuzzing, no fleet, no cluster. `make test` is the
# whole suite.
FAST := not browser and not process and not fuzz and not fleet and not cluster
test-fast: $(VENV)/.installed | redis-deps
	$(BIN)/pytest -n $(or $(JOBS),auto) -q -m "$(FAST)" $(PYTEST_ARGS)

# Three app hosts behind HAProxy, a replicated MariaDB and Redis, in network namespaces
# (tests/cluster; deploy/README.md): a host killed, Redis and the database restarted.
# Needs root; about two minutes, bounded at five.
test-cluster: $(VENV)/.installed | cluster-deps
	timeout 300 $(BIN)/pytest -m cluster tests/cluster $(PYTEST_ARGS)

# The cluster test's programs, from Debian's packages.
cluster-deps:
	@missing=""; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v mariadbd >/dev/null || missing="$$missing mariadb-server"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "Installing$$missing (for the cluster test)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

setup: $(VENV)/.installed

# A production host (deploy/README.md): the server's packages only (requirements.txt),
# without the test tools, which DRF would otherwise import into every worker.
setup-production: $(VENV)/.installed-production

$(VENV)/.installed-production: requirements.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# mysqlclient compiles against the MariaDB client library; Debian/Ubuntu only.
system-deps:
	@if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then \
		echo "Installing pkg-config and libmariadb-dev (needed to build mysqlclient)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q pkg-config libmariadb-dev; \
	fi

# The browser tests (tests/browser/) drive Debian's chromium through its chromedriver.
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "Installing chromium and chromium-driver (for the browser tests)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; \
	fi

# The tests start redis-servers of their own (tests/redis_server.py): the binary only.
redis-deps:
	@command -v redis-server >/dev/null || { echo "Installing redis-server (the tests start their own)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .pytest_cache tmp
