# moorage: `make serve` runs the registry, `make test` runs the whole test suite.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
ARGS ?=

.PHONY: serve scale-out test lint typecheck unit bench bench-scale-out image clean

$(RUNTIME): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	@touch $@

$(DEV): $(RUNTIME)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

## Run the registry on 127.0.0.1:5000 with data in ./data (pass flags with ARGS="...").
serve: $(RUNTIME)
	$(BIN)/moorage serve $(ARGS)

## Try the scale-out topology: 3 replicas on SeaweedFS (S3) and PostgreSQL behind HAProxy,
## front door on 127.0.0.1:5000, state in ./scale-out (needs root for apt, as `make test`).
scale-out: $(DEV)
	scripts/install-clients.sh
	$(BIN)/python -m tests.support.topology $(ARGS)

## Everything CI checks: lint, types, and the full pytest suite with real clients.
test: $(DEV)
	scripts/install-clients.sh
	$(MAKE) --no-print-directory lint typecheck
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/pytest $(ARGS)

lint: $(DEV)
	$(BIN)/ruff check moorage tests benchmarks packaging
	$(BIN)/ruff format --check moorage tests benchmarks packaging
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy
	$(BIN)/mypy --strict benchmarks
	cd packaging/image && $(CURDIR)/$(BIN)/mypy --strict moorage_image build.py

## Fast tests only (no real clients).
unit: $(DEV)
	$(BIN)/pytest -m "not clients" $(ARGS)

## Side-by-side benchmarks against CNCF Distribution (see benchmarks/README.md).
bench: $(DEV)
	scripts/install-clients.sh
	$(BIN)/python benchmarks/registry.py $(ARGS)

## Scale-out figures: S3 transfers against boto3 alone, PostgreSQL against SQLite, 1 vs 3 replicas.
bench-scale-out: $(DEV)
	scripts/install-clients.sh
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/s3_clients.py $(ARGS)
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/scale_out.py $(ARGS)

## The container image as an OCI layout in dist/image, from Debian packages and the pinned
## dependencies; prints its digest. Needs root and mmdebstrap (scripts/install-clients.sh).
image: $(RUNTIME)
	$(BIN)/python packaging/image/build.py --output dist/image $(ARGS)

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache build dist
