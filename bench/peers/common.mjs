// What both peer drivers share: the command line, the payload (the same shape and size as the
// bench's own `fill_sql` in bench/src/rig.rs), Standard Webhooks signing and the keep-alive HTTP
// POST to the receiver, and the one JSON line each run prints.

import { createHmac } from "node:crypto";
import http from "node:http";
import { readFileSync } from "node:fs";

const USAGE = `usage: node DRIVER.mjs --database-url URL --phase enqueue|work --count N
         [--receiver http://127.0.0.1:PORT/path] [--secret whsec_…] [--timeout-s 300]
         [--id-prefix msg_] [--batch N] [--concurrency N] [--local-queue N] [--loops N]
         [--batch-size N] [--max-sockets N]
The signing secret may also come from the WEBHOOK_SECRET environment variable.`;

/** Parses `--name value` pairs; unknown names and missing values are errors. */
export function parseArgs(argv, defaults) {
  const options = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    }
    if (!arg.startsWith("--")) fail(`unexpected argument ${arg}`);
    const eq = arg.indexOf("=");
    const name = (eq > 0 ? arg.slice(2, eq) : arg.slice(2)).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (!(name in options)) fail(`unknown option --${arg.slice(2)}`);
    if (value === undefined) fail(`--${arg.slice(2)} needs a value`);
    options[name] = typeof defaults[name] === "number" ? Number(value) : value;
    if (typeof defaults[name] === "number" && !Number.isFinite(options[name])) fail(`--${arg.slice(2)} must be a number`);
  }
  if (!options.databaseUrl) fail("--database-url is required");
  if (!["enqueue", "work"].includes(options.phase)) fail("--phase must be enqueue or work");
  if (!(options.count > 0)) fail("--count must be positive");
  if (options.phase === "work") {
    if (!options.receiver) fail("--receiver is required for --phase work");
    options.secret ||= process.env.WEBHOOK_SECRET || "";
    if (!options.secret) fail("--secret (or WEBHOOK_SECRET) is required for --phase work");
  }
  return options;
}

export function fail(message) {
  process.stderr.write(`error: ${message}\n${USAGE}\n`);
  process.exit(64);
}

/** The version of an installed package, read from its package.json. */
export function packageVersion(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

/**
 * Event number `n` (1-based), the same JSON text the bench's `fill_sql` stores for its own queue:
 * 256 to 259 bytes, every one different.
 */
export function eventPayload(n) {
  return {
    type: "invoice.paid",
    data: {
      invoice: `in_${String(n).padStart(10, "0")}`,
      amount: 1000 + (n % 9000),
      currency: "eur",
      customer: `cus_${String(n % 100000).padStart(6, "0")}`,
      lines: [{ sku: "plan-pro", quantity: 1, unit_amount: 4200 }],
      paid_at: "2026-11-29T00:00:00Z",
      note: "x".repeat(39),
    },
  };
}

/** The unique message id of job `n`: the webhook-id header the receiver counts. */
export function messageId(prefix, n) {
  return `${prefix}${n}`;
}

/** The raw key of a `whsec_<base64>` secret (24 to 64 bytes, as Standard Webhooks says). */
export function parseSecret(text) {
  if (!text.startsWith("whsec_")) fail("the signing secret must start with whsec_");
  const key = Buffer.from(text.slice(6), "base64");
  if (key.length < 24 || key.length > 64) fail(`the signing secret is ${key.length} bytes; it must be 24 to 64`);
  return key;
}

/** `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). */
export function sign(key, id, timestamp, body) {
  return "v1," + createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest("base64");
}

/**
 * A signer and poster for one receiver URL over plain HTTP/1.1 keep-alive. `deliver(id, event)`
 * resolves when the receiver answered 2xx and rejects on any other status, a transport error or
 * the timeout, so the peer's job fails and the peer retries it.
 */
export function makeDeliverer({ receiver, secret, maxSockets, requestTimeoutMs = 30_000 }) {
  const url = new URL(receiver);
  if (url.protocol !== "http:") fail("--receiver must be a plain http:// URL");
  const key = parseSecret(secret);
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: "lifo" });
  const base = {
    agent,
    host: url.hostname,
    port: url.port || 80,
    path: url.pathname + url.search,
    method: "POST",
    timeout: requestTimeoutMs,
  };
  const stats = { attempts: 0, failures: 0, firstAt: 0, lastOkAt: 0 };
  function deliver(id, event) {
    const body = Buffer.from(typeof event === "string" ? event : JSON.stringify(event));
    const timestamp = Math.floor(Date.now() / 1000);
    stats.attempts++;
    if (stats.firstAt === 0) stats.firstAt = performance.now();
    return new Promise((resolve, reject) => {
      const request = http.request({
        ...base,
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          "user-agent": "webhook-bench-peer",
          "webhook-id": id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": sign(key, id, timestamp, body),
        },
      });
      request.on("response", (response) => {
        response.resume();
        response.on("end", () => {
          if (response.statusCode >= 200 && response.statusCode < 300) {
            stats.lastOkAt = performance.now();
            resolve();
          } else {
            stats.failures++;
            reject(new Error(`receiver answered ${response.statusCode}`));
          }
        });
        response.on("error", (err) => {
          stats.failures++;
          reject(err);
        });
      });
      request.on("timeout", () => request.destroy(new Error(`no answer within ${requestTimeoutMs} ms`)));
      request.on("error", (err) => {
        stats.failures++;
        reject(err);
      });
      request.end(body);
    });
  }
  return { deliver, stats, close: () => agent.destroy() };
}

/**
 * VACUUM ANALYZE of the peer's job tables after enqueueing, as the bench does for our own queue
 * after filling it (what autovacuum would have done to a queue that grew over time). Without
 * statistics the planner can pick plans that no long-running deployment would see: pg-boss's
 * batch completion took 0.9 s per 1,000 jobs on a never-analyzed table, 4 ms after ANALYZE.
 * Returns the seconds it took.
 */
export async function vacuumAnalyze(databaseUrl, tables) {
  const began = performance.now();
  const { default: pg } = await import("pg");
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(`VACUUM ANALYZE ${tables}`);
  } finally {
    await client.end();
  }
  return (performance.now() - began) / 1000;
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check()` every `everyMs` until it returns true or `deadline` (performance.now()) passes. */
export async function waitUntil(check, deadline, everyMs = 20) {
  while (performance.now() < deadline) {
    if (await check()) return true;
    await sleep(everyMs);
  }
  return check();
}

/**
 * On the first SIGINT or SIGTERM calls `stop()` (the driver then stops its peer gracefully and
 * reports what it completed); a second one exits at once. The returned object's `signal` names
 * the signal received, or stays null.
 */
export function onSignal(stop) {
  const state = { signal: null };
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      if (state.signal) process.exit(130);
      state.signal = signal;
      stop();
    });
  }
  return state;
}

/** Prints the run's one JSON line on stdout. */
export function report(fields) {
  process.stdout.write(JSON.stringify({ ...fields, pid: process.pid }) + "\n");
}

export const round = (x, digits = 3) => Number(x.toFixed(digits));
