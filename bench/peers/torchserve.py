"""Start TorchServe 0.12 on loopback serving a checkpoint, batching on, on torch or on ONNX Runtime.

Both rows run handlers/torchserve_handler.py: the torch row on torch (the peers' usual executor),
the onnx row on the ONNX Runtime session our server builds (BENCH_EXECUTOR), so that a ratio
against it compares the front ends alone.

Its gRPC inference API (`org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions`) is
what the load generator calls; the request is encoded by hand (bench/wire.py), so the
benchmark needs neither TorchServe's .proto nor its protobuf version.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..harness import RunningServer
from ..servers import ServerProcess, free_port, wait_until_answering
from ..wire import field_bytes, field_string

PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
MODEL_NAME = "sst2-gru"
# Not a module of this package: TorchServe imports it inside its own venv.
HANDLER = Path(__file__).with_name("handlers") / "torchserve_handler.py"
# A row's backend -> the handler's executor (BENCH_EXECUTOR, a make_predictor backend).
EXECUTORS = {"torch": "torch", "onnx": "onnxruntime"}
BACKENDS = tuple(EXECUTORS)

# WARN everywhere, no access or per-request metrics lines: logging at INFO costs TorchServe a lot.
_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <File name="ts_log" fileName="${env:LOG_LOCATION:-logs}/ts_log.log">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="warn"/>
    <Logger name="MODEL_LOG" level="warn"/>
    <Logger name="MODEL_METRICS" level="warn"/>
    <Logger name="TS_METRICS" level="warn"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Root level="warn"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass(frozen=True)
class TorchServeConfig:
    batch_size: int = 32
    max_batch_delay_ms: int = 5
    workers: int = 1
    torch_threads: int = 1  # intra-op threads of torch, and of ONNX Runtime on the onnx backend
    backend: str = "torch"  # the handler's executor, one of BACKENDS

    def __post_init__(self) -> None:
        if self.backend not in EXECUTORS:
            raise ValueError(f"invalid TorchServe backend {self.backend!r}; options are {list(BACKENDS)}")

    @property
    def executor(self) -> str:
        return EXECUTORS[self.backend]

    @property
    def label(self) -> str:
        return (f"TorchServe 0.12 ({self.backend}, batch {self.batch_size}/{self.max_batch_delay_ms} ms, "
                f"{self.workers} worker{'s' if self.workers > 1 else ''})")


def predictions_request(text: str) -> bytes:
    """PredictionsRequest{model_name, input={"data": text}} serialized."""
    entry = field_string(1, "data") + field_bytes(2, text.encode("utf-8"))
    return field_string(1, MODEL_NAME) + field_bytes(3, entry)


def start_torchserve(venv: Path, checkpoint: Path, work: Path, config: TorchServeConfig,
                     message: bytes) -> RunningServer:
    home = work / f"torchserve-{config.backend}-b{config.batch_size}-w{config.workers}"
    store, logs = home / "model-store", home / "logs"
    store.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    files = ",".join(str(checkpoint / name) for name in ("config.json", "vocab.json", "model.safetensors"))
    subprocess.run([str(venv / "bin" / "torch-model-archiver"), "--model-name", MODEL_NAME, "--version", "1.0",
                    "--handler", str(HANDLER), "--extra-files", files, "--export-path", str(store), "--force"],
                   check=True, capture_output=True, timeout=120)
    grpc_port = free_port()
    models = {MODEL_NAME: {"1.0": {
        "defaultVersion": True, "marName": f"{MODEL_NAME}.mar", "minWorkers": config.workers,
        "maxWorkers": config.workers, "batchSize": config.batch_size, "maxBatchDelay": config.max_batch_delay_ms,
        "responseTimeout": 120,
    }}}
    properties = {
        "inference_address": f"http://127.0.0.1:{free_port()}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": grpc_port,
        "grpc_management_address": "127.0.0.1",
        "grpc_management_port": free_port(),
        "initial_worker_port": free_port(),
        "model_store": store,
        "load_models": f"{MODEL_NAME}.mar",
        "models": json.dumps(models),
        "default_workers_per_model": config.workers,
        "disable_token_authorization": "true",
        "enable_model_api": "true",
        "disable_system_metrics": "true",
        "async_logging": "true",
        # The default queue (100) answers "model busy" at concurrency 128; a tuned deployment raises it.
        "job_queue_size": 1024,
    }
    (home / "config.properties").write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    (home / "log4j2.xml").write_text(_LOG4J2)
    (home / "tmp").mkdir(exist_ok=True)
    # TMPDIR: TorchServe keeps its pid file there and refuses to start beside another instance.
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(home / "tmp"),
           "LOG_LOCATION": str(logs),
           "METRICS_LOCATION": str(logs), "BENCH_TORCH_THREADS": str(config.torch_threads),
           "BENCH_EXECUTOR": config.executor,
           "OMP_NUM_THREADS": str(config.torch_threads)}
    process = ServerProcess(config.label, [
        str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--model-store", str(store), "--ts-config", str(home / "config.properties"),
        "--log-config", str(home / "log4j2.xml"),
    ], home / "torchserve.out", env=env, cwd=home)
    target = f"127.0.0.1:{grpc_port}"
    size = wait_until_answering(process, target, PREDICTIONS, message, timeout_s=180)
    return RunningServer(process, grpc_port, 0, config.workers, {message: size})
