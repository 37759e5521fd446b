// charts.mjs — the benchmark's pictures: SVG through gnuplot (Debian's
// gnuplot-nox), from the raw JSON of a run. For each chart, a .dat file with
// its figures and a .gp script go next to the .svg, so a chart can be
// redrawn (gnuplot FILE.gp) or read as numbers.
//
//   throughput.svg  jobs/s per system (medians), with pg_jobrunner's ratio
//                   to each peer, and the SQL-only ceiling B′ for reference
//   latency.svg     commit-to-request latency of each system, as the share
//                   of jobs sent within x ms (a cumulative distribution)
//   scaling.svg     pg_jobrunner jobs/s against the number of users, one
//                   line per number of job names
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

const SVG = "set terminal svg size 1000,520 dynamic noenhanced font 'Helvetica,13' background rgb 'white'";
const COLORS = { pg_jobrunner: '#1f77b4', 'pg-boss': '#ff7f0e', graphile: '#2ca02c', other: '#7f7f7f' };

// The display name and colour of a raw result key.
function systemOf(key, r) {
  if (key === 'jobrunner') return { name: 'pg_jobrunner', color: COLORS.pg_jobrunner };
  const s = r.settings || {};
  if (r.system === 'pgboss') {
    return { name: `pg-boss ${s.localConcurrency}×${s.batchSize}`, color: COLORS['pg-boss'] };
  }
  const c = s.concurrency;
  return { name: `graphile-worker c${c ?? '?'} q${s.localQueueSize ?? '?'}`, color: c > 8 ? COLORS.graphile : '#98df8a' };
}

// Runs gnuplot on script (a file path); returns an error string or null.
function gnuplot(script) {
  const done = spawnSync('gnuplot', [script], { encoding: 'utf8' });
  if (done.error) return `gnuplot: ${done.error.message}`;
  if (done.status !== 0) return `gnuplot ${script}: ${done.stderr}`;
  return null;
}

// Thousands separators, as the tables print them.
const thousands = (v) => Math.round(v).toLocaleString('en-US');

function throughputChart(r, out) {
  const jr = r.jobrunner?.median_jobs_per_s;
  if (!jr) return null;
  // pg_jobrunner, the peers from fastest to slowest, then the ceiling.
  const rows = [['pg_jobrunner', jr, COLORS.pg_jobrunner, '']];
  const peers = Object.keys(r).filter((k) => k.startsWith('peer_'))
    .sort((a, b) => r[b].median_jobs_per_s - r[a].median_jobs_per_s);
  for (const key of peers) {
    const s = systemOf(key, r[key]);
    const v = r[key].median_jobs_per_s;
    rows.push([s.name.replace(/^(graphile-worker|pg-boss) /, '$1\\n'), v, s.color,
               `pg_jobrunner ${(jr / v).toFixed(2)}×`]);
  }
  if (r.ceiling_b?.cycle_jobs_per_s) {
    rows.push(['ceiling B′\\n(its SQL, no HTTP)', r.ceiling_b.cycle_jobs_per_s, COLORS.other, '']);
  }
  const dat = `${out}/throughput.dat`;
  writeFileSync(dat, '# x\tjobs_per_s\tcolor\tvalue_label\tratio_label\n' +
    rows.map(([, v, c, note], i) => `${i}\t${Math.round(v)}\t0x${c.slice(1)}\t"${thousands(v)}"\t"${note}"`).join('\n') + '\n');
  const xtics = rows.map(([n], i) => `"${n}" ${i}`).join(', ');
  const top = Math.max(...rows.map((x) => x[1])) * 1.25;
  writeFileSync(`${out}/throughput.gp`, `${SVG}
set output '${out}/throughput.svg'
set title "Throughput: ${thousands(r.jobrunner.jobs)} jobs for ${r.jobrunner.users} users, each an HTTP POST to nginx (median of ${r.jobrunner.runs.length} runs)"
set ylabel 'jobs per second'
set yrange [0:${Math.round(top)}]
set xrange [-0.6:${rows.length - 0.4}]
set bmargin 4.5
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics lc rgb '#dddddd'
set xtics (${xtics}) nomirror scale 0 font ',12'
set ytics nomirror format '%.0s%c'
unset key
plot '${dat}' using 1:2:3 with boxes lc rgb variable, \\
     '' using 1:2:4 with labels offset 0,2.0 font ',13', \\
     '' using 1:2:5 with labels offset 0,0.8 font ',10' tc rgb '#444444'
`);
  return gnuplot(`${out}/throughput.gp`) || 'throughput.svg';
}

function latencyChart(r, out) {
  const series = Object.keys(r).filter((k) => k.startsWith('latency_') && r[k].samples_ms?.length).sort();
  if (!series.length) return null;
  const plots = [];
  for (const key of series) {
    const l = r[key];
    const name = l.system === 'jobrunner' ? 'pg_jobrunner' : l.system === 'pgboss' ? 'pg-boss' : 'graphile-worker';
    const color = l.system === 'jobrunner' ? COLORS.pg_jobrunner : l.system === 'pgboss' ? COLORS['pg-boss'] : COLORS.graphile;
    const sorted = [...l.samples_ms].sort((a, b) => a - b);
    const dat = `${out}/latency_${l.system}.dat`;
    writeFileSync(dat, '# ms_from_commit_sent\tshare_within\n' +
      sorted.map((v, i) => `${v}\t${((i + 1) / sorted.length).toFixed(4)}`).join('\n') + '\n');
    const p50 = l.ms_from_commit_sent.p50;
    plots.push(`'${dat}' using 1:2 with steps lw 2.5 lc rgb '${color}' title '${name} (p50 ${p50} ms, p99 ${l.ms_from_commit_sent.p99} ms)'`);
  }
  writeFileSync(`${out}/latency.gp`, `${SVG}
set output '${out}/latency.svg'
set title 'Commit to request: from sending the statement that queues one job to its request arriving (idle worker)'
set xlabel 'milliseconds (log scale)'
set ylabel 'share of jobs sent within x'
set logscale x
set xrange [1:*]
set yrange [0:1.02]
set ytics ('0%%' 0, '25%%' 0.25, '50%%' 0.5, '75%%' 0.75, '90%%' 0.9, '100%%' 1)
set grid xtics ytics mxtics lc rgb '#dddddd'
set key right bottom box opaque
plot ${plots.join(', \\\n     ')}
`);
  return gnuplot(`${out}/latency.gp`) || 'latency.svg';
}

function scalingChart(r, out) {
  const s = r.scaling;
  if (!s?.points?.length) return null;
  const byNames = new Map();
  for (const p of s.points) {
    if (!byNames.has(p.names)) byNames.set(p.names, []);
    byNames.get(p.names).push(p);
  }
  const palette = ['#1f77b4', '#d62728', '#9467bd', '#8c564b', '#e377c2'];
  const plots = [];
  let i = 0;
  for (const [names, points] of [...byNames.entries()].sort((a, b) => a[0] - b[0])) {
    const dat = `${out}/scaling_names${names}.dat`;
    writeFileSync(dat, '# users\tjobs_per_s\n' +
      points.sort((a, b) => a.users - b.users).map((p) => `${p.users}\t${p.jobs_per_s}`).join('\n') + '\n');
    plots.push(`'${dat}' using 1:2 with linespoints lw 2.5 pt 7 ps 1.2 lc rgb '${palette[i++ % palette.length]}' ` +
               `title '${names} job name${names === 1 ? '' : 's'}'`);
  }
  writeFileSync(`${out}/scaling.gp`, `${SVG}
set output '${out}/scaling.svg'
set title "pg_jobrunner: ${s.jobs.toLocaleString('en-US')} jobs spread over users and job names (one run each)"
set xlabel 'users (log scale): each (user, job name) is a fairness group'
set ylabel 'jobs per second'
set logscale x
set yrange [0:*]
set ytics format '%.0s%c'
set grid xtics ytics lc rgb '#dddddd'
set key right top box opaque
plot ${plots.join(', \\\n     ')}
`);
  return gnuplot(`${out}/scaling.gp`) || 'scaling.svg';
}

// Draws every chart the raw results allow; returns {drawn: [files], errors: [text]}.
export function writeCharts(r, out) {
  const drawn = [];
  const errors = [];
  for (const chart of [throughputChart, latencyChart, scalingChart]) {
    const result = chart(r, out);
    if (result === null) continue;
    if (result.endsWith('.svg')) drawn.push(result);
    else errors.push(result);
  }
  return { drawn, errors };
}
