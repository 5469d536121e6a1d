"""Score a file of texts (one per line), any length: `python examples/python/predict_many.py FILE [HOST:PORT]`.

predict_many chunks under the server's per-request limit, keeps a few requests in flight and
yields predictions in input order, reading the file lazily.
"""

import collections
import os
import sys

from rnn_sentiment.client import SentimentClient

path = sys.argv[1]
target = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("RNN_SENTIMENT_TARGET", "127.0.0.1:50051")

counts: collections.Counter[str] = collections.Counter()
with SentimentClient(target, timeout=30) as client, open(path, encoding="utf-8") as lines:
    texts = (line.strip() for line in lines if line.strip())
    for prediction in client.predict_many(texts):
        counts[prediction.label] += 1
print(dict(sorted(counts.items())))
