"""The rnn-sentiment SDK: call a server from Python without torch.

>>> from rnn_sentiment.client import SentimentClient          # doctest: +SKIP
>>> with SentimentClient("127.0.0.1:50051") as client:
...     client.predict("a warm, funny and beautifully acted film").predictions[0].label
'positive'
"""

from .aio import AsyncSentimentClient
from .aio_streams import AsyncSentimentStream
from .channel import DEFAULT_RETRY_POLICY, OVERLOAD_RETRY_POLICY, RetryPolicy
from .errors import SentimentError
from .results import (
    Architecture, Attribution, CellStep, MemoryProfile, ModelInfo, Prediction, PredictResult, StreamUpdate,
    TraceResult, TraceStep,
)
from .streams import SentimentStream
from .sync import SentimentClient

__all__ = [
    "Architecture",
    "AsyncSentimentClient",
    "AsyncSentimentStream",
    "Attribution",
    "CellStep",
    "DEFAULT_RETRY_POLICY",
    "MemoryProfile",
    "ModelInfo",
    "OVERLOAD_RETRY_POLICY",
    "Prediction",
    "PredictResult",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "SentimentStream",
    "StreamUpdate",
    "TraceResult",
    "TraceStep",
]
