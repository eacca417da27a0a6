// A small receiver for checking the drivers by hand (the Rust bench uses its own, bench/src/sink.rs).
// Listens on 127.0.0.1, verifies each Standard Webhooks signature, counts each webhook-id once and
// every repeat of an id already answered 2xx as a duplicate. Prints "listening PORT" first, then a
// JSON line of counts on GET /stats, on SIGINT/SIGTERM and when --max-seconds have passed.
//
//   node receiver.mjs --secret whsec_… [--port 0] [--expect N --id-prefix msg_] [--fail-every K]
//                     [--max-seconds 900]
//
// --fail-every K answers 500 to the first attempt of every K-th id (by arrival), to exercise the
// drivers' retry path; those ids must still arrive once with a 2xx later.

import http from "node:http";
import { parseSecret, sign } from "./common.mjs";
import { timingSafeEqual } from "node:crypto";

const options = { port: "0", secret: process.env.WEBHOOK_SECRET || "", expect: "0", idPrefix: "msg_", failEvery: "0", maxSeconds: "900" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (!(name in options) || argv[i + 1] === undefined) {
    process.stderr.write(`error: bad option ${argv[i]}\n`);
    process.exit(64);
  }
  options[name] = argv[i + 1];
}
const key = parseSecret(options.secret);
const failEvery = Number(options.failEvery);
const expect = Number(options.expect);

const ok = new Set(); // ids answered 2xx
const refused = new Set(); // ids answered 500 on purpose
let requests = 0;
let duplicates = 0;
let invalid = 0;
let injected = 0;
let arrivals = 0;
let first = 0;
let last = 0;

function valid(id, timestamp, body, header) {
  if (!id || !/^\d+$/.test(timestamp)) return false;
  const expected = Buffer.from(sign(key, id, timestamp, body));
  return header.split(" ").some((candidate) => {
    const given = Buffer.from(candidate);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

function stats() {
  let missing;
  if (expect > 0) {
    missing = 0;
    for (let n = 1; n <= expect; n++) if (!ok.has(`${options.idPrefix}${n}`)) missing++;
  }
  return {
    requests,
    distinct: ok.size,
    duplicates,
    invalid,
    injected_failures: injected,
    ...(missing === undefined ? {} : { expected: expect, missing }),
    window_s: last > first ? Number(((last - first) / 1000).toFixed(3)) : 0,
    per_second: last > first ? Math.round(ok.size / ((last - first) / 1000)) : 0,
  };
}

const server = http.createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
  if (request.method === "GET" && request.url === "/stats") {
    response.setHeader("content-type", "application/json");
    response.end(JSON.stringify(stats()) + "\n");
    return;
  }
  if (request.method === "POST" && request.url === "/reset") {
    ok.clear();
    refused.clear();
    requests = duplicates = invalid = injected = arrivals = first = last = 0;
    response.end();
    return;
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks);
    const id = request.headers["webhook-id"] || "";
    requests++;
    const now = performance.now();
    if (first === 0) first = now;
    last = now;
    if (!valid(id, request.headers["webhook-timestamp"] || "", body, request.headers["webhook-signature"] || "")) {
      invalid++;
      response.statusCode = 400;
      response.end();
      return;
    }
    if (failEvery > 0 && !ok.has(id) && !refused.has(id) && ++arrivals % failEvery === 0) {
      refused.add(id);
      injected++;
      response.statusCode = 500;
      response.end();
      return;
    }
    if (ok.has(id)) duplicates++;
    else ok.add(id);
    response.statusCode = 200;
    response.end();
  });
});

function finish() {
  process.stdout.write(JSON.stringify(stats()) + "\n");
  server.close();
  process.exit(0);
}
process.on("SIGINT", finish);
process.on("SIGTERM", finish);
setTimeout(finish, Number(options.maxSeconds) * 1000).unref();

server.listen(Number(options.port), "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
