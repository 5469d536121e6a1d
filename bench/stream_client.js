// One client process of bench/stream_scale.py, in Node (@grpc/grpc-js): one StreamSentiment stream
// per plan, each sending one word every `interval` seconds (the next word only after the previous
// one's answer) and half-closing after its words, then reopening, for `seconds`; the same schedule
// and the same records as stream_scale.py's Python client.
//
//   node bench/stream_client.js CONFIG_JSON     (a file written by stream_scale.py's _node_shares)
//
// Why Node: the clients share the machine's cores with the server, and grpc-js spends less CPU per
// update than a Python grpc.aio client (docs/performance.md, "Scale"), which leaves the server more
// of the cores the benchmark is about. Prints one JSON object on stdout.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const definition = protoLoader.loadSync("rnn_sentiment/v1/sentiment.proto", {
  includeDirs: [config.proto_root || path.join(__dirname, "..", "proto")],
  keepCase: true,
  defaults: false,
});
const { SentimentService } = grpc.loadPackageDefinition(definition).rnn_sentiment.v1;

// Seconds on one clock for the whole machine (Python's time.time()), to sub-millisecond.
const wall = () => (performance.timeOrigin + performance.now()) / 1000;
const monotonic = () => performance.now() / 1000;
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));

const result = {
  sent: 0, answered: 0, errors: 0, error_codes: {},
  sent_at: [], latencies: [], lags: [], first_answers: [], stop_at: 0, cpu_seconds: 0,
};

function countFailure(code) {
  const name = code === undefined ? "UNKNOWN" : (grpc.status[code] || String(code));
  result.errors += 1;
  result.error_codes[name] = (result.error_codes[name] || 0) + 1;
}

// One open stream: write() a request and await its answer; the stream ends with end().
function openStream(client) {
  const call = client.StreamSentiment();
  const waiting = [];
  let ended = null; // the error or "end" that settles every later read
  const status = new Promise((resolve) => call.on("status", resolve)); // every call ends with one
  call.on("data", (response) => {
    const next = waiting.shift();
    if (next) next.resolve(response);
  });
  const settleAll = (outcome) => {
    ended = outcome;
    while (waiting.length) {
      const next = waiting.shift();
      if (outcome instanceof Error) next.reject(outcome); else next.resolve(null);
    }
  };
  call.on("error", (error) => settleAll(error));
  call.on("end", () => settleAll("end"));
  const read = () => new Promise((resolve, reject) => {
    if (ended instanceof Error) reject(ended);
    else if (ended) resolve(null);
    else waiting.push({ resolve, reject });
  });
  return {
    ask(request) { call.write(request); return read(); },
    finish() { call.end(); return read(); },
    status,
  };
}

// plan: stream_scale.py's StreamPlan (its first word, when it opens, its first stream's length).
async function oneStream(client, plan, stopAt) {
  let position = plan.position;
  await sleep(plan.delay_s);
  let firstAnswerPending = true;
  let nextTick = monotonic(); // when the next word is due: one every interval from the first
  let words = plan.first_words;
  while (monotonic() < stopAt) {
    const stream = openStream(client);
    try {
      for (let w = 0; w < words; w++) {
        if (nextTick > monotonic()) await sleep(nextTick - monotonic());
        result.lags.push(monotonic() - nextTick);
        nextTick += config.interval;
        const sent = monotonic(), sentWall = wall();
        result.sent += 1;
        await stream.ask({ text: config.words[position % config.words.length] + " " });
        result.sent_at.push(sentWall);
        result.latencies.push(monotonic() - sent);
        if (firstAnswerPending) { result.first_answers.push(wall()); firstAnswerPending = false; }
        result.answered += 1;
        position += 1;
        if (monotonic() >= stopAt) break;
      }
      const sent = monotonic(), sentWall = wall();
      result.sent += 1;
      const final = await stream.finish();
      if (final && final.final) {
        result.sent_at.push(sentWall);
        result.latencies.push(monotonic() - sent);
        result.answered += 1;
      }
      const { code } = await stream.status;
      if (code !== grpc.status.OK) countFailure(code);
      words = config.words_per_stream;
    } catch (error) {
      countFailure(error.code);
      await sleep(config.interval);
    }
  }
}

async function main() {
  const cpu = process.cpuUsage();
  const clients = [];
  for (let c = 0; c < config.channels; c++) {
    // Its own subchannel pool per client: one connection each (the kernel spreads connections,
    // not streams, over the server's workers).
    clients.push(new SentimentService(config.target, grpc.credentials.createInsecure(),
      { "grpc.use_local_subchannel_pool": 1 }));
  }
  const stopAt = monotonic() + config.seconds;
  result.stop_at = wall() + config.seconds;
  const streams = [];
  config.plans.forEach((plan, i) => streams.push(oneStream(clients[i % clients.length], plan, stopAt)));
  await Promise.all(streams);
  for (const client of clients) client.close();
  const used = process.cpuUsage(cpu);
  result.cpu_seconds = (used.user + used.system) / 1e6;
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => { console.error(error); process.exit(1); });
