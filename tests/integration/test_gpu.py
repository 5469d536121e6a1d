"""The CUDA path: same answers on the GPU as on the CPU. Skipped, with the reason, without CUDA."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device on this machine (torch.cuda.is_available() is False)", allow_module_level=True)

from rnn_sentiment.client import SentimentClient  # noqa: E402
from tests.support import ServerProcess  # noqa: E402

TEXTS = ["a dull , lifeless and painfully boring movie", "a warm, funny and beautifully acted film", "not bad at all"]


def test_cuda_server_matches_cpu_server() -> None:
    with ServerProcess(extra_args=["--device", "cuda"]) as gpu, ServerProcess(extra_args=["--device", "cpu"]) as cpu:
        with SentimentClient(gpu.target, timeout=60) as on_gpu, SentimentClient(cpu.target, timeout=60) as on_cpu:
            assert on_gpu.model_info().device.startswith("cuda")
            gpu_result = on_gpu.predict(TEXTS)
            cpu_result = on_cpu.predict(TEXTS)
            for g, c in zip(gpu_result.predictions, cpu_result.predictions):
                assert g.label == c.label
                assert g.probabilities == pytest.approx(c.probabilities, abs=1e-4)
            trace = on_gpu.trace(TEXTS[2])
            assert trace.steps[-1].probabilities == pytest.approx(on_gpu.predict(TEXTS[2]).predictions[0].probabilities, abs=1e-6)
