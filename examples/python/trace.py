"""Watch the network read a text word by word: `python examples/python/trace.py [HOST:PORT]`.

Per token: the positive probability if the sentence stopped there, and how much that word moved it.
"""

import os
import sys

from rnn_sentiment.client import SentimentClient

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RNN_SENTIMENT_TARGET", "127.0.0.1:50051")

with SentimentClient(target, timeout=30) as client:
    trace = client.trace("it's not a bad film at all", attributions=["occlusion"])
    for step in trace.steps:
        print(f"{step.token:>8}  p(positive)={trace.positive_probability(step):.3f}  moved {step.positive_delta:+.3f}")
    print("final:", trace.prediction.label, "attributions:", [round(s, 3) for s in trace.attribution("occlusion").scores])
