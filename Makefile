# One entry point for every chore. `make demo` runs agentdeck; `make test` runs every test;
# `make check` runs format + lint + type-check. Each sets itself up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test check fmt services tools lock bench

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	mkdir -p $(VENV)/typecheck/agentdeck
	for f in core backends agents tui themes; do ln -sfn "$(CURDIR)/$$f" $(VENV)/typecheck/agentdeck/$$f; done
	touch $(STAMP)

demo: setup
	$(VENV)/bin/agentdeck --demo

services:
	bash scripts/services.sh

# End-to-end throughput and latency on RabbitMQ + PostgreSQL + Redis (docs/performance.md).
bench: setup services
	$(PY) scripts/bench.py

# promtool and prometheus for the metrics tests (apt-get when missing).
tools:
	bash scripts/tools.sh

test: setup services tools
	bash scripts/test.sh

check: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^agentdeck' > requirements.lock
