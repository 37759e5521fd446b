// common.mjs — what the bench harness and the peer worker share: module
// loading from bench/.node, a Postgres client, the HTTP POST a job makes,
// process CPU accounting from /proc, and small statistics.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import crypto from 'node:crypto';

const nodeRoot = new URL('../.node/package.json', import.meta.url);
const requireBench = createRequire(nodeRoot);

// Loads a package installed in bench/.node (CommonJS or ESM alike).
export async function load(name) {
  const path = requireBench.resolve(name);
  return import(pathToFileURL(path).href);
}

// Connects one pg client to a database of the bench cluster (PGHOST/PGPORT/PGUSER).
export async function connect(database) {
  const pg = (await load('pg')).default;
  const client = new pg.Client({ database, application_name: 'bench harness' });
  await client.connect();
  return client;
}

export function connectionString(database) {
  const host = encodeURIComponent(process.env.PGHOST || '127.0.0.1');
  const port = process.env.PGPORT || '5432';
  const user = process.env.PGUSER || 'postgres';
  return `postgresql://${user}@${host}:${port}/${database}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// Deterministic user ids: user k of 100 (the same ones for every system).
export function userId(k) {
  return `00000000-0000-4000-8000-${String(k).padStart(12, '0')}`;
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

// HS256 JWT for the job's user, as pg_jobrunner mints one per dispatch, so
// the peers' handlers do the same per-job work.
export function mintJwt(secret, sub, ttlS = 360) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url('{"alg":"HS256","typ":"JWT"}');
  const body = b64url(JSON.stringify({ sub, role: 'authenticated', aud: 'authenticated', iat: now, exp: now + ttlS }));
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// A keep-alive HTTP client for one endpoint: post(jobId, userId, body) resolves
// with the status once the response has been read to its end.
export function httpPoster(urlText, maxSockets, secret) {
  const url = new URL(urlText);
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  return function post(jobId, user, bodyObj, attempt = 1) {
    const body = JSON.stringify(bodyObj ?? {});
    return new Promise((resolve, reject) => {
      const req = http.request({
        agent, host: url.hostname, port: url.port, path: url.pathname, method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
          Authorization: `Bearer ${mintJwt(secret, user)}`,
          'X-Job': 'true',
          'X-Correlation-ID': jobId,
          'X-Job-Name': 'bench',
          'X-Job-Attempt': String(attempt),
          'Idempotency-Key': jobId,
        },
      }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode >= 200 && res.statusCode < 300
          ? resolve(res.statusCode) : reject(new Error(`HTTP ${res.statusCode}`))));
        res.on('error', reject);
      });
      req.setTimeout(30000, () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(body);
    });
  };
}

// CPU seconds (user+system) of a process, from /proc/<pid>/stat; 0 if gone.
const TICK = 100; // USER_HZ on Linux
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICK;
  } catch {
    return 0;
  }
}

// Children of a process (by ppid), from /proc.
export function childrenOf(ppid) {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - f[3] - f[4]) / TICK;   // minus idle and iowait
}

// A CPU snapshot of named process groups: {name: [pids] | () => [pids]}.
// Processes that exit between snapshots are lost, so groups should be
// long-lived (postmaster children, the worker, nginx workers).
export function cpuSnapshot(groups) {
  const snap = {};
  for (const [name, pidsOrFn] of Object.entries(groups)) {
    const pids = typeof pidsOrFn === 'function' ? pidsOrFn() : pidsOrFn;
    snap[name] = {};
    for (const pid of pids) snap[name][pid] = cpuSeconds(pid);
  }
  snap._self = process.cpuUsage();
  snap._machine = machineBusySeconds();
  return snap;
}

// CPU seconds used per group between two snapshots (new pids count from 0).
export function cpuDelta(before, after) {
  const out = {};
  let ours = 0;
  for (const name of Object.keys(after)) {
    if (name.startsWith('_')) continue;
    let sum = 0;
    for (const [pid, secs] of Object.entries(after[name])) sum += secs - (before[name]?.[pid] ?? 0);
    out[name] = Math.round(sum * 100) / 100;
    ours += sum;
  }
  const self = process.cpuUsage(before._self);
  out.harness = Math.round((self.user + self.system) / 1e4) / 100;
  ours += out.harness;
  // Whatever else ran on the machine meanwhile (other users' processes too).
  out.machine_busy = Math.round((after._machine - before._machine) * 100) / 100;
  out.outside = Math.round((out.machine_busy - ours) * 100) / 100;
  return out;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

// Reads pid's memory lines from /proc/<pid>/status (kB).
export function memoryOf(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (key) => Number((text.match(new RegExp(`^${key}:\\s+(\\d+)`, 'm')) || [])[1] || NaN);
  return { VmRSS: get('VmRSS'), RssAnon: get('RssAnon'), RssFile: get('RssFile'), RssShmem: get('RssShmem'), VmHWM: get('VmHWM') };
}
