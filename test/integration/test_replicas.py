"""test_replicas.py — a streaming standby, and failover with requests in flight.

A primary and a standby built with pg_basebackup -R, both with pg_jobrunner
preloaded (as a failover manager needs every node alike). On the standby the
worker does not run: worker_status() says it is a standby; the queue can be
read there, and queue_job says clearly that jobs are queued on the primary.

Failover: with 200 requests on the wire, the primary's postmaster is killed
(kill -9) and the standby promoted. Replication is synchronous, so every job
whose commit the primary acknowledged is on the new primary: each one
completes there, none stays running, and each job sent again carries the
same X-Correlation-ID (its identity for the endpoint's idempotency). The
promoted standby is the same cluster and database (same system identifier,
same database oid), so it dispatches at once: no resume_dispatch() needed.
"""

import time
import unittest
import uuid

import psycopg2.errors

import harness
from harness import Cluster, Endpoint, scalar, wait_for

IN_FLIGHT = 200
PRIMARY_SETTINGS = [
    "jobrunner.database_name = 'app'",
    "cron.database_name = 'app'",
    "wal_level = replica",
    "max_wal_senders = 4",
    "hot_standby = on",
]
STANDBY_SETTINGS = PRIMARY_SETTINGS + ["cluster_name = 'standby1'"]


class ReplicaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ep = Endpoint(secret=harness.secret()).start()
        cls.primary = Cluster("primary", PRIMARY_SETTINGS)
        cls.standby = Cluster("standby", STANDBY_SETTINGS)
        try:
            cls.primary.start()
            admin = cls.primary.connect()
            admin.cursor().execute("CREATE DATABASE app")
            admin.close()
            with cls.primary.connect("app") as conn:
                with conn.cursor() as cur:
                    cur.execute("CREATE EXTENSION pg_jobrunner")
                    cur.execute("INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, timeout) "
                                "VALUES ('replica.block', %s, 1000, '10 minutes'), ('replica.ok', %s, 1000, '1 minute')",
                                (cls.ep.url("/block?ms=120000"), cls.ep.url("/ok")))
            # The standby: a base backup of the primary, streaming from it.
            cls.primary.bin("pg_basebackup", "-D", cls.standby.datadir, "-R", "-X", "stream",
                            "--checkpoint=fast", "-d", "application_name=standby1")
            cls.standby.start()
            # Synchronous from now on (set earlier, the primary's own set-up
            # would wait for a standby that does not exist yet).
            admin = cls.primary.connect()
            with admin.cursor() as cur:
                cur.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
                cur.execute("SELECT pg_reload_conf()")
            wait_for(lambda: scalar(admin, "SELECT count(*) FROM pg_stat_replication "
                                           "WHERE sync_state = 'sync'") == 1,
                     30, 0.1, "the standby did not become a synchronous standby")
            admin.close()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.ep.release()
        cls.ep.shutdown()
        cls.standby.destroy()
        cls.primary.destroy()

    def test_1_a_standby_reads_the_queue_and_does_not_dispatch(self):
        with self.primary.connect("app") as p:
            job_id = scalar(p, "SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'replica.ok')::text")
        wait_for(lambda: scalar(self.primary.connect("app"), "SELECT state FROM jobrunner.job WHERE id = %s",
                                (job_id,)) == "completed", 30, 0.05, "the primary did not deliver")
        standby = self.standby.connect("app")
        self.addCleanup(standby.close)
        wait_for(lambda: scalar(standby, "SELECT state FROM jobrunner.job WHERE id = %s", (job_id,)) == "completed",
                 30, 0.05, "the job did not replicate")
        status = harness.worker_status(standby)
        self.assertFalse(status["running"])
        self.assertIn("standby", status["paused_reason"])
        self.assertIsNotNone(scalar(standby, "SELECT count(*) FROM jobrunner.job_stats"))
        with self.assertRaises(psycopg2.errors.ReadOnlySqlTransaction) as ctx:
            scalar(standby, "SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'replica.ok')")
        self.assertIn("standby", str(ctx.exception))
        self.assertEqual(len(self.ep.requests(job_name="replica.ok")), 1, "only the primary sent it")

    def test_2_failover_with_requests_in_flight_loses_nothing(self):
        primary = self.primary.connect("app")
        with primary.cursor() as cur:
            cur.execute("SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, 'replica.block', "
                        "jsonb_build_object('n', g))::text FROM generate_series(1, %s) g",
                        (str(uuid.uuid4()), IN_FLIGHT))
            ids = [r[0] for r in cur.fetchall()]
        # Committed with synchronous replication: on the standby once acknowledged.
        self.ep.hold()
        self.ep.wait_for_current(IN_FLIGHT, job_name="replica.block", timeout=60)
        primary.close()

        first_seen = {r.correlation_id: r for r in self.ep.requests(job_name="replica.block")}
        self.assertEqual(set(first_seen), set(ids), "every job was on the wire from the primary")
        self.primary.kill_postmaster()
        promoted_at = time.monotonic()
        self.standby.promote()
        new_primary = self.standby.connect("app")
        self.addCleanup(new_primary.close)

        # The promoted standby's worker takes the jobs back and sends them
        # again; the first dispatch after promotion is measured.
        def resent():
            return [r for r in self.ep.requests(job_name="replica.block") if r.attempt and int(r.attempt) >= 2]
        wait_for(lambda: resent(), 60, 0.01, "the new primary sent nothing")
        first_dispatch_s = time.monotonic() - promoted_at
        self.ep.release()
        wait_for(lambda: scalar(new_primary, "SELECT count(*) FROM jobrunner.job WHERE id = ANY(%s::uuid[]) "
                                             "AND state = 'completed'", (ids,)) == IN_FLIGHT,
                 120, 0.05, "not every committed job completed on the new primary")
        self.assertEqual(scalar(new_primary, "SELECT count(*) FROM jobrunner.job WHERE state = 'running'"), 0,
                         "none stays running")
        for r in resent():
            self.assertIn(r.correlation_id, first_seen, "a job sent again keeps its X-Correlation-ID")
        duplicates = len({r.correlation_id for r in resent()})
        self.assertIsNone(harness.worker_status(new_primary)["paused_reason"],
                          "a promoted standby is the same queue: it dispatches without resume_dispatch()")
        print("failover: %d jobs in flight, first dispatch %.2f s after promotion, %d sent twice"
              % (IN_FLIGHT, first_dispatch_s, duplicates))


if __name__ == "__main__":
    unittest.main()
