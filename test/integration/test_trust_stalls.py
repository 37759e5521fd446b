"""test_trust_stalls.py — nothing one party does stalls the others, and an
attempt is one attempt, against the real worker and a real HTTP endpoint.

Proven here:
  1. Poison jobs stall nobody: a job dated at +/-infinity and a body past
     jobrunner.max_request_size are refused at queue time (22023, 54000); a
     20 MB body queued while a superuser's session raised the limit is never
     sent (its attempt fails with the size reason) and another user's job
     queued right after it is sent within 2 s.
  2. A user's row locks stall nobody: dequeue_job on her running jobs, in a
     PostgREST transaction she keeps open, takes no lock: other users' jobs
     are sent and her jobs' outcomes recorded while it is still open.
  3. An endpoint's open transaction stalls nobody: an endpoint that called
     complete_job with its token and keeps its transaction open holds back
     only that job's own outcome; other users' jobs flow; once it commits the
     job is completed exactly once and its slot is free.
  4. Attempt identity: attempt numbers never repeat across retry_job, so a
     late complete_job for attempt 1 cannot finish attempt 2; and a job
     failed (with retry) while its request is on the wire is not sent again
     before that request ends, whose late 200 settles nothing.

Each test class says why it fails on a version without the defence. Users
are uuids (alice, bob, ...); the endpoint's side of complete_job runs as
PostgREST does: login authenticator, SET ROLE authenticated, and the
verified payload of the token the endpoint received as request.jwt.claims.
The only fixed waits are the stated durations transactions are held open.
"""

import json
import re
import time
import unittest

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import Json

import harness
from harness import configure_job, connect, new_user, query, queue_for, scalar, wait_for

ROLE = "authenticated"
# Another user's job must reach the endpoint this soon after its commit,
# however the poison job, the lock or the open transaction is doing.
DISPATCH_WITHIN_S = 2.0
# How soon an outcome the worker could not record before is recorded.
RECORD_WITHIN_S = 5.0
USER_TX_HELD_S = 15.0
ENDPOINT_TX_HELD_S = 10.0


def postgrest_session(claims):
    """A connection as PostgREST opens one per request: login authenticator,
    SET LOCAL ROLE authenticated, the token's payload as request.jwt.claims,
    all in one open transaction (the caller commits or rolls back)."""
    conn = connect(user="authenticator", autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET LOCAL ROLE authenticated")
        cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    return conn


def user_claims(user):
    """The claims of a user's own token (not one minted for a job)."""
    return {"sub": user, "role": ROLE}


def in_transaction(conn):
    return conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS


def hold_open_until(conn, deadline):
    """Keep conn's transaction open until deadline (time.monotonic()), then
    commit it. The one fixed wait: the test states how long it is held."""
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)
    assert in_transaction(conn), "the held transaction ended early"
    scalar(conn, "SELECT 1")  # still alive, still the same transaction
    conn.commit()


class StallsBase(harness.JobrunnerTestCase):
    prefix = "it.stalls"
    job_columns = {"concurrency_limit": 4}

    def queue(self, name, user, body=None, **opts):
        """Queue (and commit) a job for user as an admin; its id."""
        return queue_for(self.db, user, ROLE, None, name, body or {}, **opts)

    def session(self, claims):
        """postgrest_session(claims), closed (rolled back if open) after the test."""
        conn = postgrest_session(claims)
        self.addCleanup(conn.close)
        return conn

    def row(self, job_id):
        """The job's row without its request body (which may be 20 MB)."""
        rows = query(self.db, "SELECT state, attempts, attempt_seq, sending_attempt, acked_at, "
                              "last_status, last_error, response, next_run_at "
                              "FROM jobrunner.job WHERE id = %s", (job_id,))
        return rows[0] if rows else None

    def wait_row(self, job_id, check, timeout, what):
        """Wait until check(row) holds; the row (or a failure with row and logs)."""
        def holds():
            row = self.row(job_id)
            return row if row is not None and check(row) else None

        try:
            return wait_for(holds, timeout, 0.02)
        except AssertionError:
            raise AssertionError("job %s: %s within %.1fs; row %s\nlogs:\n%s" % (
                job_id, what, timeout, harness.pretty(self.row(job_id)), self.logs_text(job_id)))

    def wait_state(self, job_id, state, timeout=15.0):
        return self.wait_row(job_id, lambda r: r["state"] == state, timeout, "not " + state)

    def logs(self, job_id):
        """(attempt, message) of the job's log rows, in the order written."""
        return [(r["attempt"], r["log_message"]) for r in query(
            self.db, "SELECT attempt, log_message FROM jobrunner.job_logs "
                     "WHERE job_id = %s ORDER BY id", (job_id,))]

    def logs_text(self, job_id):
        return "\n".join("  %s %s" % entry for entry in self.logs(job_id))

    def completions(self, job_id):
        return [entry for entry in self.logs(job_id) if entry[1].startswith("completed")]

    def wait_dispatched(self, job_id, since, within=DISPATCH_WITHIN_S):
        """Wait until the job's first request reached the endpoint and check it
        did so within `within` seconds of since (time.time() before its commit)."""
        # Waits a little longer than allowed, so a late arrival is reported
        # with its delay; past that, the job is stuck behind something.
        reqs = wait_for(lambda: self.ep.requests(correlation_id=job_id), within + 3, 0.01,
                        "job %s did not reach the endpoint within %.1fs of its commit"
                        % (job_id, within))
        took = reqs[0].time - since
        self.assertLess(took, within, "job %s reached the endpoint %.2fs after its commit"
                        % (job_id, took))
        return reqs[0]

    def call(self, conn, text, *args):
        """The first column of the first row of a query on conn."""
        return scalar(conn, text, args or None)


class PoisonJobTest(StallsBase):
    """Without the checks in _enqueue, the infinite run_at and the 2 MB body
    are queued (no error raised). Without the worker's size check, the 20 MB
    body is POSTed (the endpoint records it) and its attempt does not fail
    with the size reason; a worker busy with it must still send bob's job
    within 2 s."""

    def test_infinite_run_at_is_refused_naming_the_value(self):
        name = self.job_name("inf", "/ok")
        alice = new_user()
        for value in ("infinity", "-infinity"):
            with self.subTest(run_at=value):
                conn = self.session(user_claims(alice))
                with self.assertRaises(psycopg2.errors.InvalidParameterValue) as ctx:
                    self.call(conn, "SELECT jobrunner.queue_job(%s, '{}', _run_at => %s)",
                              name, value)
                self.assertIn("run_at must be a finite time, not %s" % value, str(ctx.exception))
                conn.rollback()
        self.assertEqual(self.call(self.db, "SELECT count(*) FROM jobrunner.job "
                                            "WHERE job_name = %s", name), 0)

    def test_body_over_max_request_size_is_refused(self):
        name = self.job_name("2mb", "/ok")
        conn = self.session(user_claims(new_user()))
        with self.assertRaises(psycopg2.errors.ProgramLimitExceeded) as ctx:
            self.call(conn, "SELECT jobrunner.queue_job(%s, "
                            "jsonb_build_object('pad', repeat('x', 2 * 1024 * 1024)))", name)
        self.assertRegex(str(ctx.exception),
                         r"request body of job \"%s\" is \d+ bytes, more than "
                         r"jobrunner.max_request_size \(1MB\)" % name.replace(".", r"\."))
        conn.rollback()
        self.assertEqual(self.call(self.db, "SELECT count(*) FROM jobrunner.job "
                                            "WHERE job_name = %s", name), 0)

    def test_huge_body_is_not_sent_and_stalls_nobody(self):
        name = self.job_name("huge", "/ok", max_retries=0)
        worker = harness.wait_for_worker()
        alice, bob = new_user(), new_user()
        huge = 20 * 1024 * 1024

        # A superuser raises the limit for her session only, so queue_job
        # lets the body in; the worker keeps the server's 1MB.
        big = connect()
        self.addCleanup(big.close)
        with big.cursor() as cur:
            cur.execute("SET jobrunner.max_request_size = '64MB'")
        self.assertEqual(self.call(self.db, "SHOW jobrunner.max_request_size"), "1MB")
        big_job = self.call(big, "SELECT jobrunner.queue_job_for(%s::uuid, %s, NULL, %s, "
                                 "jsonb_build_object('pad', repeat('x', %s)))::text",
                            alice, ROLE, name, huge)
        queued_at = time.time()
        bob_job = self.queue(name, bob, {"n": 1})
        self.wait_dispatched(bob_job, queued_at)
        self.wait_state(bob_job, "completed")

        row = self.wait_state(big_job, "failed", timeout=RECORD_WITHIN_S)
        reason = re.compile(r"request body is (\d+) bytes, "
                            r"more than jobrunner.max_request_size \(1024kB\)")
        found = reason.search(row["last_error"] or "")
        self.assertIsNotNone(found, "last_error gives the size reason: %r" % row["last_error"])
        self.assertGreaterEqual(int(found.group(1)), huge, "the reason gives the body's size")
        self.assertTrue(any(attempt == 1 and reason.search(message)
                            for attempt, message in self.logs(big_job)),
                        "job_logs say why attempt 1 failed:\n" + self.logs_text(big_job))
        self.assertEqual(self.ep.requests(correlation_id=big_job), [], "the body was sent")
        self.assertEqual(harness.worker_pid(self.db), worker, "the worker restarted")
        self.ep.assert_no_violations()


class UserLockTest(StallsBase):
    """Without the defence, dequeue_job locks a running job it will not
    change (FOR UPDATE before looking at the state): a worker that waits for
    that lock stalls everyone for 15 s, and one that skips it records alice's
    outcomes only once her transaction ends; either way an assertion made
    while it is still open fails."""

    def test_dequeue_in_an_open_transaction_holds_up_nobody(self):
        name = self.job_name("lock", "/block?ms=30000", concurrency_limit=2)
        alice, bob = new_user(), new_user()
        mine = [self.queue(name, alice, {"n": i}) for i in range(2)]
        self.ep.wait_for_current(2, job_name=name)
        for job_id in mine:
            self.assertEqual(self.row(job_id)["state"], "running")

        # Alice, through PostgREST, tries to cancel her running jobs and
        # keeps her transaction open.
        tx = self.session(user_claims(alice))
        held_until = time.monotonic() + USER_TX_HELD_S
        for job_id in mine:
            self.assertIs(self.call(tx, "SELECT jobrunner.dequeue_job(%s)", job_id), False)

        self.ep.release()  # alice's requests answer: the worker has outcomes to write
        queued_at = time.time()
        bob_job = self.queue(name, bob, {"n": "bob"})
        self.wait_dispatched(bob_job, queued_at)
        for job_id in mine + [bob_job]:
            self.wait_state(job_id, "completed", timeout=RECORD_WITHIN_S)
        self.assertLess(time.monotonic(), held_until, "asserted after the transaction's time")
        self.assertTrue(in_transaction(tx), "alice's transaction must still be open")

        hold_open_until(tx, held_until)
        for job_id in mine:
            self.assertEqual(self.row(job_id)["state"], "completed")
            self.assertNotIn("canceled", [message for _, message in self.logs(job_id)])
        self.ep.assert_no_violations()


class EndpointTransactionTest(StallsBase):
    """Without the defence, the worker waits for the endpoint's row lock
    (other users' jobs are not sent for 10 s), or drops the outcome it could
    not write (sending_attempt stays set, the job's slot is never freed and
    alice's next job never sent), or writes it after the endpoint's
    completion (a second completion log row)."""

    def test_open_complete_job_transaction_holds_up_only_its_own_outcome(self):
        name = self.job_name("endpoint", "/block?ms=30000", concurrency_limit=1)
        alice = new_user()
        job_id = self.queue(name, alice, {"n": 1})
        self.ep.wait_for_current(1, job_name=name)
        [request] = self.ep.requests(correlation_id=job_id)
        self.assertIsNotNone(request.claims, request.jwt_error)
        self.assertEqual(request.claims["job"]["attempt"], 1)

        # The endpoint's backend: complete_job with the token it received,
        # in a transaction it keeps open; then its HTTP answer goes out.
        endpoint = self.session(request.claims)
        held_until = time.monotonic() + ENDPOINT_TX_HELD_S
        self.assertIs(self.call(endpoint, "SELECT jobrunner.complete_job(%s, %s, _attempt => %s)",
                                job_id, Json({"by": "endpoint"}), request.attempt), True)
        self.ep.release()
        self.ep.wait_for_requests(1, timeout=5, correlation_id=job_id)

        # Other users' jobs flow; alice's next job waits for her only slot.
        queued_at = time.time()
        others = [self.queue(name, new_user(), {"other": i}) for i in range(3)]
        alice_next = self.queue(name, alice, {"n": 2})
        for other in others:
            self.wait_dispatched(other, queued_at)
            self.wait_state(other, "completed", timeout=RECORD_WITHIN_S)
        harness.wait_worker_loops(self.db, 3)  # the held outcome had its turns
        row = self.row(job_id)
        self.assertEqual((row["state"], row["sending_attempt"]), ("running", 1),
                         "the worker's outcome waits for the endpoint's transaction")
        self.assertEqual(self.ep.requests(correlation_id=alice_next), [],
                         "alice's next job was sent while her slot was held")
        self.assertLess(time.monotonic(), held_until, "asserted after the transaction's time")
        self.assertTrue(in_transaction(endpoint), "the endpoint's transaction must still be open")

        hold_open_until(endpoint, held_until)
        committed_at = time.time()
        row = self.wait_row(job_id, lambda r: r["sending_attempt"] is None, RECORD_WITHIN_S,
                            "the ended request still holds its slot")
        self.assertEqual((row["state"], row["response"]), ("completed", {"by": "endpoint"}))
        self.assertEqual(self.completions(job_id), [(1, "completed by complete_job")],
                         self.logs_text(job_id))
        # The freed slot goes to alice's next job (measured from the commit).
        self.wait_dispatched(alice_next, committed_at, within=RECORD_WITHIN_S)
        self.wait_state(alice_next, "completed")
        self.ep.assert_no_violations()


class AttemptIdentityTest(StallsBase):
    """Without the defence: retry_job resets the attempt number, so attempt 2
    is sent as attempt 1 again and a late complete_job(_attempt => 1) or the
    first token completes it; and fail_job re-queues a job whose request is
    still open, so it is sent a second time at once (two requests for one
    Idempotency-Key at the same time) and the first one's late 200 may
    settle the second attempt."""

    def wait_acked(self, job_id, attempt):
        """Wait until attempt `attempt` of a callback job is acknowledged."""
        def acked(row):
            return row["state"] == "running" and row["attempt_seq"] == attempt \
                and row["acked_at"] is not None

        return self.wait_row(job_id, acked, 15, "attempt %d not acknowledged" % attempt)

    def test_retry_gives_a_new_attempt_a_late_answer_for_the_old_one_cannot_finish(self):
        name = self.job_name("cb", "/callback", completion="callback", callback_lease="1 hour")
        job_id = self.queue(name, new_user(), {"n": 1})
        first = self.ep.next_callback(timeout=15)
        self.assertEqual((first.correlation_id, first.attempt), (job_id, 1))
        self.wait_acked(job_id, 1)

        self.assertIs(self.call(self.db, "SELECT jobrunner.fail_job(%s, 'given up by an admin', "
                                         "_retry => false)", job_id), True)
        self.assertEqual(self.row(job_id)["state"], "failed")
        self.assertIs(self.call(self.db, "SELECT jobrunner.retry_job(%s)", job_id), True)

        second = self.ep.next_callback(timeout=15)
        self.assertEqual((second.correlation_id, second.attempt, second.claims["job"]["attempt"]),
                         (job_id, 2, 2), "the retried job's attempt has a new number")
        row = self.wait_acked(job_id, 2)
        self.assertEqual(row["attempts"], 1, "retry_job resets attempts, not attempt numbers")

        # Late answers for attempt 1: an admin naming it, and attempt 1's token.
        self.assertIs(self.call(self.db, "SELECT jobrunner.complete_job(%s, _attempt => 1)",
                                job_id), False)
        stale = self.session(first.claims)
        self.assertIs(self.call(stale, "SELECT jobrunner.complete_job(%s)", job_id), False)
        self.assertIs(self.call(stale, "SELECT jobrunner.fail_job(%s, 'late')", job_id), False)
        stale.commit()
        row = self.row(job_id)
        self.assertEqual((row["state"], row["attempt_seq"]), ("running", 2))
        self.assertEqual(self.completions(job_id), [])

        endpoint = self.session(second.claims)
        self.assertIs(self.call(endpoint, "SELECT jobrunner.complete_job(%s, %s, _attempt => 2)",
                                job_id, Json({"attempt": 2})), True)
        endpoint.commit()
        row = self.row(job_id)
        self.assertEqual((row["state"], row["response"]), ("completed", {"attempt": 2}))
        self.assertEqual(self.completions(job_id), [(2, "completed by complete_job")])
        started = [message for _, message in self.logs(job_id) if message.startswith("started")]
        self.assertEqual(started, ["started attempt 1", "started attempt 2"])
        self.ep.assert_no_violations()

    def test_fail_job_while_the_request_is_open_does_not_send_it_twice(self):
        # Retries are due at once: only the open request keeps the job back.
        name = self.job_name("inflight", "/hold?ms=20000", concurrency_limit=1, max_retries=3,
                             retry_backoff="10 ms", retry_backoff_max="20 ms")
        job_id = self.queue(name, new_user(), {"n": 1})
        self.ep.wait_for_current(1, job_name=name)

        self.assertIs(self.call(self.db, "SELECT jobrunner.fail_job(%s, 'stopped by an admin')",
                                job_id), True)
        # Past its retry time, the worker turns its loop several times: the
        # job is due, yet not sent again while its first request is open.
        wait_for(lambda: self.call(self.db, "SELECT next_run_at < now() FROM jobrunner.job "
                                            "WHERE id = %s", job_id), 5, 0.01)
        harness.wait_worker_loops(self.db, 3)
        self.assertEqual([r.attempt for r in self.ep.requests(correlation_id=job_id)], [1],
                         "sent again while its first request was open")
        row = self.row(job_id)
        self.assertEqual((row["state"], row["sending_attempt"]), ("pending", 1),
                         "the open request holds the job back")

        # Attempt 2 goes elsewhere, so whose answer settled the job shows in
        # its response: /hold answers {"ok": true, "released": true}.
        configure_job(self.db, name, self.ep.url("/ok"))
        self.ep.release()
        row = self.wait_state(job_id, "completed")
        first, second = self.ep.requests(correlation_id=job_id)
        self.assertEqual((first.path, first.attempt, first.status), ("/hold", 1, 200))
        self.assertEqual((second.path, second.attempt), ("/ok", 2))
        self.assertGreaterEqual(second.started, first.answered_at,
                                "attempt 2 was sent before attempt 1's request ended")
        self.assertEqual(harness.max_overlap([first, second]), 1)
        self.assertEqual({r.header("Idempotency-Key") for r in (first, second)}, {job_id})
        self.assertEqual((row["attempt_seq"], row["response"]), (2, {"ok": True}),
                         "the first request's late 200 settled the job")
        self.assertEqual(self.completions(job_id), [(2, "completed with status 200")],
                         self.logs_text(job_id))
        self.assertIn((1, "attempt 1 failed: stopped by an admin"),
                      [(a, m.split(";")[0]) for a, m in self.logs(job_id)])
        self.ep.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
