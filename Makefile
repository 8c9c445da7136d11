# The two commands: `make run` and `make test`. Everything else is a step they depend on.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(wildcard protos/sluice/v1/*.proto)
GEN    := gen/python/sluice/v1/.stamp

.PHONY: run test lint protos repo clean help

help:
	@echo "make run    start the whole stack on embedded defaults (Ctrl-C stops it)"
	@echo "make test   run the whole test suite against real Triton and Envoy"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# generated stubs live outside the source tree; make them importable from the venv
	echo "$(CURDIR)/gen/python" > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sluice_gen.pth
	touch $@

# gRPC stubs and the descriptor set Envoy transcodes with, both generated from protos/ (never committed).
$(GEN): $(PROTOS) $(STAMP)
	$(BIN)/python -m services.cli.main protos
	touch $@

protos: $(GEN)

repo: $(GEN)
	$(BIN)/sluice repo render

run: $(GEN)
	$(BIN)/sluice up

test: $(GEN)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf gen .sluice build
