"""Score two texts with the blocking SDK: `python examples/python/sync_predict.py [HOST:PORT]`.

The target defaults to $RNN_SENTIMENT_TARGET, then 127.0.0.1:50051.
"""

import os
import sys

from rnn_sentiment.client import SentimentClient, SentimentError

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RNN_SENTIMENT_TARGET", "127.0.0.1:50051")

with SentimentClient(target, timeout=10) as client:
    result = client.predict(["a warm, funny and beautifully acted film", "a dull , lifeless movie"])
    print(f"model {result.model}@{result.model_version}")
    for prediction in result.predictions:
        print(prediction.label, round(prediction.score, 3))
    try:
        client.predict([""])  # refused: a text must have a non-whitespace character
    except SentimentError as error:
        print(error.code, error.field_violations)
