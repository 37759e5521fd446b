"""check_metrics.py — the monitoring tier: Debian's postgres_exporter with
monitoring/postgres_exporter.yml against the test cluster, jobs run (some
failing) against the integration tests' endpoint, /metrics scraped over
HTTP with curl, and every figure compared with what SQL says.

Run by test/monitoring/run.sh (Debian's /usr/bin/python3: psycopg2, PyJWT).
It reads PGHOST, PGPORT, PGUSER and PGDATABASE (the cluster and a database
to connect to), JOBRUNNER_SECRET (the cluster's signing secret, for the
endpoint's token checks), and PG_EXPORTER (the exporter binary).

The checks run in a database of their own, added to jobrunner.databases for
the run (a dispatcher of its own, so figures are exact) and dropped at the
end, with jobrunner.databases put back. Prints one line per check,
"    <check> ... ok|FAILED" (details under a failure), and last
"N passed, M failed". Every wait polls a condition with a deadline;
traffic stays on 127.0.0.1.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

from harness import configure_job, connect, query, queue_for, scalar, wait_for  # noqa: E402
from endpoint import Endpoint  # noqa: E402

QUERIES = os.path.join(REPO, "monitoring", "postgres_exporter.yml")
EXPORTER = os.environ.get("PG_EXPORTER", "/usr/bin/prometheus-postgres-exporter")
OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "other_status", "transport", "unsent")
SUFFIX = uuid.uuid4().hex[:8]
DB = "jobrunner_mon_" + SUFFIX
EXPORTER_ROLE = "jr_mon_exporter"
NOBODY_ROLE = "jr_mon_nobody"

passed = failed = 0


def report(name, ok, detail=""):
    """One check's line; details indented under a failure."""
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("    %s ... %s" % (name, "ok" if ok else "FAILED"), flush=True)
    if not ok and detail:
        for line in str(detail).splitlines():
            print("        " + line, flush=True)


def check(name, fn):
    """Runs fn(); an exception or a false result fails the check."""
    try:
        result = fn()
    except Exception as e:  # a broken check is a failed check, with its reason
        report(name, False, "%s: %s" % (type(e).__name__, e))
        return False
    ok, detail = result if isinstance(result, tuple) else (bool(result), "")
    report(name, ok, detail)
    return ok


# --- the exporter -------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """prometheus-postgres-exporter on a free 127.0.0.1 port, only our queries."""

    def __init__(self, dsn):
        self.port = free_port()
        self.log = open(os.path.join(os.environ.get("MONITOR_OUTPUT", "/tmp"),
                                     "exporter-%s.log" % SUFFIX), "w")
        env = dict(os.environ, DATA_SOURCE_NAME=dsn)
        # Default and settings metrics off, the built-in collectors off: the
        # page holds our queries and the exporter's own few lines.
        self.proc = subprocess.Popen(
            [EXPORTER, "--disable-default-metrics", "--disable-settings-metrics",
             "--no-collector.database", "--no-collector.bgwriter",
             "--extend.query-path=" + QUERIES,
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/metrics" % self.port

    def scrape_text(self):
        done = subprocess.run(["curl", "-sS", "--max-time", "10", self.url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise AssertionError("curl %s: %s" % (self.url, done.stderr.decode(errors="replace")))
        return done.stdout.decode()

    def scrape(self):
        return Page(self.scrape_text())

    def wait_ready(self, timeout=30):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("the exporter exited (%s)" % self.proc.returncode)
            try:
                return "pg_up 1" in self.scrape_text()
            except AssertionError:
                return False
        wait_for(up, timeout, 0.1, "the exporter did not serve pg_up 1")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Page:
    """A scraped /metrics page: value(name, **labels) of the one matching sample."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        for line in text.splitlines():
            m = LINE.match(line)
            if m:
                labels = dict(LABEL.findall(m.group(2) or ""))
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def find(self, name, **labels):
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == str(w) for k, w in labels.items())]

    def value(self, name, **labels):
        found = self.find(name, **labels)
        if len(found) != 1:
            raise AssertionError("%d samples of %s%s" % (len(found), name, labels))
        return found[0][1]

    def buckets(self, name, **labels):
        """[(le, cumulative count)] of histogram name, in le order."""
        out = [(float(l["le"]), v) for l, v in self.find(name + "_bucket", **labels)]
        return sorted(out)


def poll_match(exporter, expected_fn, actual_fn, timeout=10):
    """Scrapes until actual_fn(page) == expected_fn() (both re-read each time),
    or the deadline; returns (ok, detail). A job's final state is visible an
    instant before its commit is counted, so equality is awaited, not assumed."""
    deadline = time.monotonic() + timeout
    while True:
        expected = expected_fn()
        actual = actual_fn(exporter.scrape())
        if actual == expected:
            return True, ""
        if time.monotonic() >= deadline:
            return False, "exported %r\nSQL says %r" % (actual, expected)
        time.sleep(0.1)


# --- SQL side ---------------------------------------------------------------------

def sql_counters(conn, name):
    """What SQL says a job name's counters must be."""
    r = query(conn, """
        SELECT count(*) FILTER (WHERE state = 'completed') AS completed,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               COALESCE(sum(attempt_seq), 0) AS attempts,
               COALESCE(sum(GREATEST(attempt_seq - 1, 0)), 0) AS retries
          FROM jobrunner.job WHERE job_name = %s""", (name,))[0]
    return {k: int(v) for k, v in r.items()}


def sql_outcomes(conn, name):
    """Attempt outcomes by class, from the job log: one row with a status (or,
    for a transport failure or an attempt never sent, without) per attempt."""
    rows = query(conn, """
        SELECT CASE WHEN l.status_code BETWEEN 200 AND 299 THEN '2xx'
                    WHEN l.status_code BETWEEN 300 AND 399 THEN '3xx'
                    WHEN l.status_code BETWEEN 400 AND 499 THEN '4xx'
                    WHEN l.status_code BETWEEN 500 AND 599 THEN '5xx'
                    WHEN l.status_code IS NOT NULL THEN 'other_status'
                    WHEN l.log_message LIKE '%%has no url%%' THEN 'unsent'
                    ELSE 'transport' END AS outcome, count(*) AS n
          FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id
         WHERE j.job_name = %s AND l.log_message NOT LIKE 'started attempt%%'
           AND (l.status_code IS NOT NULL OR l.log_message LIKE 'attempt %% failed%%')
         GROUP BY 1""", (name,))
    out = {o: 0 for o in OUTCOMES}
    out.update({r["outcome"]: int(r["n"]) for r in rows})
    return out


def exported_counters(page, name):
    get = lambda metric: int(page.value(metric, database=DB, job_name=name))  # noqa: E731
    return {"completed": get("jobrunner_jobs_completed_total"),
            "failed": get("jobrunner_jobs_failed_total"),
            "attempts": get("jobrunner_jobs_attempts_total"),
            "retries": get("jobrunner_jobs_retries_total")}


def exported_outcomes(page, name):
    return {o: int(page.value("jobrunner_attempt_outcomes_total", database=DB, job_name=name,
                              outcome=o)) for o in OUTCOMES}


def histogram_sane(page, metric, name, count):
    """Cumulative buckets never decrease, +Inf equals _count equals count."""
    b = page.buckets(metric, database=DB, job_name=name)
    problems = []
    if [v for _, v in b] != sorted(v for _, v in b):
        problems.append("buckets decrease: %r" % b)
    total = page.value(metric + "_count", database=DB, job_name=name)
    if not b or b[-1][0] != float("inf") or b[-1][1] != total:
        problems.append("+Inf bucket %r is not _count %r" % (b[-1:] or None, total))
    if total != count:
        problems.append("_count %r, wanted %r" % (total, count))
    return not problems, "\n".join(problems)


def le(page, metric, name, bound):
    for upper, v in page.buckets(metric, database=DB, job_name=name):
        if upper == bound:
            return v
    raise AssertionError("no le=%s bucket in %s" % (bound, metric))


# --- the run ------------------------------------------------------------------------

def main():
    admin = connect()  # PGDATABASE: any database of the cluster
    previous = scalar(admin, """SELECT setting FROM pg_catalog.pg_file_settings
                                 WHERE name = 'jobrunner.databases' AND error IS NULL
                                   AND sourcefile LIKE '%%postgresql.auto.conf'
                                 ORDER BY seqno DESC LIMIT 1""")
    served = scalar(admin, "SELECT current_setting('jobrunner.databases')") or \
        scalar(admin, "SELECT current_setting('jobrunner.database_name')")
    db = None
    try:
        # A database of our own, served by a dispatcher of its own.
        with admin.cursor() as cur:
            cur.execute('CREATE DATABASE "%s"' % DB)
            for role, extra in ((EXPORTER_ROLE, " IN ROLE pg_monitor"), (NOBODY_ROLE, "")):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    cur.execute('CREATE ROLE "%s" LOGIN%s' % (role, extra))
            cur.execute("ALTER SYSTEM SET jobrunner.databases = %s", ("%s, %s" % (served, DB),))
            cur.execute("SELECT pg_reload_conf()")
        db = connect(dbname=DB)
        with db.cursor() as cur:
            cur.execute("CREATE EXTENSION pg_jobrunner")
        wait_for(lambda: scalar(db, "SELECT running FROM jobrunner.worker_status()"), 30, 0.1,
                 "no dispatcher started for %s" % DB)

        run_checks(admin, db)
    except Exception:  # the run broke off: one failure, with where and why
        report("the checks ran to their end", False, traceback.format_exc())
    finally:
        if db is not None:
            db.close()
        with admin.cursor() as cur:
            if previous is None:
                cur.execute("ALTER SYSTEM RESET jobrunner.databases")
            else:
                cur.execute("ALTER SYSTEM SET jobrunner.databases = %s", (previous,))
            cur.execute("SELECT pg_reload_conf()")
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % DB)
            cur.execute('DROP ROLE IF EXISTS "%s"' % EXPORTER_ROLE)
            cur.execute('DROP ROLE IF EXISTS "%s"' % NOBODY_ROLE)
        admin.close()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


def run_checks(admin, db):
    # --- who may read ------------------------------------------------------
    def nobody_refused():
        refused = []
        for fn in ("metrics()", "metrics_queue()", "metrics_worker()"):
            c = connect(dbname=DB, user=NOBODY_ROLE)
            try:
                scalar(c, "SELECT count(*) FROM jobrunner.%s" % fn)
                refused.append("%s: allowed" % fn)
            except Exception as e:
                if getattr(e, "pgcode", None) != "42501":
                    refused.append("%s: %s" % (fn, e))
            finally:
                c.close()
        return not refused, "\n".join(refused)
    check("an ordinary role may not call metrics(), metrics_queue(), metrics_worker()", nobody_refused)

    def monitor_allowed():
        c = connect(dbname=DB, user=EXPORTER_ROLE)
        try:
            for fn in ("metrics()", "metrics_queue()", "metrics_worker()"):
                scalar(c, "SELECT count(*) FROM jobrunner.%s" % fn)
            return scalar(c, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        finally:
            c.close()
    check("a pg_monitor member (not a superuser) may", monitor_allowed)

    # --- traffic ---------------------------------------------------------------
    endpoint = Endpoint().start()
    closed = free_port()  # nothing listens there: connection refused
    n = lambda kind: "mon.%s.%s" % (kind, SUFFIX)  # noqa: E731
    fast = {"retry_backoff": "100 ms", "retry_backoff_max": "200 ms", "concurrency_limit": 10}
    configure_job(db, n("ok"), endpoint.url("/ok"), max_retries=0, **fast)
    configure_job(db, n("fail"), endpoint.url("/fail"), max_retries=1, **fast)
    configure_job(db, n("flaky"), endpoint.url("/flaky?fail=1"), max_retries=2, **fast)
    configure_job(db, n("notfound"), endpoint.url("/missing"), max_retries=0, **fast)
    configure_job(db, n("down"), "http://127.0.0.1:%d/x" % closed, max_retries=0, **fast)
    configure_job(db, n("nourl"), None, max_retries=0, **fast)
    configure_job(db, n("delayed"), endpoint.url("/ok"), max_retries=0, **fast)
    configure_job(db, n("held"), endpoint.url("/ok"), max_retries=0, enabled=False, **fast)
    configure_job(db, n("backlog"), endpoint.url("/ok"), max_retries=0, enabled=False, **fast)
    configure_job(db, n("blocked"), endpoint.url("/block?ms=30000"), max_retries=0, **fast)
    configure_job(db, n("callback"), endpoint.url("/callback"), max_retries=0, completion="callback", **fast)
    configure_job(db, n("hookfail"), endpoint.url("/ok"), max_retries=0, **fast)
    with db.cursor() as cur:
        cur.execute("CREATE SCHEMA mon")
        cur.execute("""CREATE FUNCTION mon.refuse(j jobrunner.job) RETURNS void LANGUAGE plpgsql
                       AS $$BEGIN RAISE EXCEPTION 'the hook refuses'; END$$""")
        cur.execute("UPDATE jobrunner.job_config SET on_complete = 'mon.refuse(jobrunner.job)' "
                    "WHERE job_name = %s", (n("hookfail"),))

    counts = {"ok": 5, "fail": 3, "flaky": 3, "notfound": 2, "down": 2, "nourl": 1,
              "delayed": 3, "held": 3, "blocked": 2, "callback": 2, "hookfail": 1}
    for kind, k in counts.items():
        for i in range(k):
            if kind == "delayed":  # due two seconds after it is queued
                queue_for(db, None, None, None, n(kind), {"i": i},
                          run_at=scalar(db, "SELECT now() + interval '2 seconds'"))
            else:
                queue_for(db, None, None, None, n(kind), {"i": i})
    for i in range(4):
        queue_for(db, None, None, None, n("backlog"), {"i": i})
    for i in range(2):
        queue_for(db, None, None, None, n("backlog"), {"later": i},
                  run_at=scalar(db, "SELECT now() + interval '1 hour'"))

    # The held jobs wait 1.5 s (as SQL sees it) before their name is enabled.
    wait_for(lambda: scalar(db, "SELECT now() - min(created_at) > interval '1.5 seconds' "
                                "FROM jobrunner.job WHERE job_name = %s", (n("held"),)),
             10, 0.05, "the held jobs did not age")
    with db.cursor() as cur:
        cur.execute("UPDATE jobrunner.job_config SET enabled = true WHERE job_name = %s", (n("held"),))

    finite = [n(k) for k in ("ok", "fail", "flaky", "notfound", "down", "nourl", "delayed", "held", "hookfail")]
    wait_for(lambda: scalar(db, "SELECT count(*) FROM jobrunner.job WHERE job_name = ANY (%s) "
                                "AND state NOT IN ('completed', 'failed')", (finite,)) == 0,
             60, 0.05, "jobs did not finish")
    endpoint.wait_for_current(2, 10, job_name=n("blocked"))
    wait_for(lambda: scalar(db, "SELECT count(*) FROM jobrunner.job WHERE job_name = %s "
                                "AND acked_at IS NOT NULL", (n("callback"),)) == 2,
             20, 0.05, "callback jobs were not acknowledged")

    # --- the exporter ----------------------------------------------------------
    exporter = Exporter("postgresql://%s@127.0.0.1:%s/%s?sslmode=disable" % (
        EXPORTER_ROLE, os.environ.get("PGPORT", "5432"), DB))
    try:
        exporter_checks(exporter, admin, db, endpoint, n)
    finally:
        exporter.stop()
        endpoint.release()
        endpoint.shutdown()
        with db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET on_complete = NULL WHERE job_name = %s",
                        (n("hookfail"),))
            cur.execute("DROP SCHEMA mon CASCADE")


def exporter_checks(exporter, admin, db, endpoint, n):
    def started():
        exporter.wait_ready()
        p = exporter.scrape()
        problems = ["%s = %s" % (m, p.value(m)) for m, want in
                    (("pg_up", 1), ("pg_exporter_last_scrape_error", 0)) if p.value(m) != want]
        problems += ["queries file not loaded: %r" % l for l, v in
                     p.find("pg_exporter_user_queries_load_error") if v != 0]
        if not p.find("jobrunner_worker_up", database=DB):
            problems.append("no jobrunner_worker_up{database=%s}" % DB)
        return not problems, "\n".join(problems)
    if not check("the exporter serves /metrics with our queries and no scrape error", started):
        return

    def lint():
        text = exporter.scrape_text()
        ours = "\n".join(l for l in text.splitlines()
                         if re.match(r"^(# (HELP|TYPE) )?jobrunner_", l)) + "\n"
        done = subprocess.run(["promtool", "check", "metrics"], input=ours.encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        return done.returncode == 0, done.stdout.decode(errors="replace")
    check("promtool check metrics finds nothing to say about jobrunner_* metrics", lint)

    # Counters and outcomes, per job name, against SQL.
    for kind in ("ok", "fail", "flaky", "notfound", "down", "nourl", "delayed", "held", "hookfail"):
        name = n(kind)
        check("%s: completed, failed, attempts and retries equal SQL's" % kind,
              lambda: poll_match(exporter, lambda: sql_counters(db, name),
                                 lambda p: exported_counters(p, name)))
        check("%s: attempts by outcome equal the job log's" % kind,
              lambda: poll_match(exporter, lambda: sql_outcomes(db, name),
                                 lambda p: exported_outcomes(p, name)))
        def histograms():
            sent = sum(v for o, v in sql_outcomes(db, name).items() if o != "unsent")
            p = exporter.scrape()
            ok1, d1 = histogram_sane(p, "jobrunner_jobs_request_duration_seconds", name, sent)
            ok2, d2 = histogram_sane(p, "jobrunner_jobs_commit_to_request_seconds", name, sent)
            return ok1 and ok2, (d1 + "\n" + d2).strip()
        check("%s: both histograms count every attempt sent, buckets cumulative" % kind, histograms)

    def expected_kinds():
        return (exported_counters(exporter.scrape(), n("fail")) ==
                {"completed": 0, "failed": 3, "attempts": 6, "retries": 3} and
                exported_outcomes(exporter.scrape(), n("flaky"))["5xx"] == 3 and
                exported_outcomes(exporter.scrape(), n("notfound"))["4xx"] == 2 and
                exported_outcomes(exporter.scrape(), n("down"))["transport"] == 2 and
                exported_outcomes(exporter.scrape(), n("nourl"))["unsent"] == 1)
    check("each kind of failure lands in its class (5xx, 4xx, transport, unsent)", expected_kinds)

    def delayed_from_run_at():
        # Sent 2 s after queueing, but within a second of becoming due.
        late = scalar(db, """SELECT min(l.created_at - j.created_at) FROM jobrunner.job j
                              JOIN jobrunner.job_logs l ON l.job_id = j.id AND l.log_message LIKE 'started%%'
                             WHERE j.job_name = %s""", (n("delayed"),))
        p = exporter.scrape()
        within = le(p, "jobrunner_jobs_commit_to_request_seconds", n("delayed"), 1.0)
        return (late.total_seconds() >= 1.9 and within == 3,
                "first request %.3f s after queueing; %s of 3 within 1 s of due" % (late.total_seconds(), within))
    check("commit to request counts a delayed job from its run_at", delayed_from_run_at)

    def held_from_commit():
        p = exporter.scrape()
        within = le(p, "jobrunner_jobs_commit_to_request_seconds", n("held"), 1.0)
        total = p.value("jobrunner_jobs_commit_to_request_seconds_sum", database=DB, job_name=n("held"))
        return within == 0 and total >= 4.5, "%s within 1 s, sum %.3f s" % (within, total)
    check("commit to request counts jobs held back 1.5 s from their commit", held_from_commit)

    # The queue and the worker, as gauges.
    def queue_gauges():
        p = exporter.scrape()
        sql = query(db, """SELECT count(*) AS pending, count(*) FILTER (WHERE next_run_at <= now()) AS due,
                                  EXTRACT(epoch FROM now() - min(created_at))::float8 AS age,
                                  EXTRACT(epoch FROM now() - min(GREATEST(created_at, next_run_at))
                                          FILTER (WHERE next_run_at <= now()))::float8 AS wait
                             FROM jobrunner.job WHERE job_name = %s AND state = 'pending'""", (n("backlog"),))[0]
        got = {m: p.value("jobrunner_queue_" + m, database=DB, job_name=n("backlog"))
               for m in ("pending", "due_waiting", "running", "oldest_pending_age_seconds",
                         "oldest_due_wait_seconds")}
        ok = (got["pending"] == sql["pending"] == 6 and got["due_waiting"] == sql["due"] == 4 and
              got["running"] == 0 and abs(got["oldest_pending_age_seconds"] - sql["age"]) < 5 and
              abs(got["oldest_due_wait_seconds"] - sql["wait"]) < 5 and got["oldest_due_wait_seconds"] > 0)
        return ok, "exported %r\nSQL says %r" % (got, sql)
    check("queue gauges: pending, due-waiting, running, oldest ages equal SQL's", queue_gauges)

    def in_flight():
        p = exporter.scrape()
        running = scalar(db, "SELECT count(*) FROM jobrunner.job WHERE job_name = %s AND state = 'running'",
                         (n("blocked"),))
        status = query(db, "SELECT in_flight FROM jobrunner.worker_status()")[0]
        got = (p.value("jobrunner_queue_running", database=DB, job_name=n("blocked")),
               p.value("jobrunner_worker_in_flight", database=DB))
        return got == (running, status["in_flight"]) == (2, 2), "exported %r, SQL %r" % (
            got, (running, status["in_flight"]))
    check("running jobs and requests in flight while two requests are held", in_flight)

    def worker_gauges():
        p = exporter.scrape()
        st = query(db, "SELECT EXTRACT(epoch FROM started_at)::float8 AS started FROM jobrunner.worker_status()")[0]
        got = {m: p.value("jobrunner_worker_" + m, database=DB)
               for m in ("up", "paused", "read_only", "standby", "start_time_seconds",
                         "last_loop_age_seconds", "job_names_counted", "job_names_max")}
        names = scalar(db, """SELECT count(DISTINCT j.job_name) FROM jobrunner.job j
                               WHERE j.attempt_seq > 0""")
        ok = (got["up"] == 1 and got["paused"] == 0 and got["read_only"] == 0 and got["standby"] == 0 and
              abs(got["start_time_seconds"] - st["started"]) < 0.01 and got["last_loop_age_seconds"] < 5 and
              got["job_names_counted"] == names and got["job_names_max"] == 64)
        return ok, "exported %r; SQL: started %r, %s names claimed" % (got, st["started"], names)
    check("worker gauges: up, not paused, start time, names counted", worker_gauges)

    def read_only():
        with admin.cursor() as cur:
            cur.execute('ALTER DATABASE "%s" SET default_transaction_read_only = on' % DB)
        try:
            wait_for(lambda: (scalar(db, "SELECT paused_reason FROM jobrunner.worker_status()") or "")
                     .find("read-only") >= 0, 15, 0.05, "the worker did not pause")
            p = exporter.scrape()
            on = (p.value("jobrunner_worker_read_only", database=DB), p.value("jobrunner_worker_paused", database=DB))
        finally:
            with admin.cursor() as cur:
                cur.execute('ALTER DATABASE "%s" RESET default_transaction_read_only' % DB)
        wait_for(lambda: scalar(db, "SELECT paused_reason IS NULL FROM jobrunner.worker_status()"),
                 15, 0.05, "the worker did not resume")
        p = exporter.scrape()
        off = (p.value("jobrunner_worker_read_only", database=DB), p.value("jobrunner_worker_paused", database=DB))
        return on == (1, 1) and off == (0, 0), "read-only mode: %r; lifted: %r" % (on, off)
    check("read-only mode shows as read_only and paused, and clears", read_only)

    # Counted at commit, never undone by a purge, never by a rolled-back completion.
    def survives_purge():
        before = exported_counters(exporter.scrape(), n("ok"))
        with db.cursor() as cur:
            cur.execute("DELETE FROM jobrunner.job_log_entry l USING jobrunner.job j "
                        "WHERE l.job_id = j.id AND j.job_name = %s", (n("ok"),))
            cur.execute("DELETE FROM jobrunner.job WHERE job_name = %s", (n("ok"),))
        after = exported_counters(exporter.scrape(), n("ok"))
        left = sql_counters(db, n("ok"))
        return (before == after and after["completed"] == 5 and left["completed"] == 0,
                "before %r, after %r, left in SQL %r" % (before, after, left))
    check("counters keep their value when the jobs are purged", survives_purge)

    def callback_commit_only():
        ids = [r["id"] for r in query(db, "SELECT id::text, attempt_seq FROM jobrunner.job WHERE job_name = %s "
                                          "ORDER BY id", (n("callback"),))]
        tx = connect(dbname=DB, autocommit=False)
        try:
            with tx.cursor() as cur:
                cur.execute("SELECT jobrunner.complete_job(%s::uuid)", (ids[0],))
            tx.rollback()
        finally:
            tx.close()
        rolled_back = exported_counters(exporter.scrape(), n("callback"))["completed"]
        with db.cursor() as cur:
            cur.execute("SELECT jobrunner.complete_job(%s::uuid)", (ids[0],))
            cur.execute("SELECT jobrunner.fail_job(%s::uuid, 'no', _retry => false)", (ids[1],))
        ok, detail = poll_match(exporter, lambda: {"completed": 1, "failed": 1},
                                lambda p: {k: v for k, v in exported_counters(p, n("callback")).items()
                                           if k in ("completed", "failed")})
        return rolled_back == 0 and ok, "after the rollback: completed %s; %s" % (rolled_back, detail)
    check("complete_job counts at commit, not when rolled back; fail_job counts failed", callback_commit_only)

    def hook_rolled_back():
        c = exported_counters(exporter.scrape(), n("hookfail"))
        o = exported_outcomes(exporter.scrape(), n("hookfail"))
        return (c["completed"] == 0 and c["failed"] == 1 and o["2xx"] == 1,
                "counters %r, outcomes %r" % (c, o))
    check("a 2xx whose on_complete hook raised counts failed, not completed", hook_rolled_back)


if __name__ == "__main__":
    sys.exit(main())
