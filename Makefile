# spatialjoin-operator developer entry points.  Every target works on a fresh
# machine: the virtualenv and the system packages are installed on demand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tests get their own stack state so they never disturb a developer's stack.
TEST_STATE_DIR ?= /tmp/spatialjoin-test-stack
PYTEST_ARGS ?=

.PHONY: help install system stack-up stack-down stack-status test unit lint demo clean image image-lock chart-test

help:
	@echo "make demo | test | unit | lint | stack-up | stack-down | stack-status | clean"

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

install: $(BIN)/.installed

system: install
	PIP="$(BIN)/python -m pip" bash scripts/install-system.sh

stack-up: system
	$(BIN)/spatialjoin stack up

stack-down: install
	$(BIN)/spatialjoin stack down

stack-status: install
	$(BIN)/spatialjoin stack status

# Run $(1) against a test stack that is started first and always stopped after.
define on_test_stack
	@export SPATIALJOIN_STATE_DIR=$(TEST_STATE_DIR); \
	$(BIN)/spatialjoin stack up || { $(BIN)/spatialjoin stack down; exit 1; }; \
	trap '$(BIN)/spatialjoin stack down' EXIT; \
	$(1)
endef

## The whole suite (unit, integration, e2e) against a stack it starts and stops.
test: system
	$(call on_test_stack,$(BIN)/pytest $(PYTEST_ARGS))

## Pure tests only: no services.
unit: install
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

## The main job: stack, data, chart, operator, pool, a 12-partition job to Succeeded.
demo: system
	$(BIN)/spatialjoin demo

## The image (Debian's buildah, vfs, chroot isolation; the debootstrap base is cached).
image:
	bash scripts/build-image.sh

## Regenerate requirements/image.txt from pyproject, preferring the dev venv's versions.
image-lock: install
	PYTHON=$(BIN)/python bash scripts/build-image.sh lock

## The chart alone: lint/template/validate, then install/upgrade/uninstall + RBAC on a stack.
chart-test: system
	$(call on_test_stack,$(BIN)/pytest tests/chart $(PYTEST_ARGS))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
