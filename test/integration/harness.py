"""harness.py — shared helpers for pg_jobrunner's integration tests.

The tests run under Debian's /usr/bin/python3 (psycopg2 + PyJWT) against the
throwaway cluster that scripts/run-tests.sh starts. They read:

  PGHOST, PGPORT, PGUSER, PGDATABASE   where the cluster is (libpq variables)
  JOBRUNNER_SECRET                     the cluster's jobrunner.jwt_secret
  JOBRUNNER_DATADIR                    the cluster's data directory
  JOBRUNNER_PGCTL                      pg_ctl to restart it with
  JOBRUNNER_LOGFILE                    the server log (default: <datadir>/../server.log)

As root, pg_ctl runs as the postgres OS user (the owner of the data directory).
Nothing here sleeps for a fixed time: every wait polls a condition with a
deadline and fails with a message.
"""

import json
import os
import pwd
import signal
import subprocess
import time
import unittest
import uuid

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json, RealDictCursor

from endpoint import Endpoint  # noqa: F401  (re-exported for the tests)

WORKER_BACKEND_TYPE = "pg_jobrunner worker"
DEFAULT_TIMEOUT = 30.0


def env(name, default=None):
    """An environment variable the harness needs; a clear error if unset."""
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError("%s is not set: run the tests through scripts/run-tests.sh" % name)
    return value


def secret():
    """The cluster's JWT signing secret."""
    return env("JOBRUNNER_SECRET")


def connect(dbname=None, autocommit=True, **kwargs):
    """A psycopg2 connection to the test cluster (libpq env), autocommit by default."""
    params = {"connect_timeout": 5, "application_name": "jobrunner_it"}
    params.update(kwargs)
    if dbname is not None:
        params["dbname"] = dbname
    conn = psycopg2.connect(**params)
    conn.autocommit = autocommit
    return conn


def wait_for(predicate, timeout=DEFAULT_TIMEOUT, interval=0.02, message=None):
    """Poll predicate() until it returns something truthy; return that value.

    Raises AssertionError(message) when the deadline passes. Exceptions from
    predicate propagate (a broken test should fail loudly, not time out).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s (waited %.1fs)" % (message or "condition not met", timeout))
        time.sleep(interval)


def query(conn, text, args=None):
    """Run a query, return all rows as dicts."""
    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(text, args)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def scalar(conn, text, args=None):
    """Run a query, return the first column of the first row (None if none)."""
    with conn.cursor() as cur:
        cur.execute(text, args)
        row = cur.fetchone()
        return row[0] if row else None


# --- job configuration and queueing ---------------------------------------

def _adapt(value):
    if isinstance(value, (dict, list)):
        return Json(value)
    return value


def configure_job(conn, job_name, url, **columns):
    """Insert or update jobrunner.job_config for job_name (url plus any columns).

    configure_job(conn, "send_email", ep.url("/ok"), max_retries=2,
                  retry_backoff="100 ms", headers={"X-Extra": "1"})
    """
    cols = ["job_name", "url"] + list(columns)
    vals = [job_name, url] + [_adapt(v) for v in columns.values()]
    stmt = sql.SQL(
        "INSERT INTO jobrunner.job_config ({cols}) VALUES ({vals}) "
        "ON CONFLICT (job_name) DO UPDATE SET {sets}").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        vals=sql.SQL(", ").join(sql.Placeholder() for _ in cols),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols[1:]))
    with conn.cursor() as cur:
        cur.execute(stmt, vals)


def queue_for(conn, user_id, role, email, job_name, body=None, **opts):
    """Call jobrunner.queue_job_for; return the job id as a string.

    opts are the named options of queue_job_for, with or without the leading
    underscore: max_retries, run_at, dedup_key, idempotency_key, priority.
    """
    args = [None if user_id is None else str(user_id), role, email, job_name,
            Json(body if body is not None else {})]
    named = []
    for key, value in opts.items():
        name = key if key.startswith("_") else "_" + key
        named.append(sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder()))
        args.append(_adapt(value))
    stmt = sql.SQL("SELECT jobrunner.queue_job_for(%s::uuid, %s, %s, %s, %s::jsonb{})::text").format(
        sql.SQL("").join(sql.SQL(", ") + n for n in named))
    return scalar(conn, stmt, args)


def job(conn, job_id):
    """The jobrunner.job row as a dict (None if there is none)."""
    rows = query(conn, "SELECT * FROM jobrunner.job WHERE id = %s::uuid", (str(job_id),))
    return rows[0] if rows else None


def job_logs(conn, job_id):
    """The job's jobrunner.job_logs rows, oldest first."""
    return query(conn, "SELECT * FROM jobrunner.job_logs WHERE job_id = %s::uuid "
                       "ORDER BY created_at, id", (str(job_id),))


def wait_job_state(conn, job_id, states, timeout=DEFAULT_TIMEOUT):
    """Wait until the job is in one of states (a string or a collection); return the row."""
    wanted = {states} if isinstance(states, str) else set(states)
    last = {}

    def check():
        row = job(conn, job_id)
        last["row"] = row
        return row if row is not None and row["state"] in wanted else None

    try:
        return wait_for(check, timeout, 0.02)
    except AssertionError:
        row = last.get("row") or {}
        raise AssertionError("job %s: state %r, wanted %s (attempts=%r last_status=%r last_error=%r)" % (
            job_id, row.get("state"), sorted(wanted), row.get("attempts"),
            row.get("last_status"), row.get("last_error")))


# --- the worker and the cluster ---------------------------------------------

def worker_pid(conn=None):
    """The background worker's pid, or None if it is not running."""
    own = conn is None
    if own:
        conn = connect()
    try:
        pid = scalar(conn, "SELECT pid FROM pg_catalog.pg_stat_activity "
                           "WHERE backend_type = %s ORDER BY backend_start DESC LIMIT 1",
                     (WORKER_BACKEND_TYPE,))
        if pid is None:
            try:
                row = query(conn, "SELECT * FROM jobrunner.worker_status()")
            except psycopg2.Error:
                if not conn.autocommit:
                    conn.rollback()
                row = []
            if row and row[0].get("running") and row[0].get("pid"):
                pid = row[0]["pid"]
        return pid
    finally:
        if own:
            conn.close()


def server_accepts_connections():
    """True when a new connection to the cluster succeeds and can run a query."""
    try:
        conn = connect(connect_timeout=2)
    except psycopg2.OperationalError:
        return False
    try:
        return scalar(conn, "SELECT 1") == 1
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def wait_for_server(timeout=60.0):
    """Wait until the cluster accepts connections again."""
    wait_for(server_accepts_connections, timeout, 0.05,
             "the cluster did not accept connections")


def wait_for_worker(timeout=DEFAULT_TIMEOUT, not_pid=None):
    """Wait until the worker runs (with a pid other than not_pid); return its pid."""

    def check():
        # The postmaster may still be resetting backends after a crash: a
        # connection that breaks mid-query means "not yet", like a refused one.
        try:
            pid = worker_pid()
        except (psycopg2.DatabaseError, psycopg2.InterfaceError):
            return None
        return pid if pid is not None and pid != not_pid else None

    return wait_for(check, timeout, 0.05,
                    "the pg_jobrunner worker is not running" if not_pid is None
                    else "the pg_jobrunner worker did not come back after pid %s" % not_pid)


def kill_worker(wait_restart=True, timeout=60.0):
    """kill -9 the background worker; return its old pid.

    The postmaster treats that as a crash and resets every backend, so open
    connections break. With wait_restart, waits until the server accepts
    connections and a new worker runs.
    """
    pid = worker_pid()
    if pid is None:
        raise AssertionError("kill_worker: the pg_jobrunner worker is not running")
    os.kill(pid, signal.SIGKILL)
    if wait_restart:
        deadline = time.monotonic() + timeout
        wait_for_server(timeout)
        wait_for_worker(max(deadline - time.monotonic(), 1.0), not_pid=pid)
    return pid


def _pg_ctl(*args, timeout=120):
    """Run pg_ctl on the test cluster as the data directory's owner."""
    datadir = env("JOBRUNNER_DATADIR")
    pgctl = env("JOBRUNNER_PGCTL", "/usr/lib/postgresql/15/bin/pg_ctl")
    cluster_dir = os.path.dirname(os.path.abspath(datadir))
    logfile = env("JOBRUNNER_LOGFILE", os.path.join(cluster_dir, "server.log"))
    cmd = [pgctl, "-D", datadir, "-l", logfile] + list(args)
    if os.geteuid() == 0:
        owner = pwd.getpwuid(os.stat(datadir).st_uid).pw_name
        if owner != "root":
            cmd = ["runuser", "-u", owner, "--"] + cmd
    done = subprocess.run(cmd, cwd=cluster_dir, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError("pg_ctl %s failed (%d): %s" % (
            " ".join(args), done.returncode, done.stdout.decode(errors="replace")))
    return done.stdout.decode(errors="replace")


def restart_cluster(mode="immediate", wait_worker=True, timeout=60.0):
    """pg_ctl restart -m mode ('immediate' or 'fast'); wait until it serves again."""
    if mode not in ("immediate", "fast"):
        raise ValueError("mode must be 'immediate' or 'fast'")
    _pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "restart")
    wait_for_server(timeout)
    if wait_worker:
        return wait_for_worker(timeout)
    return None


def stop_cluster(mode="fast", timeout=60.0):
    """pg_ctl stop -m mode. Pair with start_cluster() in a finally block."""
    _pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop")


def start_cluster(wait_worker=True, timeout=60.0):
    """pg_ctl start, then wait until it serves (and the worker runs)."""
    _pg_ctl("-w", "-t", str(int(timeout)), "start")
    wait_for_server(timeout)
    if wait_worker:
        return wait_for_worker(timeout)
    return None


def server_log_since(offset):
    """The server log text written after byte offset (see server_log_size)."""
    path = env("JOBRUNNER_LOGFILE", os.path.join(
        os.path.dirname(os.path.abspath(env("JOBRUNNER_DATADIR"))), "server.log"))
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def server_log_size():
    """The server log's current size, to pass to server_log_since later."""
    path = env("JOBRUNNER_LOGFILE", os.path.join(
        os.path.dirname(os.path.abspath(env("JOBRUNNER_DATADIR"))), "server.log"))
    return os.path.getsize(path)


def pretty(obj):
    """JSON text for assertion messages."""
    return json.dumps(obj, default=str, indent=1, sort_keys=True)


# --- the worker's figures and settings (added for the delivery tests) ------

def worker_status(conn):
    """jobrunner.worker_status() as a dict."""
    return query(conn, "SELECT * FROM jobrunner.worker_status()")[0]


def wait_worker_loops(conn, loops=2, timeout=DEFAULT_TIMEOUT):
    """Wait until the worker has begun `loops` more turns of its loop.

    Counts changes of worker_status().last_loop_at; a worker that turns
    faster than this polls is counted less, so the wait errs long, never short.
    """
    seen = {"last": worker_status(conn)["last_loop_at"], "turns": 0}

    def turned():
        now = worker_status(conn)["last_loop_at"]
        if now is not None and now != seen["last"]:
            seen["last"] = now
            seen["turns"] += 1
        return seen["turns"] >= loops

    wait_for(turned, timeout, 0.01,
             "the worker did not turn its loop %d times" % loops)


def set_setting(conn, name, value, worker_loops=2):
    """ALTER SYSTEM SET name = value (RESET when value is None), reload, and
    wait until the worker has turned its loop worker_loops times (it reads
    the file on its next wake-up). conn must be autocommit."""
    if value is None:
        stmt = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(*name.split(".")))
        args = None
    else:
        stmt = sql.SQL("ALTER SYSTEM SET {} = %s").format(sql.Identifier(*name.split(".")))
        args = (str(value),)
    with conn.cursor() as cur:
        cur.execute(stmt, args)
        cur.execute("SELECT pg_catalog.pg_reload_conf()")
    if worker_loops:
        wait_worker_loops(conn, worker_loops)


def unique_name(prefix):
    """A job name no other test uses: prefix plus a random suffix."""
    import uuid
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def max_overlap(requests):
    """The most of these endpoint requests that were in progress at once.

    A request counts from its arrival until its answer started to go out
    (answered_at), or until it ended unanswered; a client that waits for the
    answer before sending its next request is never counted twice.
    """
    edges = []
    for r in requests:
        end = r.answered_at if r.answered_at is not None else r.finished
        if end is None:
            end = float("inf")
        edges.append((r.started, 1))
        edges.append((end, -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def retire_job_names(conn, job_names):
    """Disable these job names and cancel their pending jobs (test cleanup)."""
    names = list(job_names)
    if not names:
        return
    with conn.cursor() as cur:
        cur.execute("UPDATE jobrunner.job_config SET enabled = false WHERE job_name = ANY(%s)",
                    (names,))
        cur.execute("SELECT count(jobrunner.dequeue_job(j.id)) FROM jobrunner.job j "
                    "WHERE j.job_name = ANY(%s) AND j.state = 'pending'", (names,))


def delete_job_names(conn, job_names):
    """Delete these job names' jobs, logs, limits state and configuration (test cleanup)."""
    names = (list(job_names),)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM jobrunner.job_log_entry l USING jobrunner.job j "
                    "WHERE l.job_id = j.id AND j.job_name = ANY (%s)", names)
        for table in ("job", "rate_bucket", "group_turn", "job_config"):
            cur.execute("DELETE FROM jobrunner.%s WHERE job_name = ANY (%%s)" % table, names)


def wait_running_done(conn, job_names, timeout=30):
    """Wait until none of these job names has a running job (test cleanup)."""
    names = (list(job_names),)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM jobrunner.job "
                                  "WHERE job_name = ANY (%s) AND state = 'running'", names) == 0,
             timeout, 0.05, "running jobs of %s did not finish" % list(job_names))


# --- the one base of the tests ---------------------------------------------

class JobrunnerTestCase(unittest.TestCase):
    """A test with an admin connection (self.db), an endpoint of its own
    (self.ep) and job names made by job_name(), all gone afterwards: the
    job names are disabled, their requests end, and their jobs, logs and
    configuration are deleted, so the next test starts on an idle worker.

    A subclass sets `prefix` (job names are "<prefix>.<what>.<8 hex>") and
    `job_columns` (job_config columns every job name gets unless given).
    """

    prefix = "it"
    job_columns = {}

    def setUp(self):
        # Cleanups run last-registered first: the connection closes, then the
        # endpoint shuts down (held requests end), then the job names go.
        self.names = []
        self.addCleanup(self._retire_job_names)
        self.ep = Endpoint().start()
        self.addCleanup(self.ep.shutdown)
        self.db = connect()
        self.addCleanup(lambda: self.db.close())  # the current one: reconnect() replaces it

    def _retire_job_names(self):
        if not self.names:
            return
        wait_for_server(60)  # a test may have restarted the cluster
        conn = connect()
        try:
            names = (self.names,)
            with conn.cursor() as cur:
                cur.execute("UPDATE jobrunner.job_config SET enabled = false "
                            "WHERE job_name = ANY (%s)", names)
            # Acknowledged callback jobs stay running; what must be over is
            # every request (its outcome is recorded against the row). The
            # jobs go even if that never happens (a broken build).
            try:
                wait_for(lambda: scalar(conn, "SELECT count(*) FROM jobrunner.job WHERE job_name "
                                              "= ANY (%s) AND sending_attempt IS NOT NULL",
                                        names) == 0,
                         30, 0.05, "requests of %s did not end" % self.names)
            finally:
                delete_job_names(conn, self.names)
        finally:
            conn.close()

    def reconnect(self):
        """A fresh admin connection (the old one dies with a crash or restart)."""
        try:
            self.db.close()
        except psycopg2.Error:
            pass
        self.db = connect()
        return self.db

    def job_name(self, what, path="/ok", **columns):
        """Configure a fresh job name for this test; path is the endpoint's
        (or a whole URL)."""
        name = "%s.%s.%s" % (self.prefix, what, uuid.uuid4().hex[:8])
        self.names.append(name)
        for column, value in self.job_columns.items():
            columns.setdefault(column, value)
        configure_job(self.db, name, path if "://" in path else self.ep.url(path), **columns)
        return name

    def value(self, text, *args, conn=None):
        """The first column of the first row of a query (admin connection by default)."""
        return scalar(conn or self.db, text, args or None)

    def set_setting(self, name, value, worker_loops=2):
        """ALTER SYSTEM SET for this test only (reset in cleanup)."""
        self.addCleanup(lambda: set_setting(self.db, name, None, worker_loops))
        set_setting(self.db, name, value, worker_loops)


def new_user():
    """A fresh user id."""
    return str(uuid.uuid4())


# --- clusters of a test's own (restore targets, standbys) -------------------

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER_SH = os.path.join(REPO, "test", "lib", "cluster.sh")
PGBIN = os.path.dirname(env("JOBRUNNER_PGCTL", "/usr/lib/postgresql/15/bin/pg_ctl"))


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway cluster beside the main one, started and stopped by the
    test (test/lib/cluster.sh): its own directory, port and settings (lines
    appended to postgresql.conf), the same JWT secret as the main cluster.

        c = Cluster("restore", ["jobrunner.database_name = 'restored'"])
        c.start(); conn = c.connect("postgres"); ...; c.destroy()
    """

    def __init__(self, name, settings=(), port=None):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="jr-%s." % name, dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.home = os.path.join(self.dir, "c")
        self.datadir = os.path.join(self.home, "data")
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "extra.conf")
        os.makedirs(self.home)
        with open(os.path.join(self.home, "jwt_secret"), "w") as f:
            f.write(secret() + "\n")
        os.chmod(os.path.join(self.home, "jwt_secret"), 0o600)
        self.set(settings)
        if os.geteuid() == 0:  # the server, pg_basebackup and pg_restore run as postgres
            subprocess.run(["chown", "-R", "postgres:", self.dir], check=True)

    def set(self, settings):
        """Replace the extra settings (applied at the next start)."""
        with open(self.conf, "w") as f:
            f.write("".join(line + "\n" for line in settings))

    def _owner_run(self, cmd, timeout=120, check=True):
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        done = subprocess.run(cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError("%s failed (%d): %s" % (" ".join(cmd), done.returncode,
                                                        done.stdout.decode(errors="replace")))
        return done.stdout.decode(errors="replace")

    def start(self, timeout=120):
        """Start it (initdb on the first start, unless a data directory is there)."""
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", self.dir], check=True)
        done = subprocess.run([CLUSTER_SH, "start", self.home, str(self.port), self.conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError("cluster %s did not start: %s" % (
                self.home, done.stderr.decode(errors="replace")[-2000:]))

    def stop(self, mode="fast"):
        """Stop it (mode as pg_ctl's -m; 'immediate' is a crash)."""
        self._owner_run([os.path.join(PGBIN, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop"],
                        check=False)

    def kill_postmaster(self):
        """kill -9 the postmaster, as a machine failure would."""
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), 30, 0.05, "postmaster %d did not die" % pid)

    def promote(self):
        """pg_ctl promote (a standby becomes a primary)."""
        self._owner_run([os.path.join(PGBIN, "pg_ctl"), "-D", self.datadir, "-w", "promote"])

    def destroy(self):
        """Stop it (immediately) and remove its directory."""
        import shutil
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, dbname="postgres", autocommit=True, **kwargs):
        params = {"host": self.home, "port": self.port, "user": "postgres", "dbname": dbname,
                  "connect_timeout": 5, "application_name": "jobrunner_it"}
        params.update(kwargs)
        conn = psycopg2.connect(**params)
        conn.autocommit = autocommit
        return conn

    def bin(self, program, *args, timeout=300):
        """Run a PostgreSQL program (pg_dump, pg_restore, pg_basebackup ...)
        against this cluster, as the data directory's owner; its output."""
        return self._owner_run([os.path.join(PGBIN, program), "-h", self.home, "-p", str(self.port),
                                "-U", "postgres"] + list(args), timeout=timeout)

    def log_text(self):
        """The server log so far."""
        path = os.path.join(self.home, "server.log")
        if not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")


def main_cluster_bin(program, *args, timeout=300):
    """Run a PostgreSQL program against the main test cluster (libpq env)."""
    cmd = [os.path.join(PGBIN, program)] + list(args)
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(cmd), done.returncode,
                                                    done.stderr.decode(errors="replace")))
    return done.stdout
