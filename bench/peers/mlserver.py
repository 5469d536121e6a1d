"""Start Seldon MLServer 1.7 on loopback serving a checkpoint through mlserver_runtime.py, adaptive batching on.

The load generator calls its Open Inference Protocol v2 gRPC API
(`inference.GRPCInferenceService/ModelInfer`); the request is encoded by hand (bench/wire.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..harness import RunningServer
from ..servers import ServerProcess, free_port, wait_until_answering
from ..wire import field_bytes, field_packed_int64, field_string

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_NAME = "sst2-gru"
# Not a module of this package: it imports mlserver, which only the peers venv has.
RUNTIME = Path(__file__).with_name("handlers") / "mlserver_runtime.py"


@dataclass(frozen=True)
class MLServerConfig:
    max_batch_size: int = 32
    max_batch_time_ms: float = 5.0
    parallel_workers: int = 1
    torch_threads: int = 1

    @property
    def label(self) -> str:
        return (f"MLServer 1.7 (batch {self.max_batch_size}/{self.max_batch_time_ms:g} ms, "
                f"{self.parallel_workers} worker{'s' if self.parallel_workers > 1 else ''})")


def model_infer_request(text: str) -> bytes:
    """ModelInferRequest{model_name, inputs=[{name "text", BYTES, shape [1], bytes_contents [text]}]}."""
    contents = field_bytes(8, text.encode("utf-8"))
    tensor = field_string(1, "text") + field_string(2, "BYTES") + field_packed_int64(3, [1]) + field_bytes(5, contents)
    return field_string(1, MODEL_NAME) + field_bytes(5, tensor)


def start_mlserver(venv: Path, checkpoint: Path, work: Path, config: MLServerConfig, message: bytes) -> RunningServer:
    home = work / f"mlserver-b{config.max_batch_size}-w{config.parallel_workers}"
    model_folder = home / MODEL_NAME
    model_folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNTIME, model_folder / "sentiment_runtime.py")
    grpc_port = free_port()
    settings = {
        "debug": False, "host": "127.0.0.1", "http_port": free_port(), "grpc_port": grpc_port,
        "metrics_port": free_port(), "parallel_workers": config.parallel_workers,
        "metrics_dir": str(home / "metrics"), "load_models_at_startup": True,
    }
    model_settings = {
        "name": MODEL_NAME, "implementation": "sentiment_runtime.SentimentRuntime",
        "parameters": {"uri": str(checkpoint)},
        "max_batch_size": config.max_batch_size, "max_batch_time": config.max_batch_time_ms / 1000,
    }
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "BENCH_TORCH_THREADS": str(config.torch_threads), "OMP_NUM_THREADS": str(config.torch_threads)}
    process = ServerProcess(config.label, [str(venv / "bin" / "mlserver"), "start", str(home)],
                            home / "mlserver.out", env=env, cwd=home)
    target = f"127.0.0.1:{grpc_port}"
    size = wait_until_answering(process, target, MODEL_INFER, message, timeout_s=180)
    return RunningServer(process, grpc_port, 0, config.parallel_workers, {message: size})
