# Squall: the two commands are `make run` and `make test`; both do all set-up, idempotently.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: run test check setup host images fmt clean-data

run: setup
	$(BIN)/squall standalone

test: setup
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

setup: host $(STAMP) images

# Host prerequisites for rootless Podman (packages, the unprivileged user, its configuration).
# As root it installs what is missing; otherwise it prints the command a person must run, and stops.
host:
	@scripts/setup-host.sh

# The virtualenv with the project and its dev tools; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	@scripts/ensure-venv.sh $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Runtime images built offline from Debian packages, only when their recipe changed.
images: host $(STAMP)
	$(BIN)/squall images ensure
