// Predict and Trace from Node.js, straight from the .proto (no generated code):
//   npm install && node predict.js [HOST:PORT]     (default $RNN_SENTIMENT_TARGET, then 127.0.0.1:50051)
// Exits 1 with the gRPC status on a failed call.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = process.env.RNN_SENTIMENT_PROTO_ROOT || path.join(__dirname, "..", "..", "proto");
const target = process.argv[2] || process.env.RNN_SENTIMENT_TARGET || "127.0.0.1:50051";

const definition = protoLoader.loadSync("rnn_sentiment/v1/sentiment.proto", {
  includeDirs: [PROTO_ROOT],
  keepCase: true, // field names as in the .proto (snake_case)
  enums: String,
  defaults: true,
});
const { SentimentService } = grpc.loadPackageDefinition(definition).rnn_sentiment.v1;
const client = new SentimentService(target, grpc.credentials.createInsecure());

function call(method, request) {
  const deadline = new Date(Date.now() + 10_000); // a deadline on every call
  return new Promise((resolve, reject) =>
    client[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response))));
}

async function main() {
  const predicted = await call("Predict", { texts: ["a warm, funny and beautifully acted film", "a dull , lifeless movie"] });
  for (const p of predicted.predictions) console.log(`${p.label} ${p.score.toFixed(3)}`);

  const trace = await call("Trace", { text: "not a bad film", include_hidden_states: false });
  const positive = trace.labels.indexOf("positive");
  for (const step of trace.steps) {
    console.log(`${step.token.padStart(8)}  p(positive)=${step.probabilities[positive].toFixed(3)}`);
  }
  console.log(`final: ${trace.prediction.label}`);
}

main()
  .catch((error) => {
    console.error(`${grpc.status[error.code] || error.code}: ${error.details || error.message}`);
    process.exitCode = 1;
  })
  .finally(() => client.close());
