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

import psycopg2

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

    def recreate(self, version=None):
        """DROP and CREATE EXTENSION (of version, default the current one).
        The running worker reads the tables the drop locks one by one, so
        the deadlock detector may pick the drop: it is tried again."""
        for attempt in range(5):
            try:
                with self.db.cursor() as cur:
                    cur.execute("DROP EXTENSION IF EXISTS pg_jobrunner CASCADE")
                    if version:
                        cur.execute("CREATE EXTENSION pg_jobrunner VERSION %s", (version,))
                    else:
                        cur.execute("CREATE EXTENSION pg_jobrunner")
                return
            except psycopg2.errors.DeadlockDetected:
                if attempt == 4:
                    raise

    def recreate_current(self):
        self.recreate()
        harness.wait_for_worker()
        # The worker has seen the current version (a pause for the old one
        # ended), so the next test's old version is news to it again.
        wait_for(lambda: harness.worker_status(self.db)["paused_reason"] is None, 20, 0.05,
                 "the worker did not resume on the current version")

    def test_the_worker_idles_on_old_sql_and_jobs_finish_after_the_update(self):
        current = scalar(self.db, "SELECT default_version FROM pg_available_extensions "
                                  "WHERE name = 'pg_jobrunner'")
        log_start = harness.server_log_size()
        self.recreate(OLD)
        with self.db.cursor() as cur:
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

    def test_roles_granted_queue_job_for_keep_it_after_the_update(self):
        # The update changes queue_job_for's signature (drop and create): the
        # right an administrator gave a role must survive it, and no other
        # role may gain it.
        old_sig = "jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int)"
        new_sig = "jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text)"
        role, other = "jr_upgrade_enqueuer", "jr_upgrade_other"
        self.recreate(OLD)
        with self.db.cursor() as cur:
            for r in (role, other):
                cur.execute("DROP ROLE IF EXISTS %s" % r)
                cur.execute("CREATE ROLE %s NOLOGIN" % r)
                self.addCleanup(self.drop_role, r)
            cur.execute("GRANT EXECUTE ON FUNCTION %s TO %s" % (old_sig, role))
            # Before the update, this library is already loaded: the role is
            # an admin for the old SQL too.
            cur.execute("INSERT INTO jobrunner.job_config (job_name, url) VALUES ('upgrade.grant', %s)",
                        (self.ep.url("/ok"),))
            cur.execute("SET ROLE %s" % role)
            cur.execute("SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'upgrade.grant')")
            cur.execute("RESET ROLE")
            cur.execute("ALTER EXTENSION pg_jobrunner UPDATE")
        self.assertTrue(scalar(self.db, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, new_sig)),
                        "the granted role may still call queue_job_for")
        self.assertFalse(scalar(self.db, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (other, new_sig)),
                         "a role never granted it may not")
        self.assertFalse(scalar(self.db, "SELECT has_function_privilege('public', %s, 'EXECUTE')", (new_sig,)),
                         "PUBLIC may not")
        with self.db.cursor() as cur:
            cur.execute("SET ROLE %s" % role)
            cur.execute("SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'upgrade.grant', _dedup_key => 'k', "
                        "_on_duplicate => 'replace')")
            cur.execute("RESET ROLE")
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM jobrunner.job WHERE job_name = 'upgrade.grant'"), 2)

    def test_a_view_of_the_old_log_table_stops_the_update_by_name(self):
        # job_logs becomes a view over the stored rows: a view an application
        # built on the 0.1.0 table would follow the rename and silently lose
        # rows, so the update refuses and names it; once it is dropped, the
        # update runs and job_logs has every row it had.
        self.recreate(OLD)
        with self.db.cursor() as cur:
            cur.execute("INSERT INTO jobrunner.job_config (job_name, url) VALUES ('upgrade.view', %s)",
                        (self.ep.url("/ok"),))
            cur.execute("SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'upgrade.view')")
            cur.execute("DROP VIEW IF EXISTS public.app_job_logs")
            cur.execute("CREATE VIEW public.app_job_logs AS SELECT * FROM jobrunner.job_logs")
            self.addCleanup(self.drop_view)
        before = query(self.db, "SELECT id, job_id, log_message FROM jobrunner.job_logs ORDER BY id")
        self.assertEqual(len(before), 1, "the 0.1.0 job has its created row")
        with self.assertRaises(psycopg2.errors.DependentObjectsStillExist) as refused:
            with self.db.cursor() as cur:
                cur.execute("ALTER EXTENSION pg_jobrunner UPDATE")
        self.assertIn("app_job_logs read jobrunner.job_logs", str(refused.exception))
        self.assertIn("Drop them", refused.exception.diag.message_hint)
        self.assertEqual(scalar(self.db, "SELECT extversion FROM pg_extension WHERE extname = 'pg_jobrunner'"), OLD)
        with self.db.cursor() as cur:
            cur.execute("DROP VIEW public.app_job_logs")
            cur.execute("ALTER EXTENSION pg_jobrunner UPDATE")
        self.assertEqual(query(self.db, "SELECT id, job_id, log_message FROM jobrunner.job_logs ORDER BY id"),
                         before, "job_logs has the rows it had")

    def drop_view(self):
        with self.db.cursor() as cur:
            cur.execute("DROP VIEW IF EXISTS public.app_job_logs")

    def drop_role(self, role):
        with self.db.cursor() as cur:
            cur.execute("DROP OWNED BY %s" % role)
            cur.execute("DROP ROLE %s" % role)


if __name__ == "__main__":
    unittest.main()
