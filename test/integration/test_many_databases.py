"""test_many_databases.py — one cluster, several databases served at once.

jobrunner.databases lists the databases served; the launcher keeps one
dispatcher per listed database, each with its own queue, limits, status and
recovery. A database added to the list is served after a reload; one removed
from it stops being served; DROP DATABASE of a served database stops its
dispatcher first and succeeds, and the others never stop. Only a role that
may drop the database makes its dispatcher step aside.
"""

import unittest
import uuid

import psycopg2
import psycopg2.errors

import harness
from harness import Endpoint, connect, query, scalar, wait_for

EXTRA = ("jr_multi_a", "jr_multi_b")


def dispatchers(conn):
    """{database: pid} of the running dispatchers."""
    return {r["datname"]: r["pid"] for r in query(
        conn, "SELECT datname, pid FROM pg_stat_activity WHERE backend_type = %s", (harness.WORKER_BACKEND_TYPE,))}


class ManyDatabasesTest(unittest.TestCase):
    def setUp(self):
        self.admin = connect(dbname="postgres")
        self.addCleanup(self.admin.close)
        self.ep = Endpoint(secret=harness.secret()).start()
        self.addCleanup(self.ep.shutdown)
        self.addCleanup(self.restore)
        self.main_db = scalar(self.admin, "SELECT current_setting('jobrunner.database_name')")
        for db in EXTRA:
            with self.admin.cursor() as cur:
                cur.execute("DROP DATABASE IF EXISTS %s" % db)
                cur.execute("CREATE DATABASE %s" % db)
            conn = connect(dbname=db)
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION pg_jobrunner")
                cur.execute("INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit) "
                            "VALUES ('multi.ok', %s, 100), ('multi.slow', %s, 100)",
                            (self.ep.url("/ok"), self.ep.url("/slow?ms=300")))
            conn.close()
        conn = connect()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit) "
                        "VALUES ('multi.ok', %s, 100) ON CONFLICT (job_name) DO UPDATE SET url = EXCLUDED.url",
                        (self.ep.url("/ok"),))
        conn.close()

    def restore(self):
        harness.set_setting(self.admin, "jobrunner.databases", None, worker_loops=0)
        with self.admin.cursor() as cur:
            for db in EXTRA:
                cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
        conn = connect()
        with conn.cursor() as cur:
            cur.execute("DELETE FROM jobrunner.job_log_entry l USING jobrunner.job j "
                        "WHERE l.job_id = j.id AND j.job_name = 'multi.ok'")
            cur.execute("DELETE FROM jobrunner.job WHERE job_name = 'multi.ok'")
            cur.execute("DELETE FROM jobrunner.job_config WHERE job_name = 'multi.ok'")
        conn.close()
        wait_for(lambda: set(dispatchers(self.admin)) == {self.main_db}, 30, 0.1,
                 "the cluster did not go back to serving %s alone" % self.main_db)

    def serve(self, databases):
        harness.set_setting(self.admin, "jobrunner.databases", ", ".join(databases), worker_loops=0)
        wait_for(lambda: set(dispatchers(self.admin)) == set(databases), 30, 0.1,
                 "not exactly one dispatcher per database of %s: %r" % (databases, dispatchers(self.admin)))

    def queue(self, db, job_name, n):
        conn = connect(dbname=db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, %s, "
                            "jsonb_build_object('db', %s, 'n', g))::text FROM generate_series(1, %s) g",
                            (str(uuid.uuid4()), job_name, db, n))
                return [r[0] for r in cur.fetchall()]
        finally:
            conn.close()

    def wait_completed(self, db, ids, timeout=30):
        conn = connect(dbname=db)
        try:
            wait_for(lambda: scalar(conn, "SELECT count(*) FROM jobrunner.job WHERE id = ANY(%s::uuid[]) "
                                          "AND state = 'completed'", (ids,)) == len(ids),
                     timeout, 0.05, "jobs of %s were not delivered" % db)
        finally:
            conn.close()

    def status(self, db):
        conn = connect(dbname=db)
        try:
            return harness.worker_status(conn)
        finally:
            conn.close()

    def test_three_databases_one_dropped_one_removed(self):
        every = [self.main_db] + list(EXTRA)
        self.serve(every)
        jobs = {db: self.queue(db, "multi.ok", 20) for db in every}
        for db in every:
            self.wait_completed(db, jobs[db])
            st = self.status(db)
            self.assertEqual((st["running"], st["database_name"]), (True, db))
            self.assertGreaterEqual(st["completed"], 20, "each dispatcher counts its own jobs")
        for db in every:
            for job_id in jobs[db]:
                [req] = self.ep.requests(correlation_id=job_id)
                self.assertEqual(req.json()["db"], db)

        # Only a role that may drop a database makes its dispatcher step aside.
        before = dispatchers(self.admin)
        with self.admin.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS jr_multi_mallory")
            cur.execute("CREATE ROLE jr_multi_mallory LOGIN")
        self.addCleanup(lambda: self.admin.cursor().execute("DROP ROLE IF EXISTS jr_multi_mallory"))
        mallory = connect(dbname="postgres", user="jr_multi_mallory")
        with self.assertRaises(psycopg2.errors.InsufficientPrivilege):
            mallory.cursor().execute("DROP DATABASE jr_multi_b")
        mallory.close()
        self.assertEqual(dispatchers(self.admin)["jr_multi_b"], before["jr_multi_b"])

        # Dropped mid-run: its dispatcher steps aside, the drop succeeds, the
        # others go on; it is not started again.
        slow = self.queue("jr_multi_b", "multi.slow", 50)
        self.ep.wait_for_requests(1, job_name="multi.slow", timeout=15)
        log_start = harness.server_log_size()
        with self.admin.cursor() as cur:
            cur.execute("DROP DATABASE jr_multi_b")
        wait_for(lambda: set(dispatchers(self.admin)) == {self.main_db, "jr_multi_a"}, 15, 0.1,
                 "the dropped database's dispatcher did not go away")
        more = {db: self.queue(db, "multi.ok", 10) for db in (self.main_db, "jr_multi_a")}
        for db, ids in more.items():
            self.wait_completed(db, ids)
        self.assertEqual({r["datname"] for r in query(self.admin, "SELECT datname FROM pg_database")}
                         & {"jr_multi_b"}, set())
        harness.wait_worker_loops(connect(), 3)
        log = harness.server_log_since(log_start)
        self.assertNotIn('FATAL:  database "jr_multi_b"', log, "nothing tries to connect to the dropped database")
        self.assertLessEqual(log.count('database "jr_multi_b" does not exist'), 1,
                             "still listed, it is said once to be missing")
        self.assertLess(len(self.ep.requests(job_name="multi.slow")), len(slow) + 1)

        # Removed from the list: no longer served, and says so.
        self.serve([self.main_db])
        st = self.status("jr_multi_a")
        self.assertFalse(st["running"])
        self.assertIn("jobrunner.databases", st["paused_reason"])
        self.assertIsNone(self.status(self.main_db)["paused_reason"])


if __name__ == "__main__":
    unittest.main()
