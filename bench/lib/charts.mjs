// charts.mjs — the benchmark's pictures: SVG through gnuplot (Debian's
// gnuplot-nox), from the raw JSON of a run. For each chart, a .dat file with
// its figures and a .gp script go next to the .svg, so a chart can be
// redrawn (gnuplot FILE.gp) or read as numbers.
//
//   throughput.svg  jobs/s per system (medians), with pg_jobrunner's ratio
//                   to each peer, and the SQL-only ceiling B′ for reference
//   latency.svg     commit-to-request latency of each system, as the share
//                   of jobs sent within x ms (a cumulative distribution)
//   scaling.svg     pg_jobrunner jobs/s and WAL bytes per job against the
//                   number of users, one line per job count and number of
//                   job names
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

// Two panels over users (log scale): jobs/s above, WAL bytes per job below;
// one line per (job count, job names), coloured by job count, dashed by names.
function scalingChart(r, out) {
  const s = r.scaling;
  if (!s?.points?.length) return null;
  const points = s.points.map((p) => ({ ...p, jobs: p.jobs ?? s.jobs }));
  const sorted = (xs) => [...new Set(xs)].sort((a, b) => a - b);
  const jobsList = sorted(points.map((p) => p.jobs));
  const namesList = sorted(points.map((p) => p.names));
  const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#8c564b', '#e377c2'];
  const lines = [];
  for (const [i, n] of jobsList.entries()) {
    for (const [j, k] of namesList.entries()) {
      const mine = points.filter((p) => p.jobs === n && p.names === k).sort((a, b) => a.users - b.users);
      if (!mine.length) continue;
      const dat = `${out}/scaling_j${n}_n${k}.dat`;
      writeFileSync(dat, '# users\tjobs_per_s\twal_bytes_per_job\n' +
        mine.map((p) => `${p.users}\t${p.jobs_per_s}\t${p.wal_bytes_per_job ?? 'NaN'}`).join('\n') + '\n');
      lines.push({ dat, style: `lw 2.5 pt ${7 + 2 * j} ps 1.1 dt ${j + 1} lc rgb '${palette[i % palette.length]}'`,
                   title: `${thousands(n)} jobs, ${thousands(k)} name${k === 1 ? '' : 's'}` });
    }
  }
  const plot = (col, titles) => lines.map((l) => `'${l.dat}' using 1:${col} with linespoints ${l.style} ` +
    (titles ? `title '${l.title}'` : 'notitle')).join(', \\\n     ');
  // Results from before WAL was measured have only the first panel.
  const wal = points.some((p) => p.wal_bytes_per_job !== undefined);
  const xlabel = "set xlabel 'users (log scale): each (user, job name) is a fairness group'";
  writeFileSync(`${out}/scaling.gp`, `${SVG.replace('size 1000,520', `size 1000,${wal ? 820 : 520}`)}
set output '${out}/scaling.svg'
set multiplot layout ${wal ? 2 : 1},1 title "pg_jobrunner: bursts of jobs spread over users and job names (one run per point)"
set logscale x
set grid xtics ytics lc rgb '#dddddd'
set format x '%.0s%c'
set key at screen 0.655, screen 0.92 left top Left reverse box
set lmargin at screen 0.08
set rmargin at screen 0.63
set ylabel 'jobs per second'
set yrange [0:*]
set ytics format '%.0s%c'
${wal ? '' : xlabel}
plot ${plot(2, true)}
${wal ? `${xlabel}
unset key
set ylabel 'WAL bytes per job'
set ytics format '%.0f'
plot ${plot(3, false)}` : ''}
unset multiplot
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
