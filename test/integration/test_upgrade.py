"""test_upgrade.py — a new library against old SQL, then ALTER EXTENSION
... UPDATE, with the worker running.

After a package upgrade the new library runs while the database still holds
the previous release's SQL. The worker must not run its statements against
functions whose meaning changed: it idles and says once in the log which
command to run. Jobs queued under the old
release — pending, due later, and one a worker of the old release left
running — all finish once the update has run, the interrupted one attempted
again, each delivered once.
"""

import unittest
import uuid

import harness
from harness import Endpoint, connect, query, scalar, wait_for

OLD = "0.1.0"


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.db = connect()
        self.addCleanup(self.db.close)
        self.ep = Endpoint(secret=harness.secret()).start()
        self.addCleanup(self.ep.shutdown)
        self.addCleanup(self.recreate_current)

    def recreate_current(self):
        with self.db.cursor() as cur:
            cur.execute("DROP EXTENSION IF EXISTS pg_jobrunner CASCADE")
            cur.execute("CREATE EXTENSION pg_jobrunner")
        harness.wait_for_worker()

    def test_the_worker_idles_on_old_sql_and_jobs_finish_after_the_update(self):
        current = scalar(self.db, "SELECT default_version FROM pg_available_extensions "
                                  "WHERE name = 'pg_jobrunner'")
        log_start = harness.server_log_size()
        with self.db.cursor() as cur:
            cur.execute("DROP EXTENSION pg_jobrunner CASCADE")
            cur.execute("CREATE EXTENSION pg_jobrunner VERSION %s", (OLD,))
            cur.execute("INSERT INTO jobrunner.job_config (job_name, url, max_retries) VALUES (%s, %s, 3)",
                        ("upgrade.it", self.ep.url("/ok")))
            user = str(uuid.uuid4())
            cur.execute("SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, 'upgrade.it', "
                        "jsonb_build_object('n', g))::text FROM generate_series(1, 5) g", (user,))
            pending = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, 'upgrade.it', '{\"later\": 1}', "
                        "_run_at => now() + interval '2 seconds')::text", (user,))
            later = cur.fetchone()[0]
            # A job an old worker (incarnation 7) claimed and never finished.
            cur.execute("SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, 'upgrade.it', '{\"r\": 1}')::text",
                        (user,))
            interrupted = cur.fetchone()[0]
            cur.execute("UPDATE jobrunner.job SET state = 'running', attempts = 1, locked_by = 7, "
                        "locked_at = now(), last_run_at = now() WHERE id = %s", (interrupted,))

        # The worker idles: one log line naming the command; nothing is sent.
        wait_for(lambda: "ALTER EXTENSION pg_jobrunner UPDATE" in harness.server_log_since(log_start),
                 20, 0.1, "the worker did not say which command to run")
        # (The old release's worker_status() has no paused_reason column:
        # the log line is what says it.)
        harness.wait_worker_loops(self.db, 3)
        self.assertEqual(self.ep.requests(), [], "nothing is sent against the old SQL")
        self.assertEqual(harness.server_log_since(log_start).count("run ALTER EXTENSION pg_jobrunner UPDATE"), 1,
                         "said once, not on every turn")

        with self.db.cursor() as cur:
            cur.execute("ALTER EXTENSION pg_jobrunner UPDATE")
        self.assertEqual(scalar(self.db, "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobrunner'"),
                         current)
        every = pending + [later, interrupted]
        wait_for(lambda: scalar(self.db, "SELECT count(*) FROM jobrunner.job WHERE id = ANY(%s::uuid[]) "
                                         "AND state = 'completed'", (every,)) == len(every),
                 30, 0.05, "the jobs queued under %s did not all finish after the update" % OLD)
        for job_id in every:
            self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 1, "job %s delivered once" % job_id)
        self.assertIsNone(harness.worker_status(self.db)["paused_reason"])
        logs = [r["log_message"] for r in query(self.db, "SELECT log_message FROM jobrunner.job_logs "
                                                          "WHERE job_id = %s ORDER BY id", (interrupted,))]
        self.assertIn("attempt interrupted by a worker restart; will be attempted again", logs)
        self.ep.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
