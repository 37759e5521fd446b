"""test_worker_lifecycle.py — the worker as a good citizen of the cluster.

A row another session has locked (say, a complete_job not yet committed)
must not stall the worker: the outcome waits on its own while other jobs
flow, and is recorded once the lock is gone.

While the database it serves has no pg_jobrunner extension, the worker idles;
it must still answer what other backends wait for: DROP DATABASE of any
database in the cluster waits until every backend has absorbed a
ProcSignalBarrier. And once the extension is created again, jobs flow.

Every request in flight holds a socket: the worker lifts its soft limit on
open files to the hard one, which the usual 1024 would otherwise cap.
"""

import unittest

import harness
from harness import connect, scalar

DROP_DEADLINE_S = 15


class WorkerLifecycleTest(unittest.TestCase):
    def setUp(self):
        self.conn = connect()
        self.admin = connect(dbname="postgres")
        self.addCleanup(self.conn.close)
        self.addCleanup(self.admin.close)

    def _restore_extension(self):
        with self.conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_jobrunner")

    def test_the_worker_lifts_its_open_files_limit_to_the_hard_one(self):
        pid = harness.wait_for_worker()
        with open("/proc/%d/limits" % pid) as f:
            [line] = [l for l in f if l.startswith("Max open files")]
        soft, hard = line.split()[3:5]
        self.assertEqual(soft, hard, line)

    def test_drop_database_does_not_wait_for_an_idle_worker(self):
        self.addCleanup(self._restore_extension)
        with self.conn.cursor() as cur:
            cur.execute("DROP EXTENSION pg_jobrunner CASCADE")
        # The worker notices on its next look and idles; it stays alive.
        pid = harness.wait_for_worker()
        with self.admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS jobrunner_dropme")
            cur.execute("CREATE DATABASE jobrunner_dropme")
            cur.execute("SET statement_timeout = %s", ("%ds" % DROP_DEADLINE_S,))
            # Without the barrier being absorbed this waits forever (and the
            # statement timeout turns that into a failure).
            cur.execute("DROP DATABASE jobrunner_dropme")
            cur.execute("RESET statement_timeout")
        self.assertIsNone(scalar(self.admin, "SELECT 1 FROM pg_database WHERE datname = 'jobrunner_dropme'"))
        self.assertEqual(harness.worker_pid(self.admin), pid, "the worker must not have restarted")

    def test_jobs_flow_again_after_the_extension_is_recreated(self):
        self.addCleanup(self._restore_extension)
        endpoint = harness.Endpoint(secret=harness.secret())
        endpoint.start()
        self.addCleanup(endpoint.shutdown)
        with self.conn.cursor() as cur:
            cur.execute("DROP EXTENSION pg_jobrunner CASCADE")
            cur.execute("CREATE EXTENSION pg_jobrunner")
        harness.configure_job(self.conn, "lifecycle-ok", endpoint.url("/ok"))
        job_id = harness.queue_for(self.conn, None, None, None, "lifecycle-ok", {"n": 1})
        harness.wait_job_state(self.conn, job_id, ["completed"])
        self.assertEqual(len(endpoint.requests(path="/ok")), 1)
        endpoint.assert_no_violations()

    def test_a_locked_row_does_not_stall_other_jobs(self):
        endpoint = harness.Endpoint(secret=harness.secret())
        endpoint.hold()
        endpoint.start()
        self.addCleanup(endpoint.shutdown)
        harness.configure_job(self.conn, "lifecycle-block", endpoint.url("/block?ms=20000"))
        harness.configure_job(self.conn, "lifecycle-fast", endpoint.url("/ok"))
        blocked = harness.queue_for(self.conn, None, None, None, "lifecycle-block", {})
        endpoint.wait_for_current(1, job_name="lifecycle-block")
        # Another session locks the running job and keeps its transaction open.
        locker = connect(autocommit=False)
        self.addCleanup(locker.close)
        with locker.cursor() as cur:
            cur.execute("SELECT jobrunner.fail_job(%s, 'held open by a test')", (blocked,))
        endpoint.release()  # the worker now has an outcome it cannot record yet
        fast = [harness.queue_for(self.conn, None, None, None, "lifecycle-fast", {"n": i})
                for i in range(5)]
        for job_id in fast:
            harness.wait_job_state(self.conn, job_id, ["completed"], timeout=5)
        locker.rollback()  # the lock goes; the held outcome is recorded
        harness.wait_job_state(self.conn, blocked, ["completed"], timeout=10)


if __name__ == "__main__":
    unittest.main()
