// peer_worker.mjs — one worker process of a peer job queue (pg-boss or
// graphile-worker) whose handler does what pg_jobrunner does per job: mint
// an HS256 token for the job's user and POST the job's body, with the same
// headers, to the endpoint over keep-alive HTTP.
//
//   node peer_worker.mjs '<json options>'
//
// Protocol with the harness (bench/lib/harness.mjs): the process connects
// and prints READY; on a "GO" line on stdin it starts working; on "STOP" it
// stops gracefully and exits 0. Options: system ('pgboss' | 'graphile'),
// database, url, secret, and the tuning (see the defaults below).
import readline from 'node:readline';
import { load, connectionString, httpPoster } from './common.mjs';

const opts = JSON.parse(process.argv[2] || '{}');
const url = opts.url;
const secret = opts.secret;
let failures = 0;

function log(...args) {
  process.stderr.write(`[${opts.system} worker] ${args.join(' ')}\n`);
}

async function pgbossWorker() {
  const { PgBoss } = await load('pg-boss');
  const inFlight = opts.batchSize * opts.localConcurrency;
  const post = httpPoster(url, inFlight, secret);
  const boss = new PgBoss({
    connectionString: connectionString(opts.database),
    max: opts.poolSize,
    application_name: 'bench pg-boss worker',
    schedule: false,        // no cron in this benchmark
    supervise: false,       // maintenance off: it only adds load to measure
    migrate: false,         // the harness installed the schema already
    useListenNotify: true,  // wake on NOTIFY (the queue is created with notify: true)
  });
  boss.on('error', (e) => log('error', e.message));
  await boss.start();
  return {
    async go() {
      await boss.work(opts.queue, {
        batchSize: opts.batchSize,
        localConcurrency: opts.localConcurrency,
        pollingIntervalSeconds: 0.5,          // the minimum pg-boss allows
        notifyPollingIntervalSeconds: 0.5,
        burstWhenBatchFull: true,             // fetch again at once while batches come back full
      }, async (jobs) => {
        await Promise.all(jobs.map((j) => post(j.id, j.data.user, j.data).catch((e) => {
          failures++;
          throw e;
        })));
      });
    },
    async stop() {
      await boss.stop({ graceful: true, timeout: 5000, close: true });
    },
  };
}

async function graphileWorker() {
  const pg = (await load('pg')).default;
  const { run, Logger } = await load('graphile-worker');
  const post = httpPoster(url, opts.concurrency, secret);
  const pool = new pg.Pool({ connectionString: connectionString(opts.database), max: opts.poolSize,
                             application_name: 'bench graphile-worker' });
  pool.on('error', (e) => log('pool error', e.message));
  pool.on('connect', (client) => client.on('error', (e) => log('client error', e.message)));
  // Open the pool's connections before GO so that start-up is not timed.
  const clients = await Promise.all(Array.from({ length: opts.poolSize }, () => pool.connect()));
  clients.forEach((c) => c.release());
  const quiet = new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') log(level, message);
  });
  let runner = null;
  return {
    async go() {
      runner = await run({
        pgPool: pool,
        concurrency: opts.concurrency,
        noHandleSignals: true,
        pollInterval: 500,
        logger: quiet,
        taskList: {
          bench: async (payload, helpers) => {
            try {
              await post(helpers.job.id, payload.user, payload);
            } catch (e) {
              failures++;
              throw e;
            }
          },
        },
        preset: {
          worker: {
            localQueue: { size: opts.localQueueSize },   // fetch and lock jobs in batches
            completeJobBatchDelay: opts.batchDelayMs,    // batch completions
            failJobBatchDelay: opts.batchDelayMs,
          },
        },
      });
    },
    async stop() {
      if (runner) await runner.stop();
      await pool.end();
    },
  };
}

const worker = opts.system === 'pgboss' ? await pgbossWorker() : await graphileWorker();
process.stdout.write('READY\n');

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const cmd = line.trim();
  if (cmd === 'GO') {
    await worker.go();
    process.stdout.write('GOING\n');
  } else if (cmd === 'STOP') {
    rl.close();
    try {
      await worker.stop();
    } catch (e) {
      log('stop failed:', e.message);
    }
    if (failures) log(`${failures} HTTP failures`);
    process.exit(0);
  }
});
// The harness going away is a STOP too.
rl.on('close', () => setTimeout(() => process.exit(0), 6000).unref());
