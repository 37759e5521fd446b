"""test_limits.py — the controls at scale, against the real worker and a real
HTTP endpoint: fairness behind a 20,000-job backlog, and behind a backlog
held back by max_concurrency or rate_limit; rate_limit; max_concurrency
across users; concurrency_limit per (user, job name); run_at delays and
priority order. Big backlogs are deleted when each test ends.

Concurrency is judged from the endpoint's side: a request counts from its
arrival until its answer starts to go out, so a worker that sends the next
job only after reading the previous answer is never counted twice.
"""

import statistics
import time
import unittest

import harness
from harness import connect, job, max_overlap, queue_for, scalar, new_user
from harness import wait_for, wait_job_state

ROLE = "authenticated"


def max_in_window(times, width):
    """The most of these (sorted) times that fall in any half-open window of `width`."""
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def query_rows(conn, text, args=None):
    """All rows of a query, as tuples."""
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


class LimitsBase(harness.JobrunnerTestCase):
    prefix = "it.limits"

    def queue_many(self, user, name, count, conn=None):
        """Queue count jobs for user in one statement (one transaction)."""
        return scalar(conn or self.db,
                      "SELECT count(jobrunner.queue_job_for(%s::uuid, %s, NULL, %s, "
                      "jsonb_build_object('n', g))) FROM generate_series(1, %s) g",
                      (user, ROLE, name, count))


class FairnessTest(LimitsBase):
    """User A queues 20,000 jobs; B's job must still reach the endpoint
    within 100 ms of its commit.

    B jobs are measured five at a time, one after the other: the median of
    the five must be under 100 ms and every one under a second. The machine
    is shared, so a burst of load elsewhere can slow a whole round: then one
    more round is measured, and it must pass. A B job that waited behind A's
    backlog would take many seconds (A's backlog drains at a few hundred
    jobs a second), in every round.
    """
    BACKLOG = 20000
    SAMPLES = 5
    ROUNDS = 2
    LIMIT_MS = 100.0
    HICCUP_MS = 1000.0
    A_LIMIT = 32  # A's slots: enough that its backlog keeps the worker busy

    def measure_round(self, name, user_a):
        """Queue SAMPLES jobs of new users one after the other; return the ms
        from each commit to the endpoint, and to the worker's claim."""
        latencies, claims = [], []
        tx = connect(autocommit=False)
        try:
            started = time.time()
            for i in range(self.SAMPLES):
                user_b = new_user()
                job_b = queue_for(tx, user_b, ROLE, None, name, {"b": i})
                before_commit = time.time()
                tx.commit()
                [rec] = self.ep.wait_for_requests(1, timeout=30, correlation_id=job_b)
                self.assertEqual(rec.sub, user_b)
                latencies.append((rec.time - before_commit) * 1000.0)
                claimed = job(self.db, job_b)["last_run_at"].timestamp()
                claims.append((claimed - before_commit) * 1000.0)
            ended = time.time()
        finally:
            tx.close()
        during = sum(1 for r in self.ep.requests(job_name=name)
                     if r.sub == user_a and started <= r.time <= ended)
        pending_a = scalar(self.db, "SELECT count(*) FROM jobrunner.job WHERE job_name = %s "
                                    "AND user_id = %s AND state = 'pending'", (name, user_a))
        print("\n    fairness: B's job reached the endpoint %s ms after its commit "
              "(median %.1f ms, max %.1f ms; the worker's claim began %s ms after it); "
              "meanwhile %d of A's jobs were sent and %d of A's %d still wait" % (
                  ", ".join("%.1f" % x for x in latencies), statistics.median(latencies),
                  max(latencies), ", ".join("%.1f" % x for x in claims), during, pending_a,
                  self.BACKLOG), flush=True)
        self.assertGreater(pending_a, self.BACKLOG // 4, "A's backlog was still there")
        self.assertGreater(during, 2 * self.SAMPLES, "A's backlog was being worked on")
        self.assertLess(max(latencies), self.HICCUP_MS,
                        "a B job waited behind A's backlog: %r ms" % latencies)
        return statistics.median(latencies)

    def test_other_users_job_is_not_delayed_by_a_big_backlog(self):
        name = self.job_name("fair", "/ok", concurrency_limit=self.A_LIMIT)
        user_a = new_user()
        started = time.monotonic()
        self.assertEqual(self.queue_many(user_a, name, self.BACKLOG), self.BACKLOG)
        print("\n    fairness: %d jobs of A queued in one transaction in %.1fs"
              % (self.BACKLOG, time.monotonic() - started), flush=True)
        # A's backlog is draining before B queues anything.
        self.ep.wait_for_requests(300, timeout=30, job_name=name)

        medians = []
        while len(medians) < self.ROUNDS:
            medians.append(self.measure_round(name, user_a))
            if medians[-1] < self.LIMIT_MS:
                break
        self.assertLess(medians[-1], self.LIMIT_MS,
                        "B's jobs waited behind A's backlog: medians %r ms" % medians)
        a_requests = [r for r in self.ep.requests(job_name=name) if r.sub == user_a]
        self.assertLessEqual(max_overlap(a_requests), self.A_LIMIT,
                             "A never has more than its concurrency_limit in flight")


class FairnessUnderCapsTest(LimitsBase):
    """Newcomers' jobs behind another user's backlog, when the job name's cap
    (max_concurrency or rate_limit) rather than the per-user limit is what
    holds the backlog back: each newcomer should get one of the next free
    slots or tokens, not wait for the whole backlog."""

    def overtaken(self, name, backlog, seconds, newcomers):
        """A queues `backlog` jobs; once they flow, `newcomers` other users
        queue one each. Returns how many of A's jobs were sent after the
        newcomers' commit and before the last newcomer's job arrived."""
        user_a = new_user()
        self.assertEqual(self.queue_many(user_a, name, backlog), backlog)
        self.ep.wait_for_requests(3, timeout=10, job_name=name)
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        ids = [queue_for(tx, new_user(), ROLE, None, name) for _ in range(newcomers)]
        tx.commit()
        queued = time.time()
        last = max(self.ep.wait_for_requests(1, timeout=seconds + 15, correlation_id=i)[0].time
                   for i in ids)
        overtaken = sum(1 for r in self.ep.requests(job_name=name)
                        if r.sub == user_a and queued < r.time < last)
        print("\n    %s: %d newcomers waited up to %.0f ms; %d of A's %d jobs were sent "
              "meanwhile" % (self.id().rsplit(".", 1)[-1], newcomers,
                             (last - queued) * 1000, overtaken, backlog), flush=True)
        return overtaken

    def test_newcomer_is_not_starved_under_max_concurrency(self):
        # A's jobs hold both slots; the first slot that frees goes to the
        # newcomer (A still holds the other one, the newcomer none), not to
        # A's next job. (At most two of A's: a claim may be under way when
        # the newcomer commits, and it may refill both slots if both freed
        # in the same round.)
        name = self.job_name("capc", "/slow?ms=100", concurrency_limit=2, max_concurrency=2)
        self.assertLessEqual(self.overtaken(name, 40, 2.0, 1), 2,
                             "the newcomer waited behind A's backlog")

    # With max_concurrency 1, A's finished job is recorded in the same
    # transaction that claims the next one, so at every claim A holds no
    # slot, like the newcomers: only the rotation (jobrunner.group_turn, the
    # group served longest ago goes first) keeps A's older jobs from winning
    # every time.
    def test_newcomers_are_not_starved_when_one_slot_frees_at_a_time(self):
        name = self.job_name("capc1", "/slow?ms=50", concurrency_limit=1, max_concurrency=1)
        self.assertLessEqual(self.overtaken(name, 40, 2.5, 3), 1,
                             "the newcomers waited behind A's backlog")

    # The same under rate_limit: a token is spent at each refill, when a fast
    # endpoint has already answered A's previous job, so A holds no slot
    # like the newcomers; the rotation puts the newcomers first.
    def test_newcomers_are_not_starved_under_rate_limit(self):
        name = self.job_name("capr", "/ok", concurrency_limit=50, rate_limit=20)
        self.assertLessEqual(self.overtaken(name, 60, 3.0, 3), 2,
                             "the newcomers waited behind A's backlog")


class RateLimitTest(LimitsBase):
    RATE = 200
    SECONDS = 10
    BUCKET = max(1, RATE // 10)
    # A claim's requests reach the endpoint some milliseconds after its
    # transaction began, not always by the same delay; a window at the
    # endpoint may then hold up to 20 ms more of refill than any window of
    # claims. The claims themselves (last_run_at) are held to the exact bound.
    SEND_JITTER = RATE // 50

    def test_rate_limit_holds_over_ten_seconds(self):
        name = self.job_name("rate", "/ok", rate_limit=self.RATE, concurrency_limit=100)
        users = [new_user() for _ in range(4)]
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        for user in users:
            self.queue_many(user, name, 1000, conn=tx)
        tx.commit()

        first = self.ep.wait_for_requests(1, timeout=10, job_name=name)[0].time
        end = first + self.SECONDS
        wait_for(lambda: any(r.time >= end for r in self.ep.requests(job_name=name)),
                 self.SECONDS + 10, 0.1,
                 "the rate-limited job name stopped before %ds" % self.SECONDS)
        times = sorted(r.time for r in self.ep.requests(job_name=name) if r.time < end)
        window = max_in_window(times, 1.0)
        # The same, as the worker claimed them (each claim's transaction time).
        claimed = sorted(t.timestamp() for t, in query_rows(
            self.db, "SELECT last_run_at FROM jobrunner.job WHERE job_name = %s "
                     "AND last_run_at IS NOT NULL", (name,)))
        claim_window = max_in_window(claimed, 1.0)
        expected = self.RATE * self.SECONDS
        print("\n    rate_limit %d/s: %d requests in %ds (expected %d +- 5%%), "
              "busiest 1s window %d at the endpoint, %d as claimed (ceiling %d)" % (
                  self.RATE, len(times), self.SECONDS, expected, window, claim_window,
                  self.RATE + self.BUCKET), flush=True)
        self.assertGreaterEqual(len(times), expected * 0.95)
        self.assertLessEqual(len(times), expected * 1.05)
        self.assertLessEqual(window, self.RATE + self.BUCKET + self.SEND_JITTER)
        self.assertLessEqual(claim_window, self.RATE + self.BUCKET)
        # (How the tokens are shared between the users: FairnessUnderCapsTest.)
        self.ep.assert_no_violations()


class ConcurrencyTest(LimitsBase):
    def test_max_concurrency_across_users(self):
        name = self.job_name("maxc", "/slow?ms=150", concurrency_limit=2, max_concurrency=3)
        users = [new_user() for _ in range(4)]
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        ids = []
        for user in users:
            ids += [queue_for(tx, user, ROLE, None, name, {"n": i}) for i in range(4)]
        tx.commit()
        for job_id in ids:
            wait_job_state(self.db, job_id, "completed", timeout=30)
        reqs = self.ep.requests(job_name=name)
        self.assertEqual(len(reqs), 16)
        self.assertEqual(max_overlap(reqs), 3, "max_concurrency 3 is used, never exceeded")
        for user in users:
            self.assertLessEqual(max_overlap([r for r in reqs if r.sub == user]), 2, user)
        self.ep.assert_no_violations()

    def test_concurrency_limit_per_user_and_job_name(self):
        name = self.job_name("perc", "/slow?ms=150", concurrency_limit=2)
        other = self.job_name("perc2", "/slow?ms=150", concurrency_limit=2)
        users = [new_user() for _ in range(3)]
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        ids = []
        for user in users:
            for job_name in (name, other):
                ids += [queue_for(tx, user, ROLE, None, job_name, {"n": i}) for i in range(6)]
        tx.commit()
        for job_id in ids:
            wait_job_state(self.db, job_id, "completed", timeout=30)
        reqs = self.ep.requests()
        self.assertEqual(len(reqs), 36)
        for user in users:
            for job_name in (name, other):
                mine = [r for r in reqs if r.sub == user and r.job_name == job_name]
                self.assertEqual(len(mine), 6)
                self.assertEqual(max_overlap(mine), 2,
                                 "concurrency_limit 2 for (%s, %s)" % (user, job_name))
            self.assertEqual(max_overlap([r for r in reqs if r.sub == user]), 4,
                             "the limit is per job name: two names run side by side")
        self.assertEqual(max_overlap([r for r in reqs if r.job_name == name]), 6,
                         "users do not wait for each other")


class ScheduleOrderTest(LimitsBase):
    def test_run_at_delays_dispatch(self):
        name = self.job_name("runat", "/ok", concurrency_limit=10)
        user = new_user()
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        now_job = queue_for(tx, user, ROLE, None, name, {"when": "now"})
        delayed = ("SELECT jobrunner.queue_job_for(%s::uuid, %s, NULL, %s, %s::jsonb, "
                   "_run_at => clock_timestamp() + %s::interval)::text")
        soon_job = scalar(tx, delayed, (user, ROLE, name, '{"when": "soon"}', "1500 ms"))
        later_job = scalar(tx, delayed, (user, ROLE, name, '{"when": "later"}', "1 hour"))
        tx.commit()
        run_at = job(self.db, soon_job)["next_run_at"].timestamp()

        [first] = self.ep.wait_for_requests(1, timeout=10, correlation_id=now_job)
        self.assertLess(first.time, run_at - 0.5, "the undelayed job did not wait")
        [soon] = self.ep.wait_for_requests(1, timeout=15, correlation_id=soon_job)
        late_ms = (soon.time - run_at) * 1000.0
        print("\n    run_at: dispatched %.1f ms after run_at" % late_ms, flush=True)
        self.assertGreaterEqual(soon.time, run_at, "dispatched before its run_at")
        self.assertLess(late_ms, 500.0, "the worker woke itself for run_at")
        wait_job_state(self.db, soon_job, "completed")
        self.assertEqual(job(self.db, later_job)["state"], "pending")
        self.assertEqual(self.ep.requests(correlation_id=later_job), [])

    def test_priority_order(self):
        name = self.job_name("prio", "/ok", concurrency_limit=1)
        user = new_user()
        priorities = [0, 5, 1, 10, 3, -2, 5]
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        ids = [queue_for(tx, user, ROLE, None, name, {"p": p, "i": i}, priority=p)
               for i, p in enumerate(priorities)]
        tx.commit()
        reqs = self.ep.wait_for_requests(len(ids), timeout=20, job_name=name)
        seen = [r.json()["p"] for r in sorted(reqs, key=lambda r: r.started)]
        self.assertEqual(seen, sorted(priorities, reverse=True), "highest priority first")
        self.assertEqual(max_overlap(reqs), 1)

    def test_priority_across_users_under_max_concurrency(self):
        name = self.job_name("prio2", "/ok", concurrency_limit=1, max_concurrency=1)
        low, high = new_user(), new_user()
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        queue_for(tx, low, ROLE, None, name, {"who": "low"}, priority=0)
        queue_for(tx, high, ROLE, None, name, {"who": "high"}, priority=10)
        tx.commit()
        reqs = self.ep.wait_for_requests(2, timeout=20, job_name=name)
        self.assertEqual([r.json()["who"] for r in sorted(reqs, key=lambda r: r.started)],
                         ["high", "low"])


if __name__ == "__main__":
    unittest.main()
