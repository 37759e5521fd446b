"""test_faults.py — delivery guarantees when things break.

The worker is killed with SIGKILL, the cluster is restarted with
`pg_ctl restart -m immediate` and stopped with `-m fast` while hundreds of
requests are in flight, the endpoint disappears for a while, and the
extension is dropped under the running worker. Afterwards every job must
complete, none may stay running, a re-delivered job keeps its
X-Correlation-ID, and no job may ever be in flight twice at once.

Requests are held at the endpoint's /hold path, which answers on release()
and ends on its own when the client's connection dies: a request from a
killed worker therefore stops counting as in flight the moment that worker
is gone, and any overlap between two requests for one job is a real double
delivery.
"""

import collections
import socket
import time
import unittest
import uuid

import harness
from harness import Endpoint, query, scalar, wait_for, wait_job_state


class FaultCase(harness.JobrunnerTestCase):
    """The worker (or the cluster) may be down when a test ends: the cleanup
    waits for it to come back first."""

    prefix = "it.faults"

    def _retire_job_names(self):
        self.ep.release()
        harness.wait_for_server(60)
        harness.wait_for_worker(60)
        super()._retire_job_names()

    @staticmethod
    def create_extension_again():
        """Whatever a test did, the next one finds the extension installed."""
        conn = harness.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_jobrunner")
        finally:
            conn.close()

    def queue_many(self, name, users, per_user):
        """Queue per_user jobs for each of `users` new users in one transaction."""
        owners = [str(uuid.uuid4()) for _ in range(users)]
        tx = harness.connect(autocommit=False)
        try:
            with tx.cursor() as cur:
                cur.execute(
                    "SELECT jobrunner.queue_job_for(u, 'authenticated', NULL, %s, "
                    "       jsonb_build_object('n', n))::text "
                    "  FROM unnest(%s::uuid[]) AS u, generate_series(1, %s) AS n",
                    (name, owners, per_user))
                ids = [r[0] for r in cur.fetchall()]
            tx.commit()
        finally:
            tx.close()
        return set(ids)

    def states(self, name):
        return {r["state"]: r["n"] for r in query(
            self.db, "SELECT state, count(*)::int AS n FROM jobrunner.job "
                       "WHERE job_name = %s GROUP BY 1", (name,))}

    def wait_all_completed(self, name, total, timeout=60):
        try:
            wait_for(lambda: self.states(name).get("completed", 0) == total, timeout, 0.05)
        except AssertionError:
            raise AssertionError("%s: states %r, wanted %d completed" % (
                name, self.states(name), total))

    def wait_in_flight(self, name, count, timeout=30):
        wait_for(lambda: self.ep.current(job_name=name) >= count, timeout, 0.02,
                 "%d requests of %s in progress at the endpoint (have %d)" % (
                     count, name, self.ep.current(job_name=name)))

    def assert_delivered_after_interruption(self, name, ids):
        """Every job: one interrupted request, one answered re-delivery, never
        two at once, the same correlation id, and a log of the interruption."""
        reqs = self.ep.requests(job_name=name)
        by_job = collections.defaultdict(list)
        for r in reqs:
            by_job[r.correlation_id].append(r)
        self.assertEqual(set(by_job), ids, "requests carry only the jobs' own ids")
        for jid, rs in by_job.items():
            rs.sort(key=lambda r: r.started)
            self.assertEqual(len(rs), 2, "job %s: %r" % (jid, rs))
            first, again = rs
            self.assertTrue(first.client_gone, "job %s: the first request died with the worker"
                            % jid)
            self.assertEqual(again.status, 200)
            self.assertEqual(again.header("Idempotency-Key"), jid)
            self.assertEqual(harness.max_overlap(rs), 1, "job %s was in flight twice" % jid)
        self.ep.assert_no_violations()
        interrupted = scalar(self.db, """
            SELECT count(DISTINCT l.job_id) FROM jobrunner.job_logs l
              JOIN jobrunner.job j ON j.id = l.job_id
             WHERE j.job_name = %s AND l.log_message LIKE 'attempt interrupted%%'""", (name,))
        self.assertEqual(interrupted, len(ids))
        # The interrupted attempt does not count: each job completed at attempt 1.
        self.assertEqual(scalar(self.db, "SELECT array_agg(DISTINCT attempts) FROM jobrunner.job "
                                           "WHERE job_name = %s", (name,)), [1])


class Faults(FaultCase):

    def test_kill_9_with_requests_in_flight(self):
        name = self.job_name("kill", self.ep.url("/hold"), concurrency_limit=20)
        ids = self.queue_many(name, users=10, per_user=20)
        self.wait_in_flight(name, 200)
        self.assertEqual(self.states(name), {"running": 200})
        old = harness.kill_worker()
        self.reconnect()
        self.assertNotEqual(harness.worker_pid(self.db), old)
        # Every held request of the dead worker ends; every job comes again.
        wait_for(lambda: len(self.ep.requests(job_name=name)) >= 400, 30, 0.05,
                 "every job re-delivered after the crash")
        self.wait_in_flight(name, 200)
        self.ep.release()
        self.wait_all_completed(name, 200)
        self.assertEqual(self.states(name), {"completed": 200}, "none stays running")
        self.assert_delivered_after_interruption(name, ids)

    def test_kill_9_while_jobs_stream(self):
        # Answers arrive and are recorded all the time: the crash lands
        # between an answer and its record for some jobs. At least once:
        # those are sent again, never while the first request still runs.
        name = self.job_name("stream", self.ep.url("/slow?ms=20"), concurrency_limit=10)
        ids = self.queue_many(name, users=10, per_user=200)
        wait_for(lambda: len(self.ep.requests(job_name=name)) >= 600, 30, 0.01,
                 "a third of the jobs sent")
        harness.kill_worker()
        self.reconnect()
        self.wait_all_completed(name, 2000, timeout=90)
        self.assertEqual(self.states(name), {"completed": 2000})
        by_job = collections.defaultdict(list)
        for r in self.ep.requests(job_name=name):
            by_job[r.correlation_id].append(r)
        self.assertEqual(set(by_job), ids, "every job was sent")
        self.assertLessEqual(max(len(rs) for rs in by_job.values()), 2)
        twice = [jid for jid, rs in by_job.items() if harness.max_overlap(rs) > 1]
        self.assertEqual(twice, [], "jobs in flight twice at once")
        self.ep.assert_no_violations()

    def test_immediate_restart_with_requests_in_flight(self):
        name = self.job_name("immediate", self.ep.url("/hold"), concurrency_limit=25)
        ids = self.queue_many(name, users=10, per_user=25)
        self.wait_in_flight(name, 250)
        harness.restart_cluster("immediate")
        self.reconnect()
        wait_for(lambda: len(self.ep.requests(job_name=name)) >= 500, 30, 0.05,
                 "every job re-delivered after the restart")
        self.wait_in_flight(name, 250)
        self.ep.release()
        self.wait_all_completed(name, 250)
        self.assertEqual(self.states(name), {"completed": 250}, "none stays running")
        self.assert_delivered_after_interruption(name, ids)

    def test_terminated_worker_hands_jobs_back_and_comes_back(self):
        name = self.job_name("term", self.ep.url("/hold"), concurrency_limit=10)
        ids = self.queue_many(name, users=3, per_user=10)
        self.wait_in_flight(name, 30)
        old = harness.worker_pid(self.db)
        offset = harness.server_log_size()
        self.assertTrue(scalar(self.db, "SELECT pg_terminate_backend(%s)", (old,)))
        # SIGTERM: the worker ends its transfers, hands the jobs back and
        # exits; the postmaster starts a new one, which sends them again.
        harness.wait_for_worker(30, not_pid=old)
        wait_for(lambda: len(self.ep.requests(job_name=name)) >= 60, 30, 0.05,
                 "every job re-delivered by the new worker")
        self.assertRegex(harness.server_log_since(offset),
                         r"pg_jobrunner: 30 in-flight attempts put back to pending at shutdown")
        self.wait_in_flight(name, 30)
        self.ep.release()
        self.wait_all_completed(name, 30)
        self.assert_delivered_after_interruption(name, ids)

    def test_fast_shutdown_hands_in_flight_jobs_back(self):
        name = self.job_name("fast", self.ep.url("/hold"), concurrency_limit=10)
        ids = self.queue_many(name, users=5, per_user=10)
        self.wait_in_flight(name, 50)
        # Nothing may be claimed again after the start, before we look.
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET enabled = false WHERE job_name = %s",
                        (name,))
        offset = harness.server_log_size()
        self.db.close()
        started = time.monotonic()
        harness.stop_cluster("fast")
        try:
            took = time.monotonic() - started
            self.assertLess(took, 5.0, "fast shutdown with 50 requests in flight")
            shutdown_log = harness.server_log_since(offset)
        finally:
            harness.start_cluster()
        self.reconnect()
        self.assertRegex(shutdown_log, r"pg_jobrunner: 50 in-flight attempts put back to "
                                       r"pending at shutdown")
        self.assertEqual(self.states(name), {"pending": 50}, "no job left running")
        # Handed back by the stopping worker, not by the next one's recovery.
        self.assertEqual(scalar(self.db, """
            SELECT count(*) FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id
             WHERE j.job_name = %s AND l.log_message LIKE 'attempt interrupted%%'
               AND l.created_at < pg_catalog.pg_postmaster_start_time()""", (name,)), 50)
        self.assertEqual(scalar(self.db, "SELECT array_agg(DISTINCT attempts) "
                                           "FROM jobrunner.job WHERE job_name = %s", (name,)), [0])
        wait_for(lambda: all(r.client_gone for r in self.ep.requests(job_name=name)), 10,
                 message="the worker's connections closed at shutdown")
        self.ep.release()
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET enabled = true WHERE job_name = %s",
                        (name,))
        self.wait_all_completed(name, 50)
        self.assert_delivered_after_interruption(name, ids)

    def test_endpoint_outage_backs_off_then_delivers(self):
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base, cap = 0.2, 1.0
        name = self.job_name("outage", "http://127.0.0.1:%d/ok" % port, max_retries=100,
                             retry_backoff="200 ms", retry_backoff_max="1 s")
        down_since = time.monotonic()
        jid = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        wait_for(lambda: harness.job(self.db, jid)["attempts"] >= 6, 20, 0.05,
                 "six refused attempts")
        row = harness.job(self.db, jid)
        self.assertIn(row["state"], ("pending", "running"))
        self.assertIsNone(row["last_status"])
        self.assertRegex(row["last_error"] or "", r"(?i)connect|refused")

        # Attempt n+1 starts no earlier than half of the capped exponential
        # delay after attempt n (equal jitter), and not much after the full
        # delay, until the fifth refusal opens the host's circuit (from then
        # on its probes pace the attempts: test_destinations).
        starts = [r["created_at"] for r in query(self.db, """
            SELECT created_at FROM jobrunner.job_logs
             WHERE job_id = %s AND log_message LIKE 'started attempt %%' ORDER BY id""", (jid,))]
        for n in range(1, min(len(starts), 5)):
            d = min(base * 2 ** (n - 1), cap)
            gap = (starts[n] - starts[n - 1]).total_seconds()
            self.assertGreaterEqual(gap, d / 2, "attempt %d after %.3fs" % (n + 1, gap))
            self.assertLessEqual(gap, d + 0.5, "attempt %d after %.3fs" % (n + 1, gap))

        try:
            back = Endpoint(port=port).start()
        except OSError as exc:
            self.skipTest("port %d was taken meanwhile: %s" % (port, exc))
        self.addCleanup(back.shutdown)
        outage = time.monotonic() - down_since
        row = wait_job_state(self.db, jid, "completed", timeout=10)
        # No hot loop: never more attempts than the shortest delays allow.
        bound, elapsed, n = 1, 0.0, 1
        while True:
            elapsed += min(base * 2 ** (n - 1), cap) / 2
            if elapsed > outage:
                break
            bound, n = bound + 1, n + 1
        self.assertLessEqual(row["attempts"] - 1, bound,
                             "%d refused attempts in a %.1fs outage" % (row["attempts"] - 1, outage))
        [req] = back.requests(correlation_id=jid)
        self.assertEqual(req.attempt, row["attempts"])
        self.assertEqual(row["last_status"], 200)
        self.assertIsNone(row["last_error"])
        back.assert_no_violations()

    def test_drop_extension_under_the_worker_and_create_it_again(self):
        pid = harness.wait_for_worker()  # on a fresh cluster it may still be starting
        offset = harness.server_log_size()
        self.addCleanup(self.create_extension_again)
        with self.db.cursor() as cur:
            cur.execute("DROP EXTENSION pg_jobrunner CASCADE")
        self.names = []  # their rows went with the extension

        # The worker keeps turning (each turn reports its activity) and stays the same process.
        def activity():
            return scalar(self.db, "SELECT state_change FROM pg_catalog.pg_stat_activity "
                                     "WHERE pid = %s AND backend_type = %s",
                          (pid, harness.WORKER_BACKEND_TYPE))
        seen = [activity()]

        def turned():
            now = activity()
            if now is not None and now != seen[-1]:
                seen.append(now)
            return len(seen) >= 5
        wait_for(turned, 15, 0.02, "the worker kept turning after DROP EXTENSION")
        self.assertEqual(harness.worker_pid(self.db), pid, "the worker is still alive")

        with self.db.cursor() as cur:
            cur.execute("CREATE EXTENSION pg_jobrunner")
        status = harness.worker_status(self.db)
        self.assertTrue(status["running"])
        self.assertEqual(status["pid"], pid)
        name = self.job_name("recreated", self.ep.url("/ok"))
        jid = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        wait_job_state(self.db, jid, "completed", timeout=15)
        self.assertEqual(len(self.ep.requests(correlation_id=jid)), 1)
        self.assertEqual(harness.worker_pid(self.db), pid)
        log = harness.server_log_since(offset)
        self.assertNotRegex(log, r"(?m)(PANIC|FATAL|terminated by signal|exited with exit code).*",
                            "the server log after DROP EXTENSION")


if __name__ == "__main__":
    unittest.main()
