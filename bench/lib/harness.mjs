// harness.mjs — the timing side of bench/run.sh. Each subcommand prints one
// JSON object on stdout (progress goes to stderr):
//
//   setup-jobrunner  --nginx-url U --latency-url U
//   jobrunner        --jobs N --users U --runs R --postmaster P --nginx P
//   latency          --system jobrunner|pgboss|graphile --samples S --port P [peer options]
//   peer             --system pgboss|graphile --jobs N --users U --runs R [peer options]
//   soak             --jobs N --chunk C --postmaster P
//   scaling          --jobs-list N,... | --jobs N --users 1,100,... --names 1,1000 --nginx-url U
//   scrape           --jobs N --users U --names K --queries FILE [--exporter BIN --port P]
//   report           --raw DIR --out FILE
//   charts           --raw DIR --out DIR   (SVG through gnuplot, see charts.mjs)
//
// Connection: PGHOST / PGPORT / PGUSER of the bench cluster. Every wait has
// a deadline; every child process is stopped before the subcommand returns.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCharts } from './charts.mjs';
import {
  load, connect, connectionString, sleep, nowMs, userId, cpuSnapshot, cpuDelta, childrenOf,
  percentile, median, memoryOf,
} from './common.mjs';

const args = parseArgs(process.argv.slice(3));
const command = process.argv[2];

function parseArgs(list) {
  const out = {};
  for (let i = 0; i < list.length; i++) {
    if (!list[i].startsWith('--')) throw new Error(`unexpected argument ${list[i]}`);
    const key = list[i].slice(2);
    const next = list[i + 1];
    if (next === undefined || next.startsWith('--')) out[key] = true;
    else { out[key] = next; i++; }
  }
  return out;
}

const num = (key, dflt) => (args[key] === undefined ? dflt : Number(args[key]));
const note = (...m) => process.stderr.write(`harness: ${m.join(' ')}\n`);
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

// Polls fn() every intervalMs until it returns a truthy value or the deadline passes.
async function until(fn, { intervalMs = 20, deadlineMs, what }) {
  const stop = nowMs() + deadlineMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (nowMs() > stop) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// --- pg_jobrunner -------------------------------------------------------------

const QUEUE_SQL = `
  SELECT count(jobrunner.queue_job_for(
           ('00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'))::uuid,
           'authenticated', 'user' || (i % $2) || '@example.com', $3,
           jsonb_build_object('user', '00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'), 'i', i)))
    FROM generate_series($4::int, $4::int + $1::int - 1) i`;

async function setupJobrunner() {
  const db = await connect('bench');
  await db.query(`
    INSERT INTO jobrunner.job_config (job_name, url, enabled, concurrency_limit, max_retries)
    VALUES ('bench', $1, false, 1000, 3), ('lat', $2, true, 1000, 3), ('soak', $1, true, 1000, 3)
    ON CONFLICT (job_name) DO UPDATE SET url = EXCLUDED.url, enabled = EXCLUDED.enabled,
        concurrency_limit = EXCLUDED.concurrency_limit`, [args['nginx-url'], args['latency-url']]);
  const status = await until(async () => {
    const r = await db.query('SELECT running, pid FROM jobrunner.worker_status()');
    return r.rows[0].running ? r.rows[0] : null;
  }, { intervalMs: 100, deadlineMs: 30000, what: 'the pg_jobrunner worker to run' });
  await db.end();
  return { worker_pid: status.pid };
}

// The stored tables of the job log: jobrunner.job_log_entry, and
// jobrunner.job_logs while it is a table rather than a view over the former.
async function logTables(db) {
  const r = await db.query(`SELECT n FROM unnest(ARRAY['jobrunner.job_log_entry', 'jobrunner.job_logs']) n
                              JOIN pg_class c ON c.oid = to_regclass(n) WHERE c.relkind = 'r'`);
  return r.rows.map((x) => x.n);
}

// Empties the queue (jobrunner.job and its log) and the tables in extra,
// whichever schema of the job log is installed.
async function truncateQueue(db, extra = []) {
  await db.query(`TRUNCATE ${['jobrunner.job', ...(await logTables(db)), ...extra].join(', ')}`);
}

// The WAL insert position. Not pg_current_wal_lsn(), the write position: at
// the COMMIT of a burst that lags by the queueing's WAL still in the WAL
// buffers (up to 700 bytes a job was seen), which would then be counted as
// the worker's.
async function walLsn(db) {
  return (await db.query('SELECT pg_current_wal_insert_lsn() AS l')).rows[0].l;
}

// WAL bytes written (by the whole cluster) since lsn (a walLsn).
async function walSince(db, lsn) {
  const r = await db.query('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)::bigint AS b', [lsn]);
  return Number(r.rows[0].b);
}

async function workerPid(db) {
  const r = await db.query('SELECT pid FROM jobrunner.worker_status() WHERE running');
  if (!r.rows.length) throw new Error('the pg_jobrunner worker is not running');
  return r.rows[0].pid;
}

// Pending and running jobs of one job name, counted through the partial
// indexes: cheap enough to poll while the worker runs, however many finished
// rows the table holds.
async function activeJobs(db, jobName) {
  const r = await db.query(
    `SELECT (SELECT count(*) FROM jobrunner.job WHERE state = 'pending' AND job_name = $1)
          + (SELECT count(*) FROM jobrunner.job WHERE state = 'running' AND job_name = $1) AS active`,
    [jobName]);
  return Number(r.rows[0].active);
}

// One timed run: the worker idle and the job name enabled, one transaction
// queues N jobs for U users and commits; the clock runs from that COMMIT
// until all are completed. Nothing is analyzed or checkpointed first: the
// planner and the disk are as an application's burst would find them.
async function jobrunnerRun(db, n, users, postmaster, nginx) {
  await db.query(`UPDATE jobrunner.job_config SET enabled = true WHERE job_name = 'bench'`);
  await truncateQueue(db);
  const wpid = await workerPid(db);
  const groups = {
    worker: [wpid],
    postgres_other: () => childrenOf(postmaster).filter((p) => p !== wpid),
    nginx: () => childrenOf(nginx),
  };
  await db.query('BEGIN');
  let t = nowMs();
  await db.query(QUEUE_SQL, [n, users, 'bench', 1]);
  const queueS = (nowMs() - t) / 1000;
  const lsn0 = await walLsn(db);
  const before = cpuSnapshot(groups);
  const t0 = nowMs();
  await db.query('COMMIT');
  let polls = 0;
  // Polled cheaply (activeJobs); the outcome is checked once at the end.
  await until(async () => {
    polls++;
    return (await activeJobs(db, 'bench')) === 0;
  }, { intervalMs: 20, deadlineMs: num('timeout', 600) * 1000, what: `${n} completed jobs` });
  const seconds = (nowMs() - t0) / 1000;
  const fin = (await db.query(`SELECT count(*) FILTER (WHERE state = 'completed')::int AS done,
                                      count(*) FILTER (WHERE state <> 'completed')::int AS other
                                 FROM jobrunner.job`)).rows[0];
  if (fin.done !== n || fin.other !== 0) throw new Error(`${fin.done} of ${n} jobs completed, ${fin.other} not`);
  const cpu = cpuDelta(before, cpuSnapshot(groups));
  const st = (await db.query('SELECT dispatched, completed, failed FROM jobrunner.worker_status()')).rows[0];
  const wal = await walSince(db, lsn0);
  return { seconds: round(seconds, 3), jobs_per_s: round(n / seconds, 0), queue_s: round(queueS, 2),
           polls, cpu_s: cpu, wal_bytes_per_job: round(wal / n, 0), worker_totals: st };
}

async function jobrunnerBench() {
  const n = num('jobs', 10000), users = num('users', 100), runs = num('runs', 3);
  const db = await connect('bench');
  const results = [];
  for (let i = 0; i < runs; i++) {
    const r = await jobrunnerRun(db, n, users, num('postmaster'), num('nginx'));
    note(`pg_jobrunner run ${i + 1}/${runs}: ${n} jobs in ${r.seconds} s = ${r.jobs_per_s} jobs/s`,
         `cpu ${JSON.stringify(r.cpu_s)}`);
    results.push(r);
  }
  await db.query(`UPDATE jobrunner.job_config SET enabled = false WHERE job_name = 'bench'`);
  await truncateQueue(db);
  await db.end();
  return { system: 'pg_jobrunner', jobs: n, users, runs: results,
           median_jobs_per_s: median(results.map((r) => r.jobs_per_s)) };
}

// --- peers: pg-boss and graphile-worker --------------------------------------

const PEER_DB = { pgboss: 'boss', graphile: 'graphile' };

function peerOptions(system, url) {
  const base = { system, database: PEER_DB[system], url, secret: process.env.BENCH_JWT_SECRET || 'x'.repeat(48) };
  if (system === 'pgboss') {
    return { ...base, queue: 'bench', localConcurrency: num('concurrency', 4), batchSize: num('batch', 50),
             poolSize: num('pool', 10) };
  }
  return { ...base, concurrency: num('concurrency', 4), localQueueSize: num('batch', 50),
           batchDelayMs: num('batch-delay', 0), poolSize: num('pool', 10) };
}

// Installs the peer's schema (once per database) and returns helpers to
// queue jobs, clear the queue and count what is left or done.
async function peerAdapter(system) {
  const db = await connect(PEER_DB[system]);
  if (system === 'pgboss') {
    const { PgBoss } = await load('pg-boss');
    const boss = new PgBoss({ connectionString: connectionString('boss'), schedule: false,
                              supervise: false, max: 4, application_name: 'bench harness' });
    boss.on('error', (e) => note('pg-boss error', e.message));
    await boss.start();
    if (!(await boss.getQueue('bench'))) await boss.createQueue('bench', { notify: true });
    return {
      db,
      boss,
      version: JSON.parse(readFileSync(fileURLToPath(new URL('../.node/node_modules/pg-boss/package.json', import.meta.url)))).version,
      async clear() { await db.query('TRUNCATE pgboss.job'); },
      // Queued through the harness's connection, so that the caller's
      // transaction holds them (pg-boss's `db` option, as an application
      // queues in its own transaction).
      async queue(n, users) {
        const jobs = [];
        for (let i = 1; i <= n; i++) jobs.push({ data: { user: userId(i % users), i } });
        const tx = { executeSql: (text, values) => db.query(text, values) };
        for (let k = 0; k < jobs.length; k += 5000) await boss.insert('bench', jobs.slice(k, k + 5000), { db: tx });
      },
      async send(data) { await boss.send('bench', data); },
      async progress() {
        const r = await db.query(`SELECT count(*) FILTER (WHERE state = 'completed')::int AS done,
                                         count(*) FILTER (WHERE state = 'failed')::int AS failed,
                                         count(*) FILTER (WHERE state = 'retry')::int AS retry
                                    FROM pgboss.job WHERE name = 'bench'`);
        return r.rows[0];
      },
      async doneCount(n) { return (await this.progress()).done >= n; },
      async end() { await boss.stop({ graceful: false, close: true }); await db.end(); },
    };
  }
  const { runMigrations } = await load('graphile-worker');
  await runMigrations({ connectionString: connectionString('graphile') });
  return {
    db,
    version: JSON.parse(readFileSync(fileURLToPath(new URL('../.node/node_modules/graphile-worker/package.json', import.meta.url)))).version,
    async clear() { await db.query('DELETE FROM graphile_worker._private_jobs'); },
    async queue(n, users) {
      await db.query(`SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
                        SELECT ROW('bench', json_build_object('user', '00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'), 'i', i),
                                   NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
                          FROM generate_series(1, $1::int) i))`, [n, users]);
    },
    async send(data) { await db.query(`SELECT graphile_worker.add_job('bench', $1::json)`, [JSON.stringify(data)]); },
    // Completed jobs are deleted by graphile-worker: done = none left.
    async progress() {
      const r = await db.query(`SELECT count(*)::int AS left,
                                       count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed
                                  FROM graphile_worker._private_jobs`);
      return r.rows[0];
    },
    async end() { await db.end(); },
  };
}

// Starts a peer worker process and waits for READY.
async function startPeerWorker(options) {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./peer_worker.mjs', import.meta.url)),
                                          JSON.stringify(options)],
                      { stdio: ['pipe', 'pipe', 'inherit'] });
  let buffered = '';
  const lines = [];
  let wake = null;
  child.stdout.on('data', (d) => {
    buffered += d;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      lines.push(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
      if (wake) wake();
    }
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const waitLine = async (want, ms) => {
    const stop = nowMs() + ms;
    while (!lines.includes(want)) {
      if (child.exitCode !== null) throw new Error(`peer worker exited (${child.exitCode}) before ${want}`);
      if (nowMs() > stop) throw new Error(`peer worker did not say ${want} within ${ms} ms`);
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 50); });
    }
  };
  await waitLine('READY', 60000);
  return {
    pid: child.pid,
    // Tells the worker to start and waits until it says it is working.
    async go() { child.stdin.write('GO\n'); await waitLine('GOING', 30000); },
    async stop() {
      child.stdin.write('STOP\n');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exited;
      clearTimeout(timer);
    },
    kill() { if (child.exitCode === null) child.kill('SIGKILL'); },
  };
}

async function peerBench() {
  const system = args.system;
  const n = num('jobs', 10000), users = num('users', 100), runs = num('runs', 3);
  const adapter = await peerAdapter(system);
  const options = peerOptions(system, args.url);
  const results = [];
  try {
    for (let i = 0; i < runs; i++) {
      await adapter.clear();
      const worker = await startPeerWorker(options);
      try {
        // The worker runs and idles (LISTEN, first fetch done) before the
        // burst; then one transaction queues every job and commits, and the
        // clock runs from that COMMIT. No ANALYZE, no CHECKPOINT first.
        await worker.go();
        await sleep(500);
        const groups = {
          worker: [worker.pid],
          postgres_other: () => childrenOf(num('postmaster')),
          nginx: () => childrenOf(num('nginx')),
        };
        await adapter.db.query('BEGIN');
        let t = nowMs();
        await adapter.queue(n, users);
        const queueS = (nowMs() - t) / 1000;
        const lsn0 = await walLsn(adapter.db);
        const before = cpuSnapshot(groups);
        const t0 = nowMs();
        await adapter.db.query('COMMIT');
        let last = null;
        await until(async () => {
          last = await adapter.progress();
          if (last.failed > 0) throw new Error(`${system}: ${last.failed} jobs failed`);
          return system === 'pgboss' ? last.done >= n : last.left === 0;
        }, { intervalMs: 20, deadlineMs: num('timeout', 600) * 1000, what: `${system} to finish ${n} jobs` });
        const seconds = (nowMs() - t0) / 1000;
        const cpu = cpuDelta(before, cpuSnapshot(groups));
        const wal = await walSince(adapter.db, lsn0);
        const r = { seconds: round(seconds, 3), jobs_per_s: round(n / seconds, 0), queue_s: round(queueS, 2), cpu_s: cpu,
                    wal_bytes_per_job: round(wal / n, 0) };
        note(`${system} run ${i + 1}/${runs}: ${n} jobs in ${r.seconds} s = ${r.jobs_per_s} jobs/s`,
             `cpu ${JSON.stringify(cpu)}`);
        results.push(r);
      } finally {
        await worker.stop();
      }
    }
  } finally {
    await adapter.clear().catch(() => {});
    await adapter.end();
  }
  const { url, secret, database, ...settings } = options;
  return { system, version: adapter.version, jobs: n, users, settings, runs: results,
           median_jobs_per_s: median(results.map((r) => r.jobs_per_s)) };
}

// --- latency: commit of one job to its request arriving at the endpoint -------

// An HTTP server that timestamps each request's arrival (when its headers
// have been parsed) and answers 204 once the body is in.
function arrivalServer(port) {
  const waiting = new Map();
  const server = http.createServer((req, res) => {
    const at = nowMs();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(204);
      res.end();
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
        const w = waiting.get(body.seq);
        if (w) { waiting.delete(body.seq); w(at); }
      } catch { /* not ours */ }
    });
  });
  server.keepAliveTimeout = 120000;
  return {
    listen: () => new Promise((resolve) => server.listen(port, '127.0.0.1', resolve)),
    arrival(seq, ms) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { waiting.delete(seq); reject(new Error(`job ${seq} did not arrive within ${ms} ms`)); }, ms);
        waiting.set(seq, (at) => { clearTimeout(timer); resolve(at); });
      });
    },
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

async function latencyBench() {
  const system = args.system;
  const samples = num('samples', 200);
  const server = arrivalServer(num('port'));
  await server.listen();
  const commitToArrival = [];
  const ackToArrival = [];
  const commitRtt = [];
  let db, adapter, worker, version;
  try {
    let send, settled;
    if (system === 'jobrunner') {
      db = await connect('bench');
      await truncateQueue(db);
      send = async (seq) => {
        const r = await db.query(`SELECT jobrunner.queue_job_for($1, 'authenticated', NULL, 'lat', $2::jsonb) AS id`,
                                 [userId(seq % 100), JSON.stringify({ user: userId(seq % 100), seq })]);
        return r.rows[0].id;
      };
      // The worker records the outcome after the request: wait for it so that
      // every sample starts with an idle worker.
      settled = async (id) => until(async () => {
        const r = await db.query('SELECT state FROM jobrunner.job WHERE id = $1', [id]);
        return r.rows[0].state === 'completed';
      }, { intervalMs: 2, deadlineMs: 10000, what: 'the latency job to complete' });
    } else {
      adapter = await peerAdapter(system);
      version = adapter.version;
      await adapter.clear();
      worker = await startPeerWorker(peerOptions(system, `http://127.0.0.1:${num('port')}/lat`));
      await worker.go();
      await sleep(1000);
      let sent = 0;
      send = async (seq) => { await adapter.send({ user: userId(seq % 100), seq }); sent++; return sent; };
      settled = async (count) => until(async () => {
        const p = await adapter.progress();
        return system === 'pgboss' ? p.done >= count : p.left === 0;
      }, { intervalMs: 2, deadlineMs: 10000, what: `${system} to settle the latency job` });
    }
    for (let seq = 1; seq <= samples + 5; seq++) {
      await sleep(20 + Math.random() * 30);   // idle, and out of phase with any poll timer
      const arrived = server.arrival(seq, 10000);
      const t0 = nowMs();
      const handle = await send(seq);
      const tAck = nowMs();
      const at = await arrived;
      await settled(handle);
      if (seq <= 5) continue;                 // warm-up: plans, connections
      commitToArrival.push(at - t0);
      ackToArrival.push(at - tAck);
      commitRtt.push(tAck - t0);
    }
  } finally {
    if (worker) await worker.stop();
    if (adapter) { await adapter.clear().catch(() => {}); await adapter.end(); }
    if (db) await db.end();
    await server.close();
  }
  const stats = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return { p50: round(percentile(s, 50), 2), p95: round(percentile(s, 95), 2), p99: round(percentile(s, 99), 2),
             max: round(s[s.length - 1], 2) };
  };
  return { system, version, samples, ms_from_commit_sent: stats(commitToArrival),
           ms_from_commit_ack: stats(ackToArrival), ms_commit_round_trip: stats(commitRtt),
           samples_ms: commitToArrival.map((x) => round(x, 3)) };
}

// --- memory soak ----------------------------------------------------------

async function soakBench() {
  const total = num('jobs', 200000), chunk = num('chunk', 10000), users = num('users', 100);
  const db = await connect('bench');
  await truncateQueue(db);
  const wpid = await workerPid(db);
  const mem0 = memoryOf(wpid);
  let queued = 0;
  const samples = [];
  const deadline = nowMs() + num('timeout', Math.max(600, total / 100)) * 1000;
  // Progress from the worker's own counters and the partial indexes of
  // pending and running jobs: a count(*) over a table that grows to millions
  // of rows, five times a second, would load the machine more than the
  // worker does.
  const base = (await db.query('SELECT completed, failed FROM jobrunner.worker_status()')).rows[0];
  const completed = async () => {
    const w = (await db.query('SELECT completed, failed FROM jobrunner.worker_status()')).rows[0];
    const active = await activeJobs(db, 'soak');
    // The counters move when a response arrives; a job is done once recorded.
    const answered = Number(w.completed) - Number(base.completed);
    return { done: Math.min(answered, queued - active), active, failed: Number(w.failed) - Number(base.failed) };
  };
  let warm = null, tWarm = 0, doneAtWarm = 0;
  const t0 = nowMs();
  let lastSample = 0;
  for (;;) {
    if (nowMs() > deadline) throw new Error(`soak did not finish before its deadline (${queued} queued)`);
    const c = await completed();
    if (c.failed > 0) throw new Error(`${c.failed} soak jobs failed`);
    if (!warm && c.done >= Math.min(chunk, total)) {
      warm = memoryOf(wpid); tWarm = nowMs(); doneAtWarm = c.done;
    }
    if (nowMs() - lastSample > 5000) {
      lastSample = nowMs();
      samples.push({ t_s: round((nowMs() - t0) / 1000, 1), done: c.done, ...memoryOf(wpid) });
      note(`soak: ${c.done}/${total} done, worker VmRSS ${samples.at(-1).VmRSS} kB, RssAnon ${samples.at(-1).RssAnon} kB`);
    }
    if (c.done >= total) break;
    if (queued < total && c.active < chunk) {
      const k = Math.min(chunk, total - queued);
      await db.query(QUEUE_SQL, [k, users, 'soak', queued + 1]);
      queued += k;
      continue;
    }
    await sleep(200);
  }
  const seconds = (nowMs() - t0) / 1000;
  const after = memoryOf(wpid);
  const pidAfter = await workerPid(db);
  // The log's size is its stored table's (a view has none).
  const size = (await db.query(`SELECT pg_size_pretty(pg_total_relation_size('jobrunner.job')) AS job,
                                       pg_size_pretty((SELECT sum(pg_total_relation_size(n::regclass))
                                                         FROM unnest($1::text[]) n)::bigint) AS logs`,
  [await logTables(db)])).rows[0];
  await truncateQueue(db);
  await db.end();
  const maxOf = (k) => Math.max(...samples.map((s) => s[k]), after[k]);
  return {
    jobs: total, seconds: round(seconds, 1), jobs_per_s: round(total / seconds, 0),
    jobs_per_s_after_warmup: round((total - doneAtWarm) / ((nowMs() - tWarm) / 1000), 0),
    worker_pid: wpid, same_pid_after: pidAfter === wpid, table_size: size,
    kB: { start: mem0, warm, after, max_VmRSS: maxOf('VmRSS'), max_RssAnon: maxOf('RssAnon') },
    growth_kB: { VmRSS_after_warmup: after.VmRSS - warm.VmRSS, RssAnon_after_warmup: after.RssAnon - warm.RssAnon,
                 RssAnon_from_start: after.RssAnon - mem0.RssAnon },
    samples,
  };
}

// --- enqueue cost: what one queued job adds to an application's transaction ---
//
// pgbench, 16 clients, one transaction per iteration: the application's own
// INSERT (an order, RETURNING its id and customer), then the job queued for
// it, then COMMIT. The same transaction without the enqueue is the baseline;
// what a system adds is its percentile minus the baseline's in the same
// round. No worker consumes the jobs meanwhile (pg_jobrunner's are queued in
// a database the worker does not serve, the peers' workers are stopped), so
// only the cost inside the transaction is measured, on a machine not busy
// sending them.

const APP_TABLE = `
  CREATE TABLE IF NOT EXISTS app_order (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL,
    amount_cents int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())`;

const APP_INSERT = `INSERT INTO app_order (customer_id, amount_cents)
  VALUES (('00000000-0000-4000-8000-' || lpad(:c::text, 12, '0'))::uuid, 1250)
  RETURNING id AS order_id, customer_id \\gset`;

// The statement pg-boss's send() runs for a queue, as the installed version
// builds it, captured through its `db` option (the way an application hands
// it its transaction). Its one parameter, the job array as JSON text, is
// rebuilt in SQL with every field send() passed, the data being the order's
// id (pgbench cannot bind a JSON text that changes per transaction).
async function pgbossSendSql(boss, db, queue) {
  const seen = [];
  const recorder = { executeSql: (text, values) => { seen.push({ text, values }); return db.query(text, values); } };
  await db.query('BEGIN');
  try {
    await boss.send(queue, { order_id: 0 }, { db: recorder });
  } finally {
    await db.query('ROLLBACK');
  }
  const insert = seen.find((x) => /INSERT INTO/i.test(x.text));
  if (!insert || seen.length !== 1 || (insert.text.match(/\$1\b/g) || []).length !== 1 || /\$2\b/.test(insert.text)) {
    throw new Error(`pg-boss send ran ${seen.length} statement(s), not one INSERT with one parameter`);
  }
  const jobs = JSON.parse(insert.values[0]);
  if (jobs.length !== 1) throw new Error(`pg-boss send passed ${jobs.length} jobs`);
  const literal = (v) => {
    if (v === null) return 'NULL';
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    // A colon would read as a pgbench variable.
    if (typeof v === 'string' && !/[:']/.test(v)) return `'${v}'`;
    throw new Error(`pg-boss send passed a value the bench does not rebuild: ${JSON.stringify(v)}`);
  };
  const fields = Object.entries(jobs[0]).map(([k, v]) => (k === 'data'
    ? "'data', json_build_object('order_id', :order_id::bigint)"
    : `'${k}', ${literal(v)}`));
  return insert.text.replace(/\$1\b/, `json_build_array(json_build_object(${fields.join(', ')}))`)
    .replace(/\s+/g, ' ').trim();
}

// Per-transaction latencies (µs) from pgbench's -l logs, without the first
// warmupS seconds (connections, first plans).
function pgbenchLatencies(dir, prefix, warmupS) {
  const rows = [];
  for (const f of readdirSync(dir)) {
    if (!f.startsWith(`${prefix}.`)) continue;
    for (const line of readFileSync(`${dir}/${f}`, 'utf8').split('\n')) {
      const x = line.trim().split(/\s+/);
      if (x.length < 6 || !/^\d+$/.test(x[2])) continue;   // failed or skipped
      rows.push({ us: Number(x[2]), end: Number(x[4]) + Number(x[5]) / 1e6 });
    }
  }
  if (!rows.length) throw new Error(`pgbench wrote no transactions under ${dir}/${prefix}.*`);
  const first = Math.min(...rows.map((r) => r.end));
  const last = Math.max(...rows.map((r) => r.end));
  const kept = rows.filter((r) => r.end >= first + warmupS).map((r) => r.us).sort((a, b) => a - b);
  return { us: kept, seconds: last - first - warmupS };
}

function runPgbench(pgbench, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(pgbench, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}: ${out}`))));
  });
}

async function enqueueBench() {
  const clients = num('clients', 16), seconds = num('seconds', 5), warmupS = num('warmup', 1), rounds = num('rounds', 3);
  const modes = String(args.modes || 'extended,prepared').split(',');
  const dir = args.dir;
  const pgbench = args.pgbench;
  // pg_jobrunner: a database of its own with the extension, not served by the worker.
  const jr = await connect('enqueue');
  await jr.query(APP_TABLE);
  await jr.query(`INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit) VALUES ('send-receipt', $1, 1000)
                  ON CONFLICT (job_name) DO NOTHING`, [args['nginx-url']]);
  const peers = !args['no-peers'];
  const graphile = peers ? await peerAdapter('graphile') : null;
  const boss = peers ? await peerAdapter('pgboss') : null;
  if (peers) {
    await graphile.db.query(APP_TABLE);
    await boss.db.query(APP_TABLE);
    for (const [queue, notify] of [['receipt', false], ['receipt-notify', true]]) {
      if (!(await boss.boss.getQueue(queue))) await boss.boss.createQueue(queue, { notify });
    }
  }
  const enqueue = {
    baseline: null,
    jobrunner: `SELECT jobrunner.queue_job_for(:customer_id, 'authenticated', NULL, 'send-receipt',
                  jsonb_build_object('order_id', :order_id::bigint));`,
    jobrunner_dedup: `SELECT jobrunner.queue_job_for(:customer_id, 'authenticated', NULL, 'send-receipt',
                        jsonb_build_object('order_id', :order_id::bigint), _dedup_key => 'receipt:' || :order_id::text);`,
  };
  if (peers) {
    enqueue.graphile = `SELECT graphile_worker.add_job('send-receipt', json_build_object('order_id', :order_id::bigint));`;
    enqueue.pgboss = `${await pgbossSendSql(boss.boss, boss.db, 'receipt')};`;
    enqueue.pgboss_notify = `${await pgbossSendSql(boss.boss, boss.db, 'receipt-notify')};`;
  }
  const database = { baseline: 'enqueue', jobrunner: 'enqueue', jobrunner_dedup: 'enqueue', graphile: 'graphile',
                     pgboss: 'boss', pgboss_notify: 'boss' };
  const scripts = {};
  for (const [k, sql] of Object.entries(enqueue)) {
    scripts[k] = `${dir}/enqueue_${k}.sql`;
    writeFileSync(scripts[k], ['\\set c random(0, 99)', 'BEGIN;', APP_INSERT, sql, 'COMMIT;']
      .filter((x) => x !== null).join('\n') + '\n');
  }
  const variants = Object.keys(enqueue);
  const results = [];   // {mode, variant, round, tps, p50_ms, p99_ms}
  for (let k = 1; k <= rounds; k++) {
    for (const mode of modes) {
      // A different first variant each round, so that none always follows the same one.
      const order = variants.map((_, i) => variants[(i + k - 1) % variants.length]);
      for (const v of order) {
        const prefix = `enqueue_${mode}_${v}_r${k}`;
        await runPgbench(pgbench, ['-n', '-M', mode, '-c', String(clients), '-j', '2', '-T', String(seconds),
                                   '-l', `--log-prefix=${dir}/${prefix}`, '-f', scripts[v]],
                         { PGDATABASE: database[v] });
        const { us, seconds: s } = pgbenchLatencies(dir, prefix, warmupS);
        const r = { mode, variant: v, round: k, tps: round(us.length / s),
                    p50_ms: round(percentile(us, 50) / 1000, 3), p99_ms: round(percentile(us, 99) / 1000, 3),
                    transactions: us.length };
        note(`enqueue ${mode} ${v} round ${k}: ${r.tps} tx/s, p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms`);
        results.push(r);
      }
    }
  }
  // Per mode and variant: medians over the rounds, and what the enqueue adds
  // to the baseline of the same round (median of the per-round differences).
  const summary = [];
  for (const mode of modes) {
    for (const v of variants) {
      const mine = results.filter((r) => r.mode === mode && r.variant === v);
      const base = (k) => results.find((r) => r.mode === mode && r.variant === 'baseline' && r.round === k);
      summary.push({
        mode, variant: v, database: database[v],
        tps: round(median(mine.map((r) => r.tps))),
        p50_ms: round(median(mine.map((r) => r.p50_ms)), 3), p99_ms: round(median(mine.map((r) => r.p99_ms)), 3),
        added_p50_ms: round(median(mine.map((r) => r.p50_ms - base(r.round).p50_ms)), 3),
        added_p99_ms: round(median(mine.map((r) => r.p99_ms - base(r.round).p99_ms)), 3),
      });
    }
  }
  // Leave no queued job behind for the next parts of the run.
  const rows = { jobrunner: Number((await jr.query('SELECT count(*) AS n FROM jobrunner.job')).rows[0].n) };
  await truncateQueue(jr);
  await jr.end();
  if (peers) {
    rows.graphile = Number((await graphile.db.query('SELECT count(*) AS n FROM graphile_worker._private_jobs')).rows[0].n);
    rows.pgboss = Number((await boss.db.query(`SELECT count(*) AS n FROM pgboss.job WHERE name LIKE 'receipt%'`)).rows[0].n);
    await graphile.clear();
    await boss.clear();
    await graphile.end();
    await boss.end();
  }
  return { clients, seconds, warmup_s: warmupS, rounds, modes, scripts: Object.fromEntries(
    Object.entries(scripts).map(([k, f]) => [k, readFileSync(f, 'utf8')])), jobs_queued: rows, runs: results, summary,
    versions: peers ? { pgboss: boss.version, graphile: graphile.version } : {} };
}

// --- scaling: throughput and WAL against job count, users and job names -------

// N jobs, job i for user i % U and job name scale.(i % K).
const SCALE_QUEUE_SQL = `
  SELECT count(jobrunner.queue_job_for(
           ('00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'))::uuid,
           'authenticated', NULL, 'scale.' || (i % $3), jsonb_build_object('i', i)))
    FROM generate_series(1, $1::int) i`;

// The positive integers of a comma-separated argument.
function intList(key, dflt) {
  const list = String(args[key] ?? dflt).split(',').map(Number);
  if (list.some((x) => !Number.isInteger(x) || x < 1)) {
    throw new Error(`--${key} must list positive integers, not ${args[key]}`);
  }
  return list;
}

const gcd = (a, b) => (b ? gcd(b, a % b) : a);

// One point, as jobrunnerRun does it: the names enabled and the worker idle,
// one transaction queues every job, timed from its COMMIT until none is
// left; no ANALYZE or CHECKPOINT first. WAL is counted from just before the
// COMMIT until the queue has drained: the worker's claims and records, not
// the queueing.
async function scalingRun(db, n, users, names) {
  // Fairness turns too: each point starts from an empty queue.
  await truncateQueue(db, ['jobrunner.group_turn']);
  await db.query('BEGIN');
  const tq = nowMs();
  await db.query(SCALE_QUEUE_SQL, [n, users, names]);
  const queueS = (nowMs() - tq) / 1000;
  const lsn0 = await walLsn(db);
  const t0 = nowMs();
  await db.query('COMMIT');
  await until(async () => Number((await db.query(
    `SELECT (SELECT count(*) FROM jobrunner.job WHERE state = 'pending')
          + (SELECT count(*) FROM jobrunner.job WHERE state = 'running') AS a`)).rows[0].a) === 0,
  { intervalMs: 20, deadlineMs: num('timeout', 600) * 1000, what: `${n} jobs, ${users} users, ${names} names` });
  const seconds = (nowMs() - t0) / 1000;
  const wal = await walSince(db, lsn0);
  const done = Number((await db.query(`SELECT count(*) AS c FROM jobrunner.job WHERE state = 'completed'`)).rows[0].c);
  if (done !== n) throw new Error(`scaling: ${done} of ${n} jobs completed (${users} users, ${names} names)`);
  // Job i is in group (i mod U, i mod K): lcm(U, K) groups, or one per job.
  const groups = Math.min(n, (users / gcd(users, names)) * names);
  return { jobs: n, users, names, groups, seconds: round(seconds, 3), queue_s: round(queueS, 2),
           jobs_per_s: round(n / seconds, 0), wal_bytes_per_job: round(wal / n, 0) };
}

// One run per (jobs, users, job names) point of the grid (--jobs-list, or
// --jobs for one size), skipping points with more users than jobs: a user
// without a job adds nothing.
async function scalingBench() {
  const jobsList = args['jobs-list'] ? intList('jobs-list') : [num('jobs', 10000)];
  const usersList = intList('users', '1,100,10000,100000');
  const namesList = intList('names', '1,1000');
  const db = await connect('bench');
  await db.query(`
    INSERT INTO jobrunner.job_config (job_name, url, enabled, concurrency_limit, max_retries)
    SELECT 'scale.' || k, $1, true, 1000, 3 FROM generate_series(0, $2::int - 1) k
    ON CONFLICT (job_name) DO UPDATE SET url = EXCLUDED.url, enabled = true, concurrency_limit = 1000`,
  [args['nginx-url'], Math.max(...namesList)]);
  const points = [];
  for (const n of jobsList) {
    for (const names of namesList) {
      for (const users of usersList.filter((u) => u <= n)) {
        const p = await scalingRun(db, n, users, names);
        note(`scaling: ${n} jobs, ${users} users × ${names} job names: ${p.jobs_per_s} jobs/s,`,
             `${p.wal_bytes_per_job} WAL bytes/job (${p.seconds} s; queued in ${p.queue_s} s)`);
        points.push(p);
      }
    }
  }
  await db.query(`UPDATE jobrunner.job_config SET enabled = false WHERE job_name LIKE 'scale.%'`);
  await truncateQueue(db, ['jobrunner.group_turn']);
  await db.end();
  return { jobs: jobsList, users: usersList, names: namesList, points };
}

// --- scrape cost: the exporter's queries at a million jobs ----------------------

// The queries of monitoring/postgres_exporter.yml, by name (its "query: |"
// blocks), so that what is timed is what ships.
function exporterQueries(file) {
  const out = {};
  let name = null, body = null;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const top = line.match(/^([a-z_]+):\s*$/);
    if (top) { name = top[1]; body = null; continue; }
    if (name && /^ {2}query: \|\s*$/.test(line)) { body = []; continue; }
    if (body && /^ {4}/.test(line)) { body.push(line.trim()); continue; }
    if (body && body.length) { out[name] = body.join(' '); body = null; }
  }
  return out;
}

// 1,000,000 jobs over 10,000 users and K job names, inserted directly (the
// state each would have reached). steady: 94 % completed and 2 % failed over
// the last week, 2.5 % pending and due, 1.4 % delayed an hour, 0.1 %
// running; backlog: every job pending and due.
const SCRAPE_POPULATE = {
  steady: `
    INSERT INTO jobrunner.job (user_id, user_role, job_name, request_body, state, max_retries, attempts, attempt_seq,
                               created_at, updated_at, next_run_at, last_run_at, finished_at, due, last_status,
                               last_error, locked_by, locked_at, sending_attempt)
    SELECT ('00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'))::uuid, 'authenticated',
           'scrape.' || (i % $3), jsonb_build_object('i', i), k.state, 3, k.attempts, k.attempts,
           c.created, c.created, CASE WHEN k.kind = 'later' THEN now() + interval '1 hour' ELSE c.created END,
           CASE WHEN k.attempts > 0 THEN c.created END,
           CASE WHEN k.state IN ('completed', 'failed') THEN c.created + interval '1 second' END,
           k.kind <> 'later', CASE k.state WHEN 'completed' THEN 200 WHEN 'failed' THEN 500 END,
           CASE WHEN k.state = 'failed' THEN 'HTTP 500' END,
           CASE WHEN k.state = 'running' THEN 1 END, CASE WHEN k.state = 'running' THEN now() END,
           CASE WHEN k.state = 'running' THEN 1 END
      FROM generate_series(1, $1::int) i
     CROSS JOIN LATERAL (SELECT now() - (i % 604800) * interval '1 second' AS created) c
     CROSS JOIN LATERAL (
           SELECT CASE WHEN i % 1000 < 940 THEN 'completed' WHEN i % 1000 < 960 THEN 'failed'
                       WHEN i % 1000 < 999 THEN 'pending' ELSE 'running' END AS state,
                  CASE WHEN i % 1000 BETWEEN 985 AND 998 THEN 'later' ELSE 'now' END AS kind,
                  CASE WHEN i % 1000 < 940 THEN 1 WHEN i % 1000 < 960 THEN 4
                       WHEN i % 1000 < 999 THEN 0 ELSE 1 END AS attempts) k`,
  backlog: `
    INSERT INTO jobrunner.job (user_id, user_role, job_name, request_body, max_retries, created_at, next_run_at)
    SELECT ('00000000-0000-4000-8000-' || lpad((i % $2)::text, 12, '0'))::uuid, 'authenticated',
           'scrape.' || (i % $3), jsonb_build_object('i', i), 3,
           now() - (i % 3600) * interval '1 second', now() - (i % 3600) * interval '1 second'
      FROM generate_series(1, $1::int) i`,
};

// The whole scrape as the exporter does it: its own duration figure, read
// after each of several scrapes.
async function exporterScrapeMs(database, queries) {
  const port = num('port');
  const child = spawn(args.exporter, [
    '--disable-default-metrics', '--disable-settings-metrics', '--no-collector.database', '--no-collector.bgwriter',
    `--extend.query-path=${queries}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=error'],
  { env: { ...process.env, DATA_SOURCE_NAME: `postgresql://${process.env.PGUSER || 'postgres'}@127.0.0.1:${process.env.PGPORT}/${database}?sslmode=disable` },
    stdio: ['ignore', 'ignore', 'inherit'] });
  const get = () => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  try {
    await until(async () => { try { return (await get()).includes('pg_up 1'); } catch { return false; } },
                { intervalMs: 100, deadlineMs: 30000, what: 'the exporter to serve /metrics' });
    const ms = [];
    for (let i = 0; i < 10; i++) {
      const text = await get();
      const m = text.match(/^pg_exporter_last_scrape_duration_seconds (\S+)$/m);
      if (/^pg_exporter_last_scrape_error 1$/m.test(text)) throw new Error('the exporter reports a scrape error');
      if (m) ms.push(Number(m[1]) * 1000);
    }
    const s = [...ms].sort((a, b) => a - b);
    return { median_ms: round(median(s), 1), max_ms: round(s[s.length - 1], 1), series: (await get()).split('\n').filter((l) => /^jobrunner_/.test(l)).length };
  } finally {
    child.kill('SIGTERM');
  }
}

async function scrapeBench() {
  const total = num('jobs', 1000000), users = num('users', 10000), names = num('names', 10);
  const queries = exporterQueries(args.queries);
  const db = await connect('scrape');
  const scenarios = [];
  for (const scenario of ['steady', 'backlog']) {
    await truncateQueue(db);
    let t = nowMs();
    await db.query(SCRAPE_POPULATE[scenario], [total, users, names]);
    const loadS = (nowMs() - t) / 1000;
    // What autovacuum would have done by then: statistics and the visibility
    // map (index-only scans need it).
    await db.query('VACUUM ANALYZE jobrunner.job');
    const states = Object.fromEntries((await db.query(
      `SELECT state || CASE WHEN state = 'pending' AND NOT due THEN ' (delayed)' ELSE '' END AS s, count(*)::int AS n
         FROM jobrunner.job GROUP BY 1 ORDER BY 1`)).rows.map((x) => [x.s, x.n]));
    const timings = {};
    for (const [name, sql] of Object.entries(queries)) {
      for (let i = 0; i < 3; i++) await db.query(sql);  // warm: plans, cache
      const ms = [];
      for (let i = 0; i < 20; i++) {
        t = nowMs();
        await db.query(sql);
        ms.push(nowMs() - t);
      }
      const sorted = ms.sort((a, b) => a - b);
      timings[name] = { median_ms: round(median(sorted), 2), max_ms: round(sorted[sorted.length - 1], 2) };
    }
    const plan = (await db.query(`EXPLAIN SELECT j.job_name, count(*), min(j.created_at) FROM jobrunner.job j
                                   WHERE j.state = 'pending' GROUP BY j.job_name`)).rows.map((x) => x['QUERY PLAN']);
    const exporter = args.exporter ? await exporterScrapeMs('scrape', args.queries) : null;
    note(`scrape cost (${scenario}, ${total} jobs): ${JSON.stringify(timings)}; exporter ${JSON.stringify(exporter)}`);
    scenarios.push({ scenario, jobs: total, users, names, load_s: round(loadS, 1), states, timings, pending_plan: plan, exporter });
  }
  await truncateQueue(db);
  await db.end();
  return { scenarios };
}

// --- report -----------------------------------------------------------------

// Raw results by file name; NAME_rK.json files (round K of an interleaved
// run) are merged into NAME, their runs in round order, with a new median.
function readRaw(dir) {
  const out = {};
  const rounds = {};
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    const key = f.replace(/\.json$/, '');
    const data = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
    const m = key.match(/^(.+)_r(\d+)$/);
    if (m) (rounds[m[1]] ||= []).push([Number(m[2]), data]);
    else out[key] = data;
  }
  for (const [key, list] of Object.entries(rounds)) {
    list.sort((a, b) => a[0] - b[0]);
    const merged = { ...list[0][1], runs: list.flatMap(([, d]) => d.runs) };
    merged.median_jobs_per_s = median(merged.runs.map((r) => r.jobs_per_s));
    out[key] = merged;
  }
  return out;
}

// A peer setting in words, as the tables print it.
function peerSetting(p) {
  const s = p.settings || {};
  return p.system === 'pgboss'
    ? `localConcurrency ${s.localConcurrency} × batchSize ${s.batchSize}`
    : `concurrency ${s.concurrency}, localQueue ${s.localQueueSize}, pool ${s.poolSize}`;
}

const PEER_NAME = { pgboss: 'pg-boss', graphile: 'graphile-worker' };

// The peers' raw keys by system, each list fastest first (by median).
function peersBySystem(r) {
  const out = {};
  for (const key of Object.keys(r).filter((k) => k.startsWith('peer_'))) (out[r[key].system] ||= []).push(key);
  for (const keys of Object.values(out)) keys.sort((a, b) => r[b].median_jobs_per_s - r[a].median_jobs_per_s);
  return out;
}

function versionOf(r, system) {
  const key = Object.keys(r).find((k) => k.startsWith(`peer_${system}`) || k === `latency_${system}`);
  return r[key]?.version || 'n/a';
}

// The scaling section: one table per job count (rows job names, columns
// users), each cell jobs/s / WAL bytes per job and the ratio of its jobs/s
// to the 100-user, 1-name point of the same job count.
function scalingSection(s, fmt) {
  const points = s.points.map((p) => ({ ...p, jobs: p.jobs ?? s.jobs }));
  const sorted = (xs) => [...new Set(xs)].sort((a, b) => a - b);
  const many = (p) => p.users >= 10000 || p.names >= 1000;
  const lines = ['## Scaling: jobs/s and WAL bytes per job against job count, users and job names', ''];
  lines.push('One run per point: the names enabled and the worker idle, one transaction queues the jobs ' +
             '(job i: user i mod U, job name i mod K; each (user, name) pair is a fairness group) and commits; ' +
             'jobs/s and WAL from that COMMIT until none is left. Each cell: jobs/s / WAL bytes per job ' +
             '(jobs/s ÷ that of 100 users and 1 job name, in bold, at the same job count). ' +
             'The target: at least 0.80× with 10,000 users or more and with 1,000 job names.', '');
  for (const n of sorted(points.map((p) => p.jobs))) {
    const mine = points.filter((p) => p.jobs === n);
    const users = sorted(mine.map((p) => p.users));
    const base = mine.find((p) => p.users === 100 && p.names === 1);
    const cell = (p) => {
      if (!p) return '—';
      const text = `${fmt(p.jobs_per_s)} / ${fmt(p.wal_bytes_per_job)}`;
      if (p === base) return `**${text}**`;
      return base ? `${text} (${(p.jobs_per_s / base.jobs_per_s).toFixed(2)}×)` : text;
    };
    lines.push(`### ${fmt(n)} jobs`, '');
    lines.push(`| job names \\ users | ${users.map(fmt).join(' | ')} |`, `|---|${users.map(() => '---:').join('|')}|`);
    for (const k of sorted(mine.map((p) => p.names))) {
      lines.push(`| ${fmt(k)} | ${users.map((u) => cell(mine.find((p) => p.users === u && p.names === k))).join(' | ')} |`);
    }
    const worst = base && mine.filter(many).sort((a, b) => a.jobs_per_s - b.jobs_per_s)[0];
    lines.push('');
    if (worst) {
      lines.push(`Lowest with many groups: ${(worst.jobs_per_s / base.jobs_per_s).toFixed(2)}× ` +
                 `(${fmt(worst.users)} user${worst.users === 1 ? '' : 's'}, ${fmt(worst.names)} job name${worst.names === 1 ? '' : 's'}).`, '');
    }
  }
  return lines;
}

function report() {
  const r = readRaw(args.raw);
  const fmt = (x) => (x === undefined || x === null || Number.isNaN(x) ? 'n/a' : Math.round(x).toLocaleString('en-US'));
  const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : 'n/a');
  const jr = r.jobrunner?.median_jobs_per_s;
  const A = r.ceiling_a?.requests_per_s;
  const Bjobs = r.ceiling_b?.claim_record_jobs_per_s;
  const lines = [];
  const m = r.machine || {};
  lines.push(`# pg_jobrunner benchmark results`, '');
  lines.push(`Date: ${m.date || new Date().toISOString()}  `);
  lines.push(`Machine: ${m.cpu || '?'}, ${m.cores || '?'} cores, ${m.memory || '?'} RAM; ${m.os || ''}  `);
  lines.push(`Software: ${m.postgres || ''}; ${m.nginx || ''}; ${m.wrk || ''}; node ${m.node || ''}; ` +
             `pg-boss ${versionOf(r, 'pgboss')}; graphile-worker ${versionOf(r, 'graphile')}  `);
  lines.push(`Commit: ${m.commit || '?'}; pg_jobrunner ${m.pg_jobrunner || '?'} (library ${m.library || '?'})`, '');
  lines.push(`## Throughput (${fmt(r.jobrunner?.jobs)} jobs, ${r.jobrunner?.users ?? '?'} users, HTTP POST to nginx answering 204)`, '');
  lines.push('Each system\'s worker idle, then one transaction queues every job and commits; the clock runs from ' +
             'that COMMIT until all are done. No ANALYZE or CHECKPOINT before. Medians of interleaved rounds.', '');
  lines.push('| what | figure | ratio |', '|---|---:|---|');
  lines.push(`| ceiling A: wrk → nginx, ${r.ceiling_a?.connections ?? '?'} connections | ${fmt(A)} requests/s | — |`);
  lines.push(`| ceiling B: pgbench _claim(500) + _record(500) per transaction, 1 client | ${fmt(Bjobs)} jobs/s | — |`);
  const Bcycle = r.ceiling_b?.cycle_jobs_per_s;
  const cm = r.ceiling_b?.cycle_ms || {};
  lines.push(`| ceiling B′: pgbench worker cycle, _record(previous 256) + _claim(256) per transaction, 1 client | ${fmt(Bcycle)} jobs/s | per 256-job cycle: _record ${cm.record ?? '?'} ms, _claim ${cm.claim ?? '?'} ms, commit ${cm.commit ?? '?'} ms |`);
  lines.push(`| ceiling B: pgbench single-row UPDATE + INSERT, 1 client | ${fmt(r.ceiling_b?.update_insert_tps_1)} tx/s | — |`);
  lines.push(`| ceiling B: pgbench single-row UPDATE + INSERT, ${r.ceiling_b?.clients_many ?? '?'} clients | ${fmt(r.ceiling_b?.update_insert_tps_many)} tx/s | — |`);
  lines.push(`| **pg_jobrunner** end to end (median of ${r.jobrunner?.runs?.length ?? '?'}) | **${fmt(jr)} jobs/s** | ${ratio(jr, A)} of A, ${ratio(jr, Bjobs)} of B, ${ratio(jr, Bcycle)} of B′ |`);
  const bySystem = peersBySystem(r);
  for (const [system, keys] of Object.entries(bySystem)) {
    keys.forEach((key, i) => {
      const p = r[key];
      const best = i === 0 && keys.length > 1 ? ' **best**' : '';
      lines.push(`| ${PEER_NAME[system]} ${p.version} (${peerSetting(p)}; median of ${p.runs.length})${best} | ` +
                 `${fmt(p.median_jobs_per_s)} jobs/s | pg_jobrunner / this = ${ratio(jr, p.median_jobs_per_s)} |`);
    });
  }
  lines.push('');
  const bests = Object.entries(bySystem).map(([system, keys]) => [system, r[keys[0]]]);
  if (jr && bests.length) {
    lines.push('pg_jobrunner against each peer at its best setting (same run, medians of the interleaved rounds):', '');
    lines.push('| peer at its best | its jobs/s | pg_jobrunner jobs/s | pg_jobrunner ÷ peer |', '|---|---:|---:|---:|');
    for (const [system, p] of bests) {
      lines.push(`| ${PEER_NAME[system]} (${peerSetting(p)}) | ${fmt(p.median_jobs_per_s)} | ${fmt(jr)} | **${ratio(jr, p.median_jobs_per_s)}** |`);
    }
    lines.push('');
  }
  const runsOf = (x) => (x?.runs || []).map((y) => fmt(y.jobs_per_s)).join(', ');
  lines.push(`Runs (jobs/s): pg_jobrunner ${runsOf(r.jobrunner)}` +
             Object.values(bySystem).flat().map((k) => `; ${k.replace('peer_', '')} ${runsOf(r[k])}`).join(''), '');
  if (r.jobrunner?.runs?.length) {
    lines.push(`CPU seconds per ${fmt(r.jobrunner.jobs)}-job run (median run):`, '');
    lines.push('| system | worker process | other postgres processes | nginx | harness (poller) | outside the bench | wall s | WAL bytes/job |', '|---|---:|---:|---:|---:|---:|---:|---:|');
    const pick = (x) => [...x.runs].sort((a, b) => a.jobs_per_s - b.jobs_per_s)[Math.floor(x.runs.length / 2)];
    const row = (name, x) => { const p = pick(x); lines.push(`| ${name} | ${p.cpu_s.worker} | ${p.cpu_s.postgres_other} | ${p.cpu_s.nginx} | ${p.cpu_s.harness} | ${p.cpu_s.outside === undefined ? '?' : Math.max(0, p.cpu_s.outside)} | ${p.seconds} | ${p.wal_bytes_per_job ?? '?'} |`); };
    row('pg_jobrunner', r.jobrunner);
    for (const key of Object.values(bySystem).flat()) row(key.replace('peer_', ''), r[key]);
    lines.push('', '"outside the bench": CPU seconds the machine spent on processes this run did not start ' +
               '(the machine has 2 cores, so 2 × wall seconds is all there is).', '');
  }
  lines.push('## Latency: commit of one job → its request arriving at the endpoint (idle worker)', '');
  lines.push('| system | samples | p50 ms | p95 ms | p99 ms | max ms |', '|---|---:|---:|---:|---:|---:|');
  for (const key of Object.keys(r).filter((k) => k.startsWith('latency_')).sort()) {
    const l = r[key];
    const s = l.ms_from_commit_sent;
    lines.push(`| ${l.system === 'jobrunner' ? 'pg_jobrunner' : l.system} | ${l.samples} | ${s.p50} | ${s.p95} | ${s.p99} | ${s.max} |`);
  }
  lines.push('', 'Measured from sending the autocommit statement that queues the job (its own round trip, p50 ' +
             `${r.latency_jobrunner?.ms_commit_round_trip?.p50 ?? '?'} ms for pg_jobrunner, is included) to the endpoint parsing the request headers.`, '');
  if (r.enqueue?.summary?.length) {
    const e = r.enqueue;
    const label = {
      baseline: 'baseline: the application\'s INSERT alone',
      jobrunner: 'pg_jobrunner `queue_job_for`',
      jobrunner_dedup: 'pg_jobrunner `queue_job_for`, `_dedup_key`',
      graphile: `graphile-worker ${e.versions.graphile} \`add_job\``,
      pgboss: `pg-boss ${e.versions.pgboss} \`send\` (queue default, no NOTIFY)`,
      pgboss_notify: `pg-boss ${e.versions.pgboss} \`send\` (queue \`notify: true\`)`,
    };
    lines.push(`## Enqueue cost: what one queued job adds to the application's transaction (${e.clients} clients)`, '');
    lines.push(`pgbench, ${e.clients} clients, ${e.seconds} s per variant (the first ${e.warmup_s} s dropped), ` +
               `${e.rounds} interleaved rounds; each transaction: BEGIN, INSERT an order RETURNING its id, the enqueue, COMMIT. ` +
               'Added = the percentile minus the baseline\'s in the same round (median over the rounds).', '');
    for (const mode of e.modes) {
      const rows = e.summary.filter((x) => x.mode === mode);
      const systems = rows.filter((x) => x.variant !== 'baseline');
      const cheapest = Math.min(...systems.map((x) => x.added_p50_ms));
      lines.push(`pgbench \`-M ${mode}\`:`, '');
      lines.push('| transaction | tx/s | p50 ms | p99 ms | added p50 ms | added p99 ms |', '|---|---:|---:|---:|---:|---:|');
      for (const x of rows) {
        const mark = x.variant !== 'baseline' && x.added_p50_ms === cheapest ? ' **cheapest**' : '';
        lines.push(`| ${label[x.variant] || x.variant}${mark} | ${fmt(x.tps)} | ${x.p50_ms.toFixed(2)} | ${x.p99_ms.toFixed(2)} | ` +
                   `${x.variant === 'baseline' ? '—' : x.added_p50_ms.toFixed(2)} | ${x.variant === 'baseline' ? '—' : x.added_p99_ms.toFixed(2)} |`);
      }
      lines.push('');
    }
  }
  if (r.soak) {
    const s = r.soak;
    lines.push(`## Memory: worker RSS over a soak of ${fmt(s.jobs)} jobs`, '');
    lines.push('| | VmRSS kB | RssAnon kB | RssShmem kB |', '|---|---:|---:|---:|');
    lines.push(`| worker start (idle) | ${s.kB.start.VmRSS} | ${s.kB.start.RssAnon} | ${s.kB.start.RssShmem} |`);
    lines.push(`| after the first 10,000 jobs | ${s.kB.warm.VmRSS} | ${s.kB.warm.RssAnon} | ${s.kB.warm.RssShmem} |`);
    lines.push(`| after ${fmt(s.jobs)} jobs | ${s.kB.after.VmRSS} | ${s.kB.after.RssAnon} | ${s.kB.after.RssShmem} |`);
    lines.push(`| max during the soak | ${s.kB.max_VmRSS} | ${s.kB.max_RssAnon} | |`, '');
    lines.push(`Growth after warm-up: RssAnon ${s.growth_kB.RssAnon_after_warmup} kB, VmRSS ${s.growth_kB.VmRSS_after_warmup} kB ` +
               `(VmRSS includes shared buffers the worker touched). Soak throughput ${fmt(s.jobs_per_s)} jobs/s ` +
               `(${fmt(s.jobs_per_s_after_warmup)} after warm-up), queueing concurrently; worker pid unchanged: ${s.same_pid_after}. ` +
               `Tables at the end: job ${s.table_size.job}, stored log rows ${s.table_size.logs}.`, '');
  }
  if (r.scaling?.points?.length) lines.push(...scalingSection(r.scaling, fmt));
  if (r.scrape?.scenarios?.length) {
    lines.push('## Scrape cost: the exporter\'s queries (monitoring/postgres_exporter.yml)', '');
    const names = Object.keys(r.scrape.scenarios[0].timings);
    lines.push(`| data | ${names.join(' | ')} | whole scrape (exporter) |`, `|---|${names.map(() => '---:').join('|')}|---:|`);
    for (const sc of r.scrape.scenarios) {
      const states = Object.entries(sc.states).map(([k, v]) => `${fmt(v)} ${k}`).join(', ');
      lines.push(`| ${sc.scenario}: ${states}; ${fmt(sc.users)} users, ${sc.names} job names | ` +
                 names.map((n) => `${sc.timings[n].median_ms} ms (max ${sc.timings[n].max_ms})`).join(' | ') +
                 ` | ${sc.exporter ? `${sc.exporter.median_ms} ms (max ${sc.exporter.max_ms})` : 'n/a'} |`);
    }
    lines.push('', 'Median of 20 runs of each query from a client (round trip included); the whole scrape is ' +
               'the exporter\'s own pg_exporter_last_scrape_duration_seconds, median of 10. After VACUUM ANALYZE.', '');
  }
  const charts = dirname(args.out);
  const shown = [['throughput.svg', 'Throughput per system'], ['latency.svg', 'Commit-to-request latency'],
                 ['scaling.svg', 'Scaling over users and job names']].filter(([f]) => existsSync(`${charts}/${f}`));
  if (shown.length) {
    lines.push('## Charts', '');
    for (const [f, title] of shown) lines.push(`![${title}](${f})`, '');
  }
  const text = lines.join('\n') + '\n';
  writeFileSync(args.out, text);
  return text;
}

// --- main ---------------------------------------------------------------------

const commands = {
  'setup-jobrunner': setupJobrunner, jobrunner: jobrunnerBench, peer: peerBench,
  latency: latencyBench, enqueue: enqueueBench, soak: soakBench, scaling: scalingBench, scrape: scrapeBench,
};
try {
  if (command === 'report') {
    process.stdout.write(report());
  } else if (command === 'charts') {
    const { drawn, errors } = writeCharts(readRaw(args.raw), args.out);
    for (const e of errors) note(e);
    process.stdout.write(JSON.stringify({ drawn, errors }) + '\n');
    if (errors.length) process.exit(1);
  } else if (commands[command]) {
    const out = await commands[command]();
    process.stdout.write(JSON.stringify(out) + '\n');
  } else {
    throw new Error(`unknown command ${command}`);
  }
  process.exit(0);
} catch (e) {
  note(`${command} failed: ${e.stack || e.message}`);
  process.exit(1);
}
