"""Benchmarks for rnn-sentiment: throughput and latency as ratios against ceilings measured in the same run.

`python -m bench.run` (make bench) measures our server against ceiling A (a no-op gRPC server)
and ceiling B (the model in-process); `python -m bench.peers.run` (make bench-peers) puts
TorchServe and MLServer beside it under the same load generator. Never part of `make test`.
"""
