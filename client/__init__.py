"""The rnn-sentiment SDK: call a server from Python without torch.

>>> from rnn_sentiment.client import SentimentClient          # doctest: +SKIP
>>> with SentimentClient("127.0.0.1:50051") as client:
...     client.predict("a warm, funny and beautifully acted film").predictions[0].label
'positive'
"""

from .aio import AsyncSentimentClient
from .channel import DEFAULT_RETRY_POLICY, RetryPolicy
from .errors import SentimentError
from .results import (
    Architecture, Attribution, CellStep, MemoryProfile, ModelInfo, Prediction, PredictResult, TraceResult,
    TraceStep,
)
from .sync import SentimentClient

__all__ = [
    "Architecture",
    "AsyncSentimentClient",
    "Attribution",
    "CellStep",
    "DEFAULT_RETRY_POLICY",
    "MemoryProfile",
    "ModelInfo",
    "Prediction",
    "PredictResult",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "TraceResult",
    "TraceStep",
]
