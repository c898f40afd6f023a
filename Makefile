# ContentOps — the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need (a virtualenv with pinned packages, buf) is set up here.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PG_VERSION_DIR := $(firstword $(wildcard /etc/postgresql/*))
# A CJK font so rep badges can carry Chinese names (Debian package; the tests check the badge text).
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
# Debian's Chromium and its driver for the browser tests (never a browser download).
CHROMEDRIVER := /usr/bin/chromedriver
# wrk (Debian) drives the web edge's beacon benchmark.
WRK := /usr/bin/wrk

.PHONY: demo test bench soak proto proto-check lint migrate serve run services clean reformat

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

$(CJK_FONT):
	apt-get install -y --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y --no-install-recommends fonts-wqy-microhei)

$(CHROMEDRIVER):
	apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y --no-install-recommends chromium chromium-driver)

$(WRK):
	apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y --no-install-recommends wrk)

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $(BUF)

## demo: run the main job on the embedded default (SQLite, local folder, in-process tasks)
demo: $(STAMP)
	$(PY) -m services.demo

## test: start PostgreSQL/Redis if they are down, then run the whole suite
test: $(STAMP) $(BUF) $(CJK_FONT) $(CHROMEDRIVER) services
	$(PY) -m pytest

## services: start this machine's PostgreSQL and Redis when they are not running
services:
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $(notdir $(PG_VERSION_DIR)) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in $$(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "PostgreSQL/Redis did not come up" >&2; exit 1

## bench: run every benchmark in bench/ and write bench/results.md
bench: $(STAMP) $(CJK_FONT) $(WRK) services
	$(PY) -m bench

## soak: every process under load for SOAK_MINUTES (10) on its own PostgreSQL cluster, AOF Redis and S3, with a
## worker, Redis, a consumer and PostgreSQL failing on a schedule; checks nothing is lost or counted twice; bench/out/soak.md
SOAK_MINUTES ?= 10
soak: $(STAMP) services
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)

## proto: regenerate services/protos from proto/ (and lint with buf)
proto: $(STAMP) $(BUF)
	cd proto && ../$(BUF) lint
	$(PY) proto/generate.py

proto-check: $(STAMP) $(BUF)
	cd proto && ../$(BUF) lint
	$(PY) proto/generate.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench proto

reformat: $(STAMP)
	$(VENV)/bin/ruff check --fix services tests bench proto

## migrate: apply Alembic migrations to DATABASE_URL (or the embedded SQLite file)
migrate: $(STAMP)
	$(VENV)/bin/contentops migrate

## run: everything on localhost. Embedded default: every service and the web edge (http://127.0.0.1:8000) in one
## process, serving the data `make demo` left in var/demo. With REDIS_URL (and DATABASE_URL, MINIO_*) set: migrate,
## then every process on its own with honcho (deploy/Procfile). Ctrl-C stops everything.
run: $(STAMP)
	@if [ -n "$$REDIS_URL" ]; then \
	  $(VENV)/bin/contentops migrate && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/honcho -f deploy/Procfile -d . start; \
	else \
	  CONTENTOPS_DATA_DIR=$${CONTENTOPS_DATA_DIR:-var/demo} exec $(PY) -m services; \
	fi

serve: run

clean:
	rm -rf $(VENV) node_modules var demo-out .pytest_cache .hypothesis
