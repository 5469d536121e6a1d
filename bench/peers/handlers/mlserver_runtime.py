"""MLServer runtime for an rnn-sentiment checkpoint: the same load and predict functions as our server.

Copied into the model folder by bench/peers/mlserver.py (MLServer imports it from there, inside
bench/.peers-venv; this folder is not a package, since the project venv has no mlserver).
Input: a BYTES tensor `text` of shape [N] or [N, 1]; MLServer's adaptive batching concatenates
requests along the first axis and splits the outputs back. Outputs: `label` (BYTES) and
`probabilities` (FP32, [N, labels]).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.inference import encode_texts, predict_encoded


class SentimentRuntime(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
        self._loaded = load_checkpoint(self.settings.parameters.uri)
        predict_encoded(self._loaded, encode_texts(["warm up"], self._loaded.vocab, self._loaded.config.max_tokens))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = [t if isinstance(t, str) else t.decode("utf-8") for t in StringCodec.decode_input(payload.inputs[0])]
        loaded = self._loaded
        results = predict_encoded(loaded, encode_texts(texts, loaded.vocab, loaded.config.max_tokens))
        probabilities = np.array([r.probabilities for r in results], dtype=np.float32)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                StringCodec.encode_output("label", [r.label for r in results]),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
