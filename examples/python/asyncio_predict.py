"""Score texts concurrently with the asyncio SDK: `python examples/python/asyncio_predict.py [HOST:PORT]`."""

import asyncio
import os
import sys

from rnn_sentiment.client import AsyncSentimentClient

TEXTS = ["a warm, funny and beautifully acted film", "a dull , lifeless movie", "not bad at all"]


async def main(target: str) -> None:
    async with AsyncSentimentClient(target, timeout=10) as client:
        await client.wait_until_serving(timeout=30)
        results = await asyncio.gather(*(client.predict(text) for text in TEXTS))
        for text, result in zip(TEXTS, results):
            print(result.predictions[0].label, text)
        info = await client.model_info()
        print(f"default model {info.name}: at most {info.max_texts_per_request} texts per request")


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RNN_SENTIMENT_TARGET", "127.0.0.1:50051")))
