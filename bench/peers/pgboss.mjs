// pg-boss delivery driver. See README.md beside this file.
//
//   node pgboss.mjs --database-url URL --phase enqueue --count 50000
//   node pgboss.mjs --database-url URL --phase work --count 50000 \
//        --receiver http://127.0.0.1:PORT/e0 --secret whsec_… [--timeout-s 300]

import PgBoss from "pg-boss";
import pg from "pg";
import { eventPayload, makeDeliverer, messageId, onSignal, packageVersion, parseArgs, report, round, vacuumAnalyze, waitUntil } from "./common.mjs";

const SYSTEM = "pg-boss";
const QUEUE = "deliver_webhook";

const options = parseArgs(process.argv.slice(2), {
  databaseUrl: "",
  receiver: "",
  secret: "",
  count: 0,
  phase: "",
  timeoutS: 300,
  idPrefix: "msg_",
  // enqueue: jobs per insert() call
  batch: 5000,
  // work: its best configuration measured in /work/shared/PEER-BENCH.md (4 work() loops × 1,000)
  loops: 4,
  batchSize: 1000,
  maxSockets: 256,
});

const version = packageVersion("pg-boss");
const started = performance.now();
const deadline = started + options.timeoutS * 1000;

function boss(extra) {
  const instance = new PgBoss({ connectionString: options.databaseUrl, schedule: false, ...extra });
  instance.on("error", (err) => process.stderr.write(`[pg-boss] error: ${err.message}\n`));
  return instance;
}

try {
  if (options.phase === "enqueue") await enqueue();
  else await work();
} catch (err) {
  process.stderr.write(`error: ${SYSTEM} ${options.phase}: ${err.message}\n`);
  process.exit(1);
}

async function enqueue() {
  // start() creates or migrates the pgboss schema; no maintenance from this short-lived process.
  const producer = boss({ supervise: false });
  await producer.start();
  let enqueued = 0;
  try {
    // A failed delivery is retried (pg-boss 10's default is 2 retries, right away); back off a
    // little and keep trying for as long as graphile-worker's default 25 attempts would.
    await producer.createQueue(QUEUE, { name: QUEUE, retryLimit: 24, retryDelay: 1, retryBackoff: true });
    for (let first = 1; first <= options.count; first += options.batch) {
      const last = Math.min(options.count, first + options.batch - 1);
      const jobs = [];
      for (let n = first; n <= last; n++) {
        jobs.push({ name: QUEUE, data: { id: messageId(options.idPrefix, n), event: eventPayload(n) } });
      }
      await producer.insert(jobs);
      enqueued = last;
    }
  } finally {
    await producer.stop({ graceful: false, wait: true, close: true });
  }
  const seconds = (performance.now() - started) / 1000;
  const vacuumSeconds = await vacuumAnalyze(options.databaseUrl, "pgboss.job, pgboss.queue");
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
    maxSockets: options.maxSockets,
  });
  const done = new Set();
  let allDone;
  const reached = new Promise((resolve) => (allDone = resolve));
  const interrupted = onSignal(() => allDone());
  const consumer = boss({});
  await consumer.start();
  // One batch of jobs: deliver each; fail only those whose delivery failed (pg-boss then retries
  // them), and return normally so pg-boss completes the rest (it completes only active jobs).
  const handler = async (jobs) => {
    const outcomes = await Promise.allSettled(jobs.map((job) => deliver(job.data.id, job.data.event)));
    const failed = [];
    outcomes.forEach((outcome, i) => {
      if (outcome.status === "fulfilled") done.add(jobs[i].data.id);
      else failed.push(jobs[i].id);
    });
    if (failed.length > 0) await consumer.fail(QUEUE, failed, { message: "delivery failed" });
    if (done.size >= options.count) allDone();
  };
  for (let i = 0; i < options.loops; i++) {
    // 0.5 s is the shortest polling interval pg-boss accepts; a loop that fetched a full batch
    // fetches again right away.
    await consumer.work(QUEUE, { batchSize: options.batchSize, pollingIntervalSeconds: 0.5 }, handler);
  }
  const timer = setTimeout(allDone, Math.max(0, deadline - performance.now()));
  await reached;
  clearTimeout(timer);
  const deliveredAt = performance.now();
  // pg-boss completes a batch after its handler returns, without waiting: wait until the
  // database says every job is completed.
  const client = new pg.Client({ connectionString: options.databaseUrl });
  await client.connect();
  const completedInDb = async () =>
    Number(
      (await client.query("SELECT count(*) AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'", [QUEUE]))
        .rows[0].n,
    );
  let committed = 0;
  if (done.size >= options.count) {
    await waitUntil(async () => (committed = await completedInDb()) >= options.count, deadline, 10);
  }
  const committedAt = performance.now();
  await consumer.stop({ graceful: true, wait: true, close: true, timeout: 10_000 });
  committed = await completedInDb();
  await client.end();
  close();
  const completed = done.size;
  const seconds = (committedAt - started) / 1000;
  report({
    system: SYSTEM,
    version,
    phase: "work",
    config: { loops: options.loops, batch_size: options.batchSize, max_sockets: options.maxSockets },
    count: options.count,
    completed,
    completed_in_db: committed,
    attempts: stats.attempts,
    failed_attempts: stats.failures,
    seconds: round(seconds),
    first_post_s: round((stats.firstAt - started) / 1000),
    last_2xx_s: round((stats.lastOkAt - started) / 1000),
    delivered_s: round((deliveredAt - started) / 1000),
    per_second: Math.round(completed / seconds),
    interrupted: interrupted.signal,
    timed_out: !interrupted.signal && (completed < options.count || committed < options.count),
  });
  process.exitCode = completed >= options.count && committed >= options.count ? 0 : 2;
}
