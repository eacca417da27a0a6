// graphile-worker delivery driver. See README.md beside this file.
//
//   node graphile.mjs --database-url URL --phase enqueue --count 50000
//   node graphile.mjs --database-url URL --phase work --count 50000 \
//        --receiver http://127.0.0.1:PORT/e0 --secret whsec_… [--timeout-s 300]

import pg from "pg";
import { eventPayload, makeDeliverer, messageId, onSignal, packageVersion, parseArgs, report, round, vacuumAnalyze, waitUntil } from "./common.mjs";

const SYSTEM = "graphile-worker";
const TASK = "deliver_webhook";

const options = parseArgs(process.argv.slice(2), {
  databaseUrl: "",
  receiver: "",
  secret: "",
  count: 0,
  phase: "",
  timeoutS: 300,
  idPrefix: "msg_",
  // enqueue: jobs per addJobs call
  batch: 5000,
  // work: its best configuration measured in /work/shared/PEER-BENCH.md (32 / 64 and 64 / 128)
  concurrency: 32,
  localQueue: 64,
  completeJobBatchDelay: 10,
  maxSockets: 0,
  // 1: keep graphile-worker's default info line per completed job (to see what it costs)
  logSuccess: 0,
});

// The per-job "Completed task … with success" info line is switched off the documented way (the
// NO_LOG_SUCCESS variable, read when the module loads); warnings and errors are still printed.
if (!options.logSuccess) process.env.NO_LOG_SUCCESS = "1";
const { Logger, makeWorkerUtils, run } = await import("graphile-worker");
const quietLogger = new Logger(() => (level, message) => {
  // First line only: a failed delivery's stack trace says nothing the message doesn't.
  if (level === "error" || level === "warning" || (options.logSuccess && level === "info")) process.stderr.write(`[graphile-worker] ${level}: ${message.split("\n")[0]}\n`);
});
const version = packageVersion("graphile-worker");
const started = performance.now();
const deadline = started + options.timeoutS * 1000;

try {
  if (options.phase === "enqueue") await enqueue();
  else await work();
} catch (err) {
  process.stderr.write(`error: ${SYSTEM} ${options.phase}: ${err.message}\n`);
  process.exit(1);
}

async function enqueue() {
  // makeWorkerUtils migrates the graphile_worker schema (creating it on a fresh database).
  const utils = await makeWorkerUtils({ connectionString: options.databaseUrl, logger: quietLogger });
  let enqueued = 0;
  try {
    await utils.migrate();
    for (let first = 1; first <= options.count; first += options.batch) {
      const last = Math.min(options.count, first + options.batch - 1);
      const specs = [];
      for (let n = first; n <= last; n++) {
        specs.push({ identifier: TASK, payload: { id: messageId(options.idPrefix, n), event: eventPayload(n) } });
      }
      await utils.addJobs(specs);
      enqueued = last;
    }
  } finally {
    await utils.release();
  }
  const seconds = (performance.now() - started) / 1000;
  const vacuumSeconds = await vacuumAnalyze(options.databaseUrl, "graphile_worker._private_jobs, graphile_worker._private_tasks");
  report({
    system: SYSTEM,
    version,
    phase: "enqueue",
    count: options.count,
    enqueued,
    seconds: round(seconds),
    per_second: Math.round(enqueued / seconds),
    vacuum_seconds: round(vacuumSeconds),
  });
}

async function work() {
  const { deliver, stats, close } = makeDeliverer({
    receiver: options.receiver,
    secret: options.secret,
    maxSockets: options.maxSockets || options.concurrency,
  });
  const done = new Set();
  let allDone;
  const reached = new Promise((resolve) => (allDone = resolve));
  const interrupted = onSignal(() => allDone());
  const runner = await run({
    connectionString: options.databaseUrl,
    concurrency: options.concurrency,
    // The pool's advice: at least concurrency + 2 connections.
    maxPoolSize: options.concurrency + 4,
    logger: quietLogger,
    // SIGINT/SIGTERM are ours (onSignal): stop, report, exit.
    noHandleSignals: true,
    taskList: {
      [TASK]: async (payload) => {
        await deliver(payload.id, payload.event);
        done.add(payload.id);
        if (done.size >= options.count) allDone();
      },
    },
    preset: {
      worker: {
        localQueue: { size: options.localQueue },
        completeJobBatchDelay: options.completeJobBatchDelay,
        failJobBatchDelay: options.completeJobBatchDelay,
      },
    },
  });
  const timer = setTimeout(allDone, Math.max(0, deadline - performance.now()));
  await reached;
  clearTimeout(timer);
  const deliveredAt = performance.now();
  // Completions are batched: wait until graphile-worker has deleted every job it completed.
  const client = new pg.Client({ connectionString: options.databaseUrl });
  await client.connect();
  const remaining = async () =>
    Number((await client.query("SELECT count(*) AS n FROM graphile_worker._private_jobs")).rows[0].n);
  let left = -1;
  if (done.size >= options.count) {
    await waitUntil(async () => (left = await remaining()) === 0, deadline, 10);
  }
  const committedAt = performance.now();
  await runner.stop();
  left = await remaining();
  await client.end();
  close();
  const completed = done.size;
  const seconds = (committedAt - started) / 1000;
  report({
    system: SYSTEM,
    version,
    phase: "work",
    config: { concurrency: options.concurrency, local_queue: options.localQueue, complete_job_batch_delay_ms: options.completeJobBatchDelay },
    count: options.count,
    completed,
    remaining_jobs: left,
    attempts: stats.attempts,
    failed_attempts: stats.failures,
    seconds: round(seconds),
    first_post_s: round((stats.firstAt - started) / 1000),
    last_2xx_s: round((stats.lastOkAt - started) / 1000),
    delivered_s: round((deliveredAt - started) / 1000),
    per_second: Math.round(completed / seconds),
    interrupted: interrupted.signal,
    timed_out: !interrupted.signal && (completed < options.count || left !== 0),
  });
  process.exitCode = completed >= options.count && left === 0 ? 0 : 2;
}
