# The two commands of the quickstart: `make demo` (the DAGs end to end against the simulator)
# and `make test` (the whole suite). Everything installs itself first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/include:$(CURDIR)/plugins:$(CURDIR)/tools:$(CURDIR)/simulator

.PHONY: install lock bootstrap migrate demo test test-fast lint format bench soak sim up down clean

install: $(STAMP)

# --compile-bytecode: uv installs no .pyc files, and where the shell sets PYTHONDONTWRITEBYTECODE
# (CI does) Python never writes them, so every process (each Airflow task, CLI call and test worker)
# compiled Airflow from source again: 4.9 s instead of 2.1 s to import it.
$(STAMP): requirements.lock pyproject.toml simulator/pyproject.toml tools/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e . -e ./simulator -e ./tools
	@touch $(STAMP)

## Re-resolve requirements.lock from requirements-dev.txt (after changing a pin).
lock:
	@test -x $(UV) || $(MAKE) install
	$(UV) pip compile requirements-dev.txt -o requirements.lock --python-version 3.11 --no-header --quiet

## Create the databases, migrate Airflow and the warehouse (as the owner), create the DAGs' login
## role, add the connections and the pool. With no TIKTOK_PG_SERVER and nothing answering on
## 127.0.0.1:5432 it starts an embedded PostgreSQL under .airflow/postgres first (tiktok_tools.pgserver);
## production (docker-compose's airflow-init) runs `python -m tiktok_ops.bootstrap` itself.
bootstrap: install
	$(PY) -m tiktok_tools.bootstrap

## Bring the warehouse schema to head as its owner (TIKTOK_PG_SERVER), then renew the DAG role's grants.
migrate: install
	$(PY) -m tiktok_tools.bootstrap --only-warehouse

## The main job: simulator + the four DAGs through Airflow, writing into Postgres (an embedded
## server if the machine has none, stopped at the end unless `make up` uses it).
demo: bootstrap
	$(PY) -m tiktok_tools.demo

## The whole suite, on TEST_WORKERS pytest-xdist workers (each with databases of its own; a test
## file stays on one worker, so its module-scoped stack starts once). TEST_WORKERS=0: one process.
## Three on CI's two cores: most of the slow tests wait on a scheduler, a stack or a rate window.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

## The unit tier (no Postgres, no server) and the DAG parse checks: seconds; run it after every edit.
test-fast: install
	$(PY) -m pytest tests/unit tests/dags -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Where we stand against the limits (README, Performance). Own databases and simulator; QUICK=1 for a small run;
## FIG=accounts2000: the N-account snapshot through a running `make up` stack (tools/tiktok_tools/bench/bench_accounts.py).
bench: install
	$(if $(filter accounts2000,$(FIG)),$(PY) -m tiktok_tools.bench.bench_accounts,$(PY) -m tiktok_tools.bench $(if $(QUICK),--quick,))

## Long, random chaos outside the test suite: faults, a changing world, killed tasks, then a check
## against the simulator's ground truth (own databases). SOAK_ARGS="--minutes 60 --pg-restart".
soak: install
	$(PY) -m tiktok_tools.soak $(SOAK_ARGS)

## Airflow as in production (api-server, scheduler, dag-processor, triggerer; LocalExecutor) and
## the simulator, in the background; prints the UI address and the login. `make down` stops it all,
## the embedded Postgres server too if `make up` started on one.
up: bootstrap
	$(PY) -m tiktok_tools.up start

down: install
	$(PY) -m tiktok_tools.up stop

## The simulator alone, in the foreground.
sim: install
	$(PY) -m tiktok_sim --port $${TIKTOK_SIM_PORT:-8765}

## Keeps .airflow's keys (the metadata DB's connections are encrypted with them) and the embedded
## server's data (.airflow/postgres).
clean:
	rm -rf $(VENV) .airflow/logs .airflow/up .pytest_cache .ruff_cache
