# rnn-sentiment: every command a developer or CI runs.
# `make serve` and `make test` work on a fresh clone: they create .venv and install first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The constraints pin torch to the local CPU build; a looser pin can pull a multi-GB CUDA one.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
ADDRESS ?= 127.0.0.1:50051
METRICS_ADDRESS ?= 127.0.0.1:9464
DATA ?= ../shared/data/sst2

.PHONY: results help install proto proto-baseline serve system-packages test test-fast test-system bench bench-peers bench-trace bench-isolation soak clean

help:
	@echo "make serve   - install into $(VENV) and serve the shipped model on $(ADDRESS) (metrics on $(METRICS_ADDRESS))"
	@echo "make test    - install the dev extras and run the whole suite (unit, integration, system)"
	@echo "make proto   - regenerate the Python stubs from proto/rnn_sentiment/v1/sentiment.proto"
	@echo "make bench   - benchmark the server against its ceilings, ~8 min (BENCH_ARGS=--quick: a ~1.5 min smoke)"
	@echo "make bench-peers - the same load on TorchServe and MLServer side by side, ~8 min (installed in bench/.peers-venv)"
	@echo "make bench-trace - trace attributions' faithfulness (SST-2 dev), trace cost vs Predict, memory profiles"
	@echo "make bench-isolation - Predict p50/p99 with and without a client looping the heaviest allowed Trace, ~1.5 min"
	@echo "make soak    - 10 min of Predict + Trace load; RSS, threads and fds per server process must stay flat (SOAK_SECONDS=60: the CI length)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip

# One stamp per extra set, redone when pyproject.toml or the constraints change.
$(VENV)/.installed-server: pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e '.[server]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.installed-server

install: $(VENV)/.installed-server

proto: $(VENV)/.installed-dev
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
		proto/rnn_sentiment/v1/sentiment.proto

# The released contract that `buf breaking` compares against; refresh only when releasing v1 changes.
proto-baseline: $(VENV)/.installed-dev
	cd proto && ../$(VENV)/bin/buf build -o v1-baseline.binpb

serve: $(VENV)/.installed-server
	$(VENV)/bin/rnn-sentiment serve --address $(ADDRESS) --metrics-address $(METRICS_ADDRESS)

system-packages:
	scripts/ensure-system-packages.sh

test: $(VENV)/.installed-dev system-packages
	$(PY) -m pytest -q -rs

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -q -rs -m "not slow"

test-system: $(VENV)/.installed-dev
	$(PY) -m pytest -q -rs -m slow

# Benchmarks are never part of `make test`. BENCH_ARGS passes options, e.g.
# BENCH_ARGS="--quick --model-dir /tmp/benchmodels". Results land in bench/results/.
BENCH_ARGS ?=

bench: $(VENV)/.installed-server
	bench/install-h2load.sh
	$(PY) -m bench.run $(BENCH_ARGS)

bench-peers: $(VENV)/.installed-server
	bench/install-h2load.sh
	bench/peers/setup.sh
	$(PY) -m bench.peers.run --skip-setup $(BENCH_ARGS)

# Trace: attribution faithfulness on SST-2 dev, trace cost vs Predict, memory profiles.
# BENCH_ARGS="--quick --model-dir DIR"; add "--pictures docs/images" to redraw docs/trace.md's pictures.
bench-trace: $(VENV)/.installed-dev
	$(PY) -m bench.trace_run $(BENCH_ARGS)

# Predict p50/p99 with and without a client looping the heaviest allowed Trace, one worker, ~1.5 min.
# BENCH_ARGS="--seconds 8 --rounds 3 --callers 4". Result: bench/results/trace_isolation.md.
bench-isolation: $(VENV)/.installed-server
	$(PY) -m bench.trace_isolation $(BENCH_ARGS)

# Soak: 2 workers under moderate Predict load and a Trace caller; fails on a growth trend in RSS,
# threads or open fds of any server process, or on any failed call. Results in bench/results/soak.{md,csv}.
SOAK_SECONDS ?= 600
SOAK_ARGS ?=

soak: $(VENV)/.installed-server
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# The README's model table, re-measured from the shipped checkpoints on SST-2 dev.
results: $(VENV)/.installed-dev
	$(PY) -m bench.model_results --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
