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

.PHONY: mutate results help install proto proto-baseline serve up down system-packages test test-fast test-system bench bench-peers bench-trace bench-isolation bench-long bench-stream-scale bench-stream bench-stream-predict bench-speedcode bench-frontend soak clean

help:
	@echo "make serve   - install into $(VENV) and serve the shipped model on $(ADDRESS) (metrics on $(METRICS_ADDRESS))"
	@echo "make up      - the docker-compose stack (2 replicas, nginx, Prometheus; Grafana if its image is here), offline; make down stops it"
	@echo "make test    - install the dev extras and run the whole suite (unit, integration, system)"
	@echo "make proto   - regenerate the Python stubs from proto/rnn_sentiment/v1/sentiment.proto and proto/inference/grpc_service.proto"
	@echo "make bench   - benchmark the server against its ceilings and StreamPredict against unary, ~10 min (BENCH_ARGS=--quick: a ~2 min smoke)"
	@echo "make bench-peers - the same load on TorchServe and MLServer side by side, ~8 min (installed in bench/.peers-venv)"
	@echo "make bench-trace - trace attributions' faithfulness (SST-2 dev), trace cost vs Predict, memory profiles"
	@echo "make bench-isolation - Predict p50/p99 with and without a client looping the heaviest allowed Trace, ~1.5 min"
	@echo "make bench-stream - a stream update's model cost: one word on a 5- vs 200-token session, 1-1,000 sessions per batch, ~1 min"
	@echo "make bench-stream-predict - StreamPredict vs unary Predict texts/s, same server, ~1.5 min (also run by make bench)"
	@echo "make bench-stream-scale - 1,000 StreamSentiment streams, a word each every 200 ms, --workers 2, ~3 min (p99, RSS, a step search, the no-op ceiling)"
	@echo "make bench-speedcode - each piece of speed code (--pin-workers) A/B against its plain alternative, --workers 2, ~3 min"
	@echo "make bench-long - accuracy and cost of the token limit (128-1,024, head vs head+tail) on long reviews, ~3 min"
	@echo "make mutate  - mutation testing of server/, client/, cli/ and the model's edges; report in docs/testing.md (MUTATE_ARGS=\"MODULE --limit N\")"
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

# The Open Inference Protocol's proto (package `inference`, upstream's names) is read under the
# virtual path rnn_sentiment/inference/, so its stubs import as rnn_sentiment.inference: no generic
# top-level `inference` module lands in site-packages.
OIP_STUBS := build/oip-stubs

proto: $(VENV)/.installed-dev
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
		proto/rnn_sentiment/v1/sentiment.proto
	rm -rf $(OIP_STUBS) && mkdir -p $(OIP_STUBS)
	$(PY) -m grpc_tools.protoc -Irnn_sentiment/inference=proto/inference --python_out=$(OIP_STUBS) \
		--pyi_out=$(OIP_STUBS) --grpc_python_out=$(OIP_STUBS) proto/inference/grpc_service.proto
	cp $(OIP_STUBS)/rnn_sentiment/inference/grpc_service_pb2* proto/inference/

# The released contract that `buf breaking` compares against; refresh only when releasing v1 changes.
proto-baseline: $(VENV)/.installed-dev
	cd proto && ../$(VENV)/bin/buf build -o v1-baseline.binpb

serve: $(VENV)/.installed-server
	$(VENV)/bin/rnn-sentiment serve --address $(ADDRESS) --metrics-address $(METRICS_ADDRESS)

# The docker-compose stack, offline included: starts Docker if needed, builds a local base image,
# refuses when a port it binds is taken, waits for health (scripts/stack-up.sh, docs/deployment.md).
up:
	scripts/stack-up.sh

down:
	scripts/stack-down.sh

system-packages:
	scripts/ensure-system-packages.sh

# The suite runs in a random order (pytest-randomly) so no test can lean on another having run
# first. The seed is printed first; replay a failing order with `make test SEED=N`.
ifndef SEED
SEED := $(shell $(PYTHON) -c 'import random; print(random.randrange(2**32))')
endif
# --durations: the slowest tests, where the suite's 15-minute budget goes (docs/testing.md).
PYTEST := $(PY) -m pytest -q -rs -p randomly --randomly-seed=$(SEED) --durations=15

test: $(VENV)/.installed-dev system-packages
	@echo "test order seed: $(SEED) (replay: make test SEED=$(SEED), or pytest -p randomly --randomly-seed=$(SEED))"
	$(PYTEST)

test-fast: $(VENV)/.installed-dev
	@echo "test order seed: $(SEED) (replay: make test-fast SEED=$(SEED))"
	$(PYTEST) -m "not slow"

test-system: $(VENV)/.installed-dev
	@echo "test order seed: $(SEED) (replay: make test-system SEED=$(SEED))"
	$(PYTEST) -m slow

# Benchmarks are never part of `make test`. BENCH_ARGS passes options, e.g.
# BENCH_ARGS="--quick --model-dir /tmp/benchmodels". Results land in bench/results/.
BENCH_ARGS ?=

bench: $(VENV)/.installed-server
	bench/install-h2load.sh
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.stream_predict $(filter --quick,$(BENCH_ARGS))
	@# The grpcio pin against the newest release, whole server (constraints.txt says why it is pinned).
	$(PY) -m bench.frontend --variants full:aio-uvloop --concurrency 32,128 --name frontend-pin

# StreamPredict (32 streams of one-text messages) against unary Predict at concurrency 32, same server,
# 3 interleaved rounds, ~1.5 min; part of `make bench`. BENCH_ARGS="--rounds 5 --flags '--workers 1'".
# Result: bench/results/stream_predict.md.
bench-stream-predict: $(VENV)/.installed-server
	bench/install-h2load.sh
	$(PY) -m bench.stream_predict $(BENCH_ARGS)

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

# Speed code against its plain alternative: --workers 2, h2load at concurrency 32 and 128, interleaved
# rounds, medians and spreads; keep only what wins. BENCH_ARGS="--rounds 5". Result: bench/results/speedcode.md.
bench-speedcode: $(VENV)/.installed-server
	bench/install-h2load.sh
	$(PY) -m bench.speedcode $(BENCH_ARGS)

# gRPC front ends in interleaved rounds (grpcio 1.75.1 against constraints.txt's, grpc.aio against
# grpc.server, uvloop on and off) on the no-op ceiling and on --workers 2; stacks under build/grpc-stacks/.
bench-frontend: $(VENV)/.installed-server
	bench/install-h2load.sh
	$(PY) -m bench.frontend $(BENCH_ARGS)

# Long texts: the served token limit's accuracy and cost. Result: bench/results/long_texts.md.
bench-long: $(VENV)/.installed-server
	$(PY) -m bench.long_texts --data $(DATA) $(BENCH_ARGS)

# A stream update's model cost, in-process: one more word on a 5- vs a 200-token session, and per update when
# 1/16/128/1,000 sessions advance in one call. BENCH_ARGS="--rounds 5". Result: bench/results/stream.md.
bench-stream: $(VENV)/.installed-server
	$(PY) -m bench.stream_cost $(BENCH_ARGS)

# StreamSentiment at scale: 1,000 open streams each sending a word every 200 ms for 30 s, plus shorter
# runs at 250/500/750 streams and the no-op ceiling at 1,000; Node clients (npm installs @grpc/grpc-js under
# build/node-example) where node is installed. BENCH_ARGS="--streams 200 --seconds 5 --search ''".
# Result: bench/results/stream_scale.md.
bench-stream-scale: $(VENV)/.installed-server
	$(PY) -m bench.stream_scale $(BENCH_ARGS)

# Soak: 2 workers under moderate Predict load and a Trace caller; fails on a growth trend in RSS,
# threads or open fds of any server process, or on any failed call. Results in bench/results/soak.{md,csv}.
SOAK_SECONDS ?= 600
SOAK_ARGS ?=

soak: $(VENV)/.installed-server
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# Mutation testing (docs/testing.md), never part of `make test`: cosmic-ray mutates each module of
# scripts/mutate_targets.toml in private copies of the tree (one per worker, a worker per core) and
# runs the tests that reach each mutant; the report goes to docs/testing.md.
# Resumable: MUTATE_ARGS="server/servicer.py --limit 20 --workers 2".
MUTATE_ARGS ?=

mutate: $(VENV)/.installed-dev
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

# The README's model table, re-measured from the shipped checkpoints on SST-2 dev.
results: $(VENV)/.installed-dev
	$(PY) -m bench.model_results --data $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
