"""test_read_only.py — read-only mode pauses dispatch and lifts by itself.

Managed services switch a database into read-only mode when its disk fills:
default_transaction_read_only = on, for the worker's role, for its database
or for the whole server. A worker that ignores it fails every transaction
(one WARNING per loop, every second, for as long as the disk is full); one
that gives up needs a restart once the disk has room again. pg_jobrunner
notices the mode at whatever level it was set, says so once (one log line,
and worker_status().paused_reason), sends nothing while paused, and carries
on by itself when the setting is lifted: no restart, nothing lost, nothing
sent twice.

Every session of the test connects with default_transaction_read_only = off
in its connection options: those outrank role, database and file settings,
so the test can still queue jobs and lift the mode. The mode is lifted at
every level in cleanup, whatever happened.
"""

import re
import time
import unittest

from psycopg2 import sql

import harness
from harness import Endpoint, scalar, wait_for, wait_job_state

SETTING = "default_transaction_read_only"
# The worker looks at the mode every 2 s while dispatching, every second while paused.
NOTICE_S = 8.0
# How long the test watches a paused worker for repeated log lines or sends.
WATCH_S = 5.0
# From lifting the mode to the queued job reaching the endpoint.
RESUME_S = 10.0


def writable_connection():
    """A session that stays writable whatever level read-only mode is set at."""
    return harness.connect(options="-c %s=off" % SETTING)


def lines(log, pattern):
    """The lines of log text that match pattern (a regular expression)."""
    return [l for l in log.splitlines() if re.search(pattern, l)]


class ReadOnlyMode(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        conn = writable_connection()
        try:
            # The worker connects as the bootstrap superuser (oid 10) to the
            # database named by jobrunner.database_name; the tests run there.
            cls.worker_role = scalar(conn, "SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10")
            cls.database = scalar(conn, "SELECT current_database()")
            served = scalar(conn, "SHOW jobrunner.database_name")
        finally:
            conn.close()
        if served != cls.database:
            raise AssertionError("the worker serves %r, the tests run in %r" % (served, cls.database))
        role, db = sql.Identifier(cls.worker_role), sql.Identifier(cls.database)
        # level -> (statement switching the mode on, statement lifting it)
        cls.levels = {
            "role": (sql.SQL("ALTER ROLE {} SET %s = on" % SETTING).format(role),
                     sql.SQL("ALTER ROLE {} RESET %s" % SETTING).format(role)),
            "database": (sql.SQL("ALTER DATABASE {} SET %s = on" % SETTING).format(db),
                         sql.SQL("ALTER DATABASE {} RESET %s" % SETTING).format(db)),
            "server": (sql.SQL("ALTER SYSTEM SET %s = on" % SETTING),
                       sql.SQL("ALTER SYSTEM RESET %s" % SETTING)),
        }

    def setUp(self):
        self.conn = writable_connection()
        self.addCleanup(self.conn.close)
        self.lift_everywhere()  # whatever an earlier, interrupted run left behind
        harness.wait_for_worker()
        self.wait_dispatching()
        self.ep = Endpoint().start()
        self.addCleanup(self.ep.shutdown)
        self.name = harness.unique_name("readonly")
        self.addCleanup(self.retire)
        # Registered after retire, so it runs first: the worker must be able
        # to write before the job names are retired.
        self.addCleanup(self.lift_everywhere)

    def retire(self):
        self.ep.release()
        conn = writable_connection()
        try:
            harness.wait_running_done(conn, [self.name], timeout=15)
            harness.delete_job_names(conn, [self.name])
        finally:
            conn.close()

    # --- switching the mode --------------------------------------------------

    def run_level(self, level, which):
        """Run the level's on (which=0) or off (which=1) statement, then
        reload: the server level needs it, and it costs the others nothing."""
        with self.conn.cursor() as cur:
            cur.execute(self.levels[level][which])
            cur.execute("SELECT pg_catalog.pg_reload_conf()")

    def switch_on(self, level):
        self.run_level(level, 0)

    def lift(self, level):
        self.run_level(level, 1)

    def lift_everywhere(self):
        """Cleanup: lift the mode at every level (from a fresh writable
        session, in case the test's own broke), then wait until the worker
        dispatches again, so that the next test starts from a clean worker."""
        conn = writable_connection()
        try:
            with conn.cursor() as cur:
                for _, off in self.levels.values():
                    cur.execute(off)
                cur.execute("SELECT pg_catalog.pg_reload_conf()")
        finally:
            conn.close()
        self.wait_dispatching()

    # --- what the worker says ----------------------------------------------

    def paused_reason(self):
        return harness.worker_status(self.conn)["paused_reason"]

    def wait_paused(self, level):
        """Wait until paused_reason mentions read-only mode; return it."""
        last = {}

        def read_only_reason():
            last["reason"] = self.paused_reason()
            return last["reason"] if re.search(r"(?i)read.only", last["reason"] or "") else None

        try:
            return wait_for(read_only_reason, NOTICE_S, 0.05)
        except AssertionError:
            raise AssertionError("read-only mode switched on for the %s: paused_reason is %r "
                                 "after %.0fs" % (level, last.get("reason"), NOTICE_S))

    def wait_dispatching(self):
        """Wait until worker_status() reports no pause."""
        try:
            wait_for(lambda: self.paused_reason() is None, NOTICE_S, 0.05)
        except AssertionError:
            raise AssertionError("the worker still reports a pause after %.0fs: %r"
                                 % (NOTICE_S, self.paused_reason()))

    def watch_paused(self, job_id, seconds):
        """Watch the paused worker for `seconds`: the queued job must stay
        pending and unsent all along (checked every 50 ms, failing at the
        first breach). Returns how many loop turns the worker began meanwhile,
        so the caller knows the window covered the worker looking again."""
        seen = {harness.worker_status(self.conn)["last_loop_at"]}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = self.ep.requests(correlation_id=job_id)
            self.assertEqual(sent, [], "a job queued in read-only mode was sent")
            state = harness.job(self.conn, job_id)["state"]
            self.assertEqual(state, "pending", "a job queued in read-only mode was claimed")
            seen.add(harness.worker_status(self.conn)["last_loop_at"])
            time.sleep(0.05)
        return len(seen) - 1

    def worker_problems(self, log, pid):
        """WARNING, ERROR and FATAL lines the worker wrote in log."""
        return lines(log, r"\[%d\] (WARNING|ERROR|FATAL|PANIC):" % pid)

    # --- the scenario, at one level ------------------------------------------

    def pause_queue_and_resume(self, level):
        harness.configure_job(self.conn, self.name, self.ep.url("/ok"))
        pid = harness.wait_for_worker()
        offset = harness.server_log_size()

        self.switch_on(level)
        reason = self.wait_paused(level)
        self.assertIn("default_transaction_read_only", reason,
                      "the reason names the setting an administrator must look at")

        # Queued meanwhile, by an application whose session is still writable.
        job_id = harness.queue_for(self.conn, None, None, None, self.name, {"level": level})
        turns = self.watch_paused(job_id, WATCH_S)
        self.assertGreaterEqual(turns, 3, "the worker kept looking while paused")

        log = harness.server_log_since(offset)
        paused = lines(log, r"dispatch paused")
        self.assertEqual(len(paused), 1,
                         "one 'dispatch paused' line for one pause, not one per look:\n%s"
                         % "\n".join(paused))
        self.assertRegex(paused[0], r"(?i)read.only")

        lifted_at = time.monotonic()
        self.lift(level)
        [req] = self.ep.wait_for_requests(1, timeout=RESUME_S, correlation_id=job_id)
        self.assertLess(time.monotonic() - lifted_at, RESUME_S)
        row = wait_job_state(self.conn, job_id, "completed", timeout=RESUME_S)
        self.assertEqual((row["attempts"], row["last_status"]), (1, 200))
        self.assertIsNone(self.paused_reason(), "paused_reason is NULL once dispatch resumed")

        resumed = wait_for(lambda: lines(harness.server_log_since(offset), r"dispatch resumed"),
                           5, 0.05, "no 'dispatch resumed' line in the server log")
        self.assertEqual(len(resumed), 1, "\n".join(resumed))
        log = harness.server_log_since(offset)
        self.assertEqual(len(lines(log, r"dispatch paused")), 1)
        self.assertEqual(self.worker_problems(log, pid), [],
                         "the worker reported failures instead of pausing quietly")
        self.assertEqual(harness.worker_pid(self.conn), pid, "nothing was restarted")
        self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 1, "sent once")
        self.ep.assert_no_violations()

    def test_role_level_read_only_pauses_and_lifts(self):
        """ALTER ROLE <worker's role> SET default_transaction_read_only = on.

        The worker's own session started before the setting and is still
        writable, so a worker that only watches its own transactions would
        keep dispatching here: the job would be sent while paused_reason is
        still NULL, and the test fails on the first wait.
        """
        self.pause_queue_and_resume("role")

    def test_database_level_read_only_pauses_and_lifts(self):
        """ALTER DATABASE <served database> SET default_transaction_read_only = on.

        Like the role level, it reaches only sessions that start later; a
        worker without its own look at pg_db_role_setting never pauses, and
        one that logged each look would show a 'dispatch paused' line every
        second instead of one.
        """
        self.pause_queue_and_resume("database")

    def test_server_level_read_only_pauses_and_lifts(self):
        """ALTER SYSTEM SET default_transaction_read_only = on; pg_reload_conf().

        The reload reaches the worker's own session: every transaction it
        starts is read-only. Without the pause, each turn fails with a
        WARNING (caught by worker_problems); without the resume, the job
        never reaches the endpoint after the setting is reset and reloaded.
        """
        self.pause_queue_and_resume("server")

    def test_a_request_in_flight_when_the_mode_starts_is_recorded_after_it_lifts(self):
        """A request in flight when read-only mode starts is recorded once it lifts.

        Its answer arrives while the worker may not write and waits in the
        worker until it can: the job completes after the lift, with one
        request and one attempt.

        A worker that drops outcomes it cannot record leaves the job running
        (or, after a restart, sends it again: two requests); one that tries
        to record it anyway fails its transaction, which worker_problems
        catches.
        """
        harness.configure_job(self.conn, self.name, self.ep.url("/block?ms=20000"))
        self.ep.hold()
        pid = harness.wait_for_worker()
        job_id = harness.queue_for(self.conn, None, None, None, self.name, {"in_flight": True})
        self.ep.wait_for_current(1, timeout=10, job_name=self.name)
        offset = harness.server_log_size()

        # The server level: the worker's own transactions turn read-only too.
        self.switch_on("server")
        self.wait_paused("server")
        self.ep.release()  # the answer comes back while nothing can be written
        self.ep.wait_for_requests(1, timeout=10, correlation_id=job_id)
        # The answer is in; the worker keeps looking but records nothing yet.
        harness.wait_worker_loops(self.conn, 2, timeout=10)
        row = harness.job(self.conn, job_id)
        self.assertEqual(row["state"], "running", "nothing is written in read-only mode")

        self.lift("server")
        row = wait_job_state(self.conn, job_id, "completed", timeout=RESUME_S)
        self.assertEqual((row["attempts"], row["last_status"]), (1, 200))
        self.assertEqual(row["response"], {"ok": True, "released": True})
        self.wait_dispatching()
        self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 1, "sent once, not twice")
        messages = [l["log_message"] for l in harness.job_logs(self.conn, job_id)]
        self.assertEqual(len([m for m in messages if m.startswith("started attempt")]), 1, messages)
        self.assertEqual(len([m for m in messages if m.startswith("completed")]), 1, messages)
        log = harness.server_log_since(offset)
        self.assertEqual(len(lines(log, r"dispatch paused")), 1, log)
        self.assertEqual(len(lines(log, r"dispatch resumed")), 1, log)
        self.assertEqual(self.worker_problems(log, pid), [])
        self.assertEqual(harness.worker_pid(self.conn), pid, "nothing was restarted")
        self.ep.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
