"""test_worker_lifecycle.py — the worker as a good citizen of the cluster.

While the database it serves has no pg_jobrunner extension, the worker idles;
it must still answer what other backends wait for: DROP DATABASE of any
database in the cluster waits until every backend has absorbed a
ProcSignalBarrier. And once the extension is created again, jobs flow.
"""

import unittest

import harness
from harness import connect, scalar, wait_for

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


if __name__ == "__main__":
    unittest.main()
