"""test_destinations.py — each destination host protected on its own.

A host that keeps failing opens its circuit: after 5 failures in a row
nothing is sent to it but one probe at growing intervals, its jobs wait
without spending their retries, and the first probe that succeeds closes it.
A 429 or 503 with Retry-After pauses every job name sent to that host until
then. Another host's jobs flow at full speed meanwhile. Each endpoint here
listens on a port of its own, so each is a destination of its own.
"""

import time
import unittest

import harness
from harness import Endpoint, new_user, query, queue_for, scalar, wait_for

ROLE = "authenticated"


class DestinationsTest(harness.JobrunnerTestCase):
    prefix = "it.dest"

    def other_endpoint(self):
        ep = Endpoint().start()
        self.addCleanup(ep.shutdown)
        return ep

    def queue_many(self, name, n):
        return [queue_for(self.db, new_user(), ROLE, None, name, {"n": i}) for i in range(n)]

    def states(self, ids):
        return {r["state"]: r["n"] for r in query(
            self.db, "SELECT state, count(*)::int AS n FROM jobrunner.job WHERE id = ANY (%s::uuid[]) "
                     "GROUP BY 1", (ids,))}

    def explain(self, job_id):
        return {r["reason"]: r for r in query(
            self.db, "SELECT * FROM jobrunner.explain_job(%s)", (job_id,))}

    def test_a_failing_host_is_probed_not_hammered_and_others_flow(self):
        down = self.other_endpoint()
        failing = self.job_name("down", down.url("/fail"), max_retries=1000,
                                retry_backoff="50 ms", retry_backoff_max="50 ms", concurrency_limit=5)
        healthy = self.job_name("up", "/ok", concurrency_limit=5)
        failing_ids = self.queue_many(failing, 20)
        started = time.monotonic()
        healthy_ids = self.queue_many(healthy, 50)
        wait_for(lambda: self.states(healthy_ids).get("completed") == 50, 10, 0.05,
                 "the healthy host's jobs did not all complete")
        self.assertLess(time.monotonic() - started, 5.0, "the healthy host was held up")

        # The failing host: its circuit opens after 5 failures in a row (a
        # few more were on the wire), then one probe at 1 s, 2 s, 4 s...
        wait_for(lambda: [r for r in query(self.db, "SELECT * FROM jobrunner.destinations")
                          if r["destination"] == "127.0.0.1:%d" % down.port and r["state"] == "open"],
                 10, 0.05, "the failing host's circuit did not open")
        opened = len(down.requests())
        time.sleep(3.5)  # the stated length of the observation window
        probes = len(down.requests()) - opened
        self.assertLessEqual(probes, 3, "the open circuit let more than its probes through")
        # Without the circuit, 20 jobs retried every 50 ms would have made
        # hundreds of requests by now.
        self.assertLess(len(down.requests()), 40)
        attempts = scalar(self.db, "SELECT max(attempts) FROM jobrunner.job WHERE id = ANY (%s::uuid[])",
                          (failing_ids,))
        self.assertLess(attempts, 10, "jobs spent retries while their host was held back")
        [row] = [r for r in query(self.db, "SELECT * FROM jobrunner.destinations")
                 if r["destination"] == "127.0.0.1:%d" % down.port]
        self.assertGreaterEqual(row["consecutive_failures"], 5)
        self.assertEqual(row["job_names"], [failing])
        pending = next(j for j in failing_ids if harness.job(self.db, j)["state"] == "pending")
        reasons = self.explain(pending)
        self.assertIn("destination", reasons, reasons)
        self.assertTrue(reasons["destination"]["blocking"])
        self.assertNotIn("127.0.0.1", reasons["destination"]["detail"], "the destination is not named")

        # The host comes back (its job name now answers 200 there): the next
        # probe closes the circuit and everything drains.
        harness.configure_job(self.db, failing, down.url("/ok"))
        wait_for(lambda: self.states(failing_ids).get("completed") == 20, 30, 0.1,
                 "the recovered host's jobs did not all complete")
        self.assertFalse([r for r in query(self.db, "SELECT * FROM jobrunner.destinations")
                          if r["destination"] == "127.0.0.1:%d" % down.port])

    def test_a_probe_that_could_not_be_built_does_not_block_its_host(self):
        """The request that was to be an open circuit's probe fails before
        it leaves (no secret to sign with): the host is not left half-open
        for good; once requests can be built again the next one probes it,
        and its jobs flow."""
        ep = self.other_endpoint()
        name = self.job_name("probe", ep.url("/fail"), max_retries=1000,
                             retry_backoff="50 ms", retry_backoff_max="50 ms", concurrency_limit=5)
        ids = self.queue_many(name, 6)
        host = "127.0.0.1:%d" % ep.port
        wait_for(lambda: [r for r in query(self.db, "SELECT * FROM jobrunner.destinations")
                          if r["destination"] == host and r["state"] == "open"],
                 10, 0.05, "the failing host's circuit did not open")
        opened_at = scalar(self.db, "SELECT max(id) FROM jobrunner.job_logs")
        self.set_setting("jobrunner.jwt_secret", "short")
        # The probe's turn comes (1 s after opening): its request is not built.
        wait_for(lambda: scalar(self.db, "SELECT count(*) FROM jobrunner.job_logs WHERE id > %s "
                                         "AND job_id = ANY (%s::uuid[]) AND log_message LIKE '%%secret%%'",
                                (opened_at, ids)) > 0,
                 10, 0.05, "no probe was attempted while the secret was too short")
        sent_before = len(ep.requests())
        harness.set_setting(self.db, "jobrunner.jwt_secret", None)
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET url = %s WHERE job_name = %s", (ep.url("/ok"), name))
        wait_for(lambda: self.states(ids).get("completed") == 6, 15, 0.05,
                 "the host stayed blocked after a probe that never left")
        self.assertGreater(len(ep.requests()), sent_before)

    def test_retry_after_pauses_every_job_name_sent_to_that_host(self):
        busy = self.other_endpoint()
        throttled = self.job_name("throttled", busy.url("/retry-after?s=3&times=1"), max_retries=3)
        neighbour = self.job_name("neighbour", busy.url("/ok"), concurrency_limit=10)
        elsewhere = self.job_name("elsewhere", "/ok", concurrency_limit=10)
        [first] = self.queue_many(throttled, 1)
        [answer] = busy.wait_for_requests(1, timeout=10)
        self.assertEqual(answer.status, 429)
        harness.wait_job_state(self.db, first, "pending")
        paused_at = time.monotonic()
        neighbours = self.queue_many(neighbour, 5)
        others = self.queue_many(elsewhere, 5)
        wait_for(lambda: self.states(others).get("completed") == 5, 5, 0.05,
                 "another host's jobs waited for the paused one")
        reasons = self.explain(neighbours[0])
        self.assertIn("destination", reasons, reasons)
        self.assertIn("Retry-After", reasons["destination"]["detail"])
        wait_for(lambda: self.states(neighbours).get("completed") == 5, 15, 0.05,
                 "the paused host's jobs did not go out after the pause")
        firsts = [r.started for r in busy.requests(job_name=neighbour)]
        self.assertGreaterEqual(min(firsts) - answer.started, 2.5,
                                "a job name of the paused host was sent during the pause")
        self.assertLess(time.monotonic() - paused_at, 10)
        # Held back, not failed: their first real attempt succeeded.
        self.assertEqual(scalar(self.db, "SELECT max(attempts) FROM jobrunner.job WHERE id = ANY (%s::uuid[])",
                                (neighbours,)), 1)


if __name__ == "__main__":
    unittest.main()
