"""test_delivery.py — what the dispatcher guarantees when nothing breaks.

Real worker, real HTTP: jobs are queued with SQL in the throwaway cluster's
database (jobrunner_it) and POSTed by the background worker to a recording
endpoint (endpoint.Endpoint) on 127.0.0.1. Each test uses job names of its
own and an endpoint of its own; settings changed with ALTER SYSTEM are reset
in cleanup. Every wait has a deadline; a negative ("nothing is sent") is
observed across turns of the worker's loop (worker_status().last_loop_at).

Covered: exactly-once delivery of 1,000 jobs from 10 users; the request
(headers, JWT claims per owner, body); response and logs; system jobs;
concurrency_limit and jobrunner.max_in_flight; backoff, permanent failure,
Retry-After; redirects, huge bodies, resets and timeouts; disabled, delayed
and prioritised jobs; wake-up at commit; rollback; worker_status().
"""

import base64
import collections
import json
import time
import unittest
import uuid

import psycopg2

import harness
from harness import query, scalar, wait_for, wait_job_state

# Scheduling slack of one worker hop: recording a failure, waking up at
# next_run_at, claiming and sending. Generous; a missed wake-up would cost a
# whole poll_interval (1 s) and more.
HOP_SLACK = 0.5


class DeliveryCase(harness.JobrunnerTestCase):
    prefix = "it.delivery"

    def queue(self, name, user=None, body=None, **opts):
        user_id, role, email = user if user else (None, None, None)
        return harness.queue_for(self.db, user_id, role, email, name, body, **opts)

    def states(self, name):
        """{state: count} of the jobs of one job name."""
        return {r["state"]: r["n"] for r in query(
            self.db, "SELECT state, count(*)::int AS n FROM jobrunner.job "
                       "WHERE job_name = %s GROUP BY 1", (name,))}

    def wait_all(self, name, total, state="completed", timeout=60):
        """Wait until all `total` jobs of name are in state; return the rows."""
        def done():
            return self.states(name).get(state, 0) == total
        try:
            wait_for(done, timeout, 0.05)
        except AssertionError:
            raise AssertionError("%s: states %r, wanted %d %s" % (
                name, self.states(name), total, state))
        return query(self.db, "SELECT * FROM jobrunner.job WHERE job_name = %s", (name,))

    def sent(self, job_id):
        """The endpoint's requests for one job, in arrival order."""
        return sorted(self.ep.requests(correlation_id=job_id), key=lambda r: r.started)


def user(i, role="authenticated", email=True):
    return (str(uuid.uuid4()), role, "user%d@example.com" % i if email else None)


class Delivery(DeliveryCase):

    def test_thousand_jobs_from_ten_users_each_delivered_exactly_once(self):
        name = self.job_name("bulk", "/ok", concurrency_limit=5,
                             headers={"X-Tenant": "acme", "X-Trace": "on"})
        agent = "pg_jobrunner/" + scalar(self.db, "SELECT extversion FROM pg_extension "
                                                    "WHERE extname = 'pg_jobrunner'")
        # Ten owners: two roles, one without an email.
        owners = [user(i, "authenticated" if i % 2 else "editor", email=i != 3)
                  for i in range(10)]
        tx = harness.connect(autocommit=False)
        try:
            with tx.cursor() as cur:
                cur.execute(
                    "SELECT jobrunner.queue_job_for(u.id, u.role, u.email, %s, "
                    "       CASE WHEN n %% 10 = 0 THEN NULL "
                    "            ELSE jsonb_build_object('n', n, 'owner', u.id) END)::text "
                    "  FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS u(id, role, email), "
                    "       generate_series(1, 100) AS n",
                    (name, [o[0] for o in owners], [o[1] for o in owners],
                     [o[2] for o in owners]))
                ids = {r[0] for r in cur.fetchall()}
            self.assertEqual(scalar(self.db, "SELECT count(*) FROM jobrunner.job "
                                               "WHERE job_name = %s", (name,)), 0,
                             "nothing is visible before commit")
            tx.commit()
        finally:
            tx.close()
        self.assertEqual(len(ids), 1000)

        rows = self.wait_all(name, 1000, timeout=90)
        by_id = {str(r["id"]): r for r in rows}
        self.assertEqual(set(by_id), ids)
        for r in rows:
            self.assertEqual((r["attempts"], r["last_status"], r["last_error"]), (1, 200, None),
                             r["id"])
            self.assertEqual(r["response"], {"ok": True}, "the JSON answer is stored")

        reqs = self.ep.requests(job_name=name)
        per_job = collections.Counter(r.correlation_id for r in reqs)
        self.assertEqual(set(per_job), ids, "every job reached the endpoint")
        self.assertEqual([c for c in per_job.values() if c != 1], [],
                         "no job was delivered twice")
        self.ep.assert_no_violations()
        owner_of = {o[0]: o for o in owners}
        for req in reqs:
            row = by_id[req.correlation_id]
            uid, role, email = owner_of[str(row["user_id"])]
            self.assertEqual(req.claims["sub"], uid)
            self.assertEqual(req.claims["role"], role)
            self.assertEqual(req.claims["aud"], role)
            if email is None:
                self.assertNotIn("email", req.claims)
            else:
                self.assertEqual(req.claims["email"], email)
            # The token lives no longer than the attempt's timeout plus a minute.
            self.assertLessEqual(req.claims["exp"] - req.claims["iat"], 300 + 60)
            self.assertEqual(req.json(), row["request_body"] if row["request_body"] is not None
                             else {})
            self.assertEqual(req.attempt, 1)
            self.assertEqual(req.header("Idempotency-Key"), req.correlation_id)
            self.assertEqual(req.job_name, name)
            self.assertEqual(req.header("User-Agent"), agent)
            self.assertEqual((req.header("X-Tenant"), req.header("X-Trace")), ("acme", "on"),
                             "job_config headers are sent")
        self.assertEqual(sum(1 for r in reqs if r.body == b"{}"), 100,
                         "a NULL request_body is sent as {}")
        for uid in owner_of:
            mine = [r for r in reqs if r.sub == uid]
            self.assertEqual(len(mine), 100)
            self.assertLessEqual(harness.max_overlap(mine), 5, "concurrency_limit of %s" % uid)

        logs = query(self.db, """
            SELECT array_agg(l.log_message ORDER BY l.id) AS messages, count(*) AS n
              FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id
             WHERE j.job_name = %s GROUP BY l.job_id""", (name,))
        self.assertEqual(len(logs), 1000)
        odd = [r["messages"] for r in logs
               if r["messages"] != ["created", "started attempt 1", "completed with status 200"]]
        self.assertEqual(odd[:3], [], "%d jobs with other logs" % len(odd))

    def test_every_attempt_continues_the_queueing_requests_trace(self):
        """A job queued during a PostgREST request whose headers carry a W3C
        traceparent is sent, attempt after attempt, in that trace: same trace
        id and flags, a span id of each attempt's own, tracestate passed on."""
        name = self.job_name("trace", "/flaky?fail=1", retry_backoff="50 ms", max_retries=2)
        owner = user(1)
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        headers = {"accept": "application/json", "tracestate": "rojo=00f067aa0ba902b7",
                   "traceparent": "00-%s-b7ad6b7169203331-01" % trace_id}
        # As PostgREST serves a request: login authenticator, the user's
        # role and claims, the request's headers, all local to the request.
        tx = harness.connect(user="authenticator", autocommit=False)
        self.addCleanup(tx.close)
        with tx.cursor() as cur:
            cur.execute("SET LOCAL ROLE authenticated")
            cur.execute("SELECT set_config('request.jwt.claims', %s, true), "
                        "set_config('request.headers', %s, true)",
                        (json.dumps({"sub": owner[0], "role": "authenticated"}), json.dumps(headers)))
            cur.execute("SELECT jobrunner.queue_job(%s, '{}')::text", (name,))
            jid = cur.fetchone()[0]
        tx.commit()
        wait_job_state(self.db, jid, "completed")
        sent = self.sent(jid)
        self.assertEqual([r.attempt for r in sent], [1, 2])
        parents = [r.header("traceparent") for r in sent]
        for value in parents:
            self.assertRegex(value, r"^00-%s-[0-9a-f]{16}-01$" % trace_id)
            self.assertNotIn(value.split("-")[2], ("b7ad6b7169203331", "0" * 16))
        self.assertNotEqual(parents[0].split("-")[2], parents[1].split("-")[2],
                            "each attempt is a span of its own")
        self.assertEqual([r.header("tracestate") for r in sent], ["rojo=00f067aa0ba902b7"] * 2)
        # Without a trace, no trace headers.
        plain = self.queue(name, owner)
        wait_job_state(self.db, plain, "completed")
        self.assertEqual({r.header("traceparent") for r in self.sent(plain)}, {None})
        self.ep.assert_no_violations()

    def test_cancel_job_aborts_the_request_in_flight(self):
        """cancel_job by the job's user (through PostgREST) on a running job:
        the endpoint sees the connection close at once, the job ends
        canceled and stays so, and its slot goes to the user's next job."""
        name = self.job_name("cancel", "/hold?ms=30000", concurrency_limit=1, max_retries=2)
        owner = user(1)
        first = self.queue(name, owner)
        second = self.queue(name, owner)
        self.ep.wait_for_current(1, job_name=name)
        [held] = self.sent(first)
        tx = harness.connect(user="authenticator", autocommit=False)
        self.addCleanup(tx.close)
        with tx.cursor() as cur:
            cur.execute("SET LOCAL ROLE authenticated")
            cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps({"sub": owner[0], "role": "authenticated"}),))
            cur.execute("SELECT jobrunner.cancel_job(%s)", (first,))
            self.assertTrue(cur.fetchone()[0])
            # Not before the cancel commits.
            time.sleep(0.3)
            self.assertFalse(held.client_gone, "aborted before the cancel committed")
        canceled_at = time.monotonic()
        tx.commit()
        wait_for(lambda: held.client_gone, 3, 0.02, "the endpoint's request was not aborted")
        self.assertLess(time.monotonic() - canceled_at, 2.0)
        # The slot is given back: the user's next job goes out; the canceled
        # one is never sent again.
        wait_for(lambda: self.sent(second), 5, 0.02, "the next job was not sent")
        row = harness.job(self.db, first)
        self.assertEqual((row["state"], row["sending_attempt"]), ("canceled", None))
        self.ep.release()
        wait_job_state(self.db, second, "completed")
        self.assertEqual(len(self.sent(first)), 1)
        self.assertEqual(harness.job(self.db, first)["state"], "canceled")
        logs = [r["log_message"] for r in harness.job_logs(self.db, first)]
        self.assertIn("canceled while attempt 1 was running", logs)
        self.assertFalse([m for m in logs if m.startswith(("completed", "attempt"))], logs)

    def held_job_and_a_transaction(self, what):
        """A job whose request the endpoint holds, and an open transaction
        (closed in cleanup): (job name, job id, the held request, connection)."""
        name = self.job_name(what, "/hold?ms=30000", concurrency_limit=1)
        jid = self.queue(name, user(1))
        self.ep.wait_for_current(1, job_name=name)
        [held] = self.sent(jid)
        tx = harness.connect(autocommit=False)
        self.addCleanup(tx.close)
        return name, jid, held, tx

    def test_a_cancel_rolled_back_to_a_savepoint_aborts_nothing(self):
        name, jid, held, tx = self.held_job_and_a_transaction("cancelsp")
        with tx.cursor() as cur:
            cur.execute("SAVEPOINT before_cancel")
            cur.execute("SELECT jobrunner.cancel_job(%s)", (jid,))
            cur.execute("ROLLBACK TO SAVEPOINT before_cancel")
        tx.commit()
        harness.wait_worker_loops(self.db, 3)
        self.assertFalse(held.client_gone, "a rolled-back cancel aborted the request")
        self.assertEqual(harness.job(self.db, jid)["state"], "running")
        self.ep.release()
        wait_job_state(self.db, jid, "completed")

    def test_coalesced_bodies_are_sent_in_order_each_once(self):
        """queue_job(_on_duplicate => 'replace') with the worker running:
        while the first body's request is held, five more calls coalesce
        into one body waiting behind it; nothing more is sent meanwhile, and
        when the first ends only the newest body is sent, after it."""
        name = self.job_name("coalesce", "/hold?ms=30000", concurrency_limit=5)
        owner = user(1)
        first = self.queue(name, owner, {"v": 0}, dedup_key="doc", on_duplicate="replace")
        self.ep.wait_for_current(1, job_name=name)
        ids = {self.queue(name, owner, {"v": v}, dedup_key="doc", on_duplicate="replace") for v in range(1, 6)}
        self.assertEqual(len(ids), 1, "every call returns the one body waiting")
        [behind] = ids
        self.assertNotEqual(behind, first)
        harness.wait_worker_loops(self.db, 3)
        self.assertEqual(len(self.ep.requests(job_name=name)), 1, "a second body went out while the first ran")
        self.ep.release()
        wait_job_state(self.db, behind, "completed")
        bodies = [r.json()["v"] for r in sorted(self.ep.requests(job_name=name), key=lambda r: r.started)]
        self.assertEqual(bodies, [0, 5])
        self.assertEqual(harness.job(self.db, first)["state"], "completed")

    def test_debounced_key_sends_the_last_body_once_after_the_last_call(self):
        """Each call pushes run_at one second past itself: a burst of calls
        sends once, the last body, a second after the last call."""
        name = self.job_name("debounce", "/ok")
        owner = user(1)
        ids = set()
        for v in range(5):
            ids.add(scalar(self.db, "SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, %s, "
                                    "jsonb_build_object('v', %s), _dedup_key => 'doc', _on_duplicate => 'replace', "
                                    "_run_at => now() + interval '1 second')::text", (owner[0], name, v)))
            time.sleep(0.2)
        [jid] = ids
        run_at = harness.job(self.db, jid)["next_run_at"].timestamp()
        wait_job_state(self.db, jid, "completed", timeout=10)
        [req] = self.sent(jid)
        self.assertEqual(req.json(), {"v": 4})
        self.assertGreaterEqual(req.time, run_at, "sent before the last call's run_at")
        self.assertEqual(len(self.ep.requests(job_name=name)), 1)

    def test_a_transaction_that_canceled_a_running_job_cannot_be_prepared(self):
        """Rolled back later, from any session, a prepared transaction's
        cancel could not be withdrawn: PREPARE TRANSACTION is refused, and
        the request goes on. One that canceled nothing running prepares."""
        name, jid, held, tx = self.held_job_and_a_transaction("cancelprep")
        with tx.cursor() as cur:
            cur.execute("SELECT jobrunner.cancel_job(%s)", (jid,))
            with self.assertRaises(psycopg2.errors.FeatureNotSupported):
                cur.execute("PREPARE TRANSACTION 'it_cancel_running'")
        tx.rollback()
        self.assertEqual(self.value("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'it_cancel_running'"), 0)
        harness.wait_worker_loops(self.db, 3)
        self.assertFalse(held.client_gone, "the request was aborted")
        self.assertEqual(harness.job(self.db, jid)["state"], "running")
        # Due in an hour: still pending when it is canceled.
        other = scalar(self.db, "SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, %s, '{}', "
                                "_run_at => now() + interval '1 hour')::text", (user(2)[0], name))
        with tx.cursor() as cur:
            cur.execute("SELECT jobrunner.cancel_job(%s)", (other,))
            cur.execute("PREPARE TRANSACTION 'it_cancel_pending'")
        tx.rollback()
        with self.db.cursor() as cur:
            cur.execute("COMMIT PREPARED 'it_cancel_pending'")
        self.assertEqual(harness.job(self.db, other)["state"], "canceled")
        self.ep.release()
        wait_job_state(self.db, jid, "completed")

    def test_system_job_token_has_no_sub_and_the_system_role(self):
        name = self.job_name("system", "/ok")
        default_role = scalar(self.db, "SHOW jobrunner.system_role")
        self.assertEqual(default_role, "service_role")
        jid = scalar(self.db, "SELECT jobrunner.queue_job_for(NULL, 'ignored', "
                                "'ignored@example.com', %s, NULL)::text", (name,))
        wait_job_state(self.db, jid, "completed")
        [req] = self.sent(jid)
        self.assertIsNone(req.jwt_error)
        self.assertNotIn("sub", req.claims)
        self.assertNotIn("email", req.claims)
        self.assertEqual(req.claims["role"], "service_role")
        self.assertEqual(req.claims["aud"], "service_role")
        self.assertEqual(req.body, b"{}")

        self.set_setting("jobrunner.system_role", "jr_it_system")
        jid = self.queue(name, body={"k": "v"})
        wait_job_state(self.db, jid, "completed")
        [req] = self.sent(jid)
        self.assertNotIn("sub", req.claims)
        self.assertEqual(req.claims["role"], "jr_it_system")
        self.assertEqual(req.json(), {"k": "v"})
        self.ep.assert_no_violations()

    def test_no_content_completes_without_a_response(self):
        name = self.job_name("nocontent", "/nocontent")
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "completed")
        self.assertEqual(row["last_status"], 204)
        self.assertIsNone(row["response"])

    def test_a_response_is_stored_exactly_when_jsonb_takes_it(self):
        """The 2xx body is the job's response if and only if a jsonb cast of
        the same bytes succeeds, whatever they are."""
        bodies = [
            b'{"a": [1, 2.5, "x", true, null]}', b'  "padded"  ', b"plain text",
            b'{"a": 1} trailing', b'{"a": "\\u0000"}', b'{"a": "\\\\u0000"}',
            b'"\\ud83d\\ude00"', b'"\\ud800"', b'"caf\xc3\xa9"', b"\xff\xfe", b'"a\x00b"',
            b"1e100", b"1e1000000", b"-0.5e-20000", b"1" * 1200,
            b"[" * 500 + b"]" * 500, b"[" * 30000 + b"]" * 30000,
        ]
        name = self.job_name("jsonb", "/raw", concurrency_limit=20)
        jobs = {self.queue(name, user(1), {"raw_b64": base64.b64encode(b).decode()}): b
                for b in bodies}
        self.wait_all(name, len(bodies))
        for jid, body in jobs.items():
            with self.subTest(body=body[:40]):
                try:
                    expected = scalar(self.db, "SELECT convert_from(%s, 'UTF8')::jsonb", (body,))
                except psycopg2.Error:
                    expected = None
                row = harness.job(self.db, jid)
                self.assertEqual(row["last_status"], 200)
                self.assertEqual(row["response"], expected)
        self.assertIsNone(harness.job(self.db, next(j for j, b in jobs.items() if b == b"plain text"))["response"])
        self.assertEqual(harness.job(self.db, next(j for j, b in jobs.items() if b == b"1e100"))["response"], 10 ** 100)

    def test_concurrency_limit_per_user_and_job_name(self):
        name = self.job_name("limit", "/block", concurrency_limit=2)
        owners = [user(i) for i in range(3)]
        for o in owners:
            for n in range(5):
                self.queue(name, o, {"n": n})
        wait_for(lambda: self.ep.current(job_name=name) >= 6, 15,
                 message="six requests in progress (two per user)")
        harness.wait_worker_loops(self.db, 2)
        for uid, _, _ in owners:
            self.assertEqual(self.ep.current(sub=uid, job_name=name), 2, uid)
        self.assertEqual(self.ep.current(job_name=name), 6)
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM jobrunner.job "
                                           "WHERE job_name = %s AND state = 'running'", (name,)), 6)
        self.ep.release()
        self.wait_all(name, 15)
        for uid, _, _ in owners:
            reqs = [r for r in self.ep.requests(job_name=name) if r.sub == uid]
            self.assertEqual(len(reqs), 5)
            self.assertEqual(harness.max_overlap(reqs), 2, "per (user, job_name) at once")
        self.ep.assert_no_violations()

    def test_max_in_flight_caps_requests_across_users(self):
        self.set_setting("jobrunner.max_in_flight", 5)
        name = self.job_name("inflight", "/block", concurrency_limit=10)
        owners = [user(i) for i in range(4)]
        for n in range(5):
            for o in owners:
                self.queue(name, o, {"n": n})
        wait_for(lambda: self.ep.current(job_name=name) >= 5, 15,
                 message="five requests in progress")
        harness.wait_worker_loops(self.db, 2)
        self.assertEqual(self.ep.current(job_name=name), 5)
        self.assertEqual(harness.worker_status(self.db)["in_flight"], 5)
        self.ep.release()
        self.wait_all(name, 20)
        self.assertEqual(harness.max_overlap(self.ep.requests(job_name=name)), 5)

    def test_retries_follow_the_backoff_schedule(self):
        name = self.job_name("backoff", "/flaky?fail=3", retry_backoff="200 ms",
                             retry_backoff_max="1 s", max_retries=3)
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "completed", timeout=20)
        self.assertEqual(row["attempts"], 4)
        self.assertEqual(row["response"], {"ok": True, "attempt": 4})
        reqs = self.sent(jid)
        self.assertEqual([r.attempt for r in reqs], [1, 2, 3, 4])
        self.assertEqual([r.status for r in reqs], [500, 500, 500, 200])
        for n in (1, 2, 3):
            d = min(0.2 * 2 ** (n - 1), 1.0)  # capped exponential, then jittered into [d/2, d]
            gap = reqs[n].started - reqs[n - 1].started
            self.assertGreaterEqual(gap, d / 2 - 0.002, "attempt %d came too early" % (n + 1))
            self.assertLessEqual(gap, d + HOP_SLACK, "attempt %d came too late" % (n + 1))
        messages = [l["log_message"] for l in harness.job_logs(self.db, jid)]
        self.assertEqual(len([m for m in messages if "failed: HTTP 500" in m
                              and "next attempt at" in m]), 3, messages)
        self.assertEqual(messages[-1], "completed with status 200")

    def test_failing_endpoint_fails_the_job_after_its_retries(self):
        name = self.job_name("fail", "/fail", max_retries=2, retry_backoff="50 ms",
                             retry_backoff_max="100 ms")
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "failed", timeout=15)
        self.assertEqual(row["attempts"], 3)
        self.assertEqual(row["last_status"], 500)
        self.assertTrue(row["last_error"].startswith("HTTP 500"), row["last_error"])
        self.assertIsNotNone(row["finished_at"])
        last = harness.job_logs(self.db, jid)[-1]
        self.assertIn("failed permanently", last["log_message"])
        self.assertEqual((last["log_level"], last["status_code"], last["attempt"]), ("error", 500, 3))
        harness.wait_worker_loops(self.db, 2)
        self.assertEqual([r.attempt for r in self.sent(jid)], [1, 2, 3], "no attempt after failing")

    def test_retry_after_is_honoured_up_to_the_cap(self):
        honoured = self.job_name("ra", "/retry-after?s=1&times=1", retry_backoff="50 ms",
                                 retry_backoff_max="10 s")
        capped = self.job_name("racap", "/retry-after?s=30&times=1", retry_backoff="50 ms",
                               retry_backoff_max="1 s")
        a = self.queue(honoured, user(1))
        b = self.queue(capped, user(2))
        for jid in (a, b):
            row = wait_job_state(self.db, jid, "completed", timeout=15)
            self.assertEqual(row["attempts"], 2)
            reqs = self.sent(jid)
            self.assertEqual([r.status for r in reqs], [429, 200])
            gap = reqs[1].started - reqs[0].started
            # Retry-After: 1 s (and 30 s capped to 1 s) instead of a 25-50 ms backoff.
            self.assertGreaterEqual(gap, 1.0, jid)
            self.assertLessEqual(gap, 1.0 + HOP_SLACK, jid)
            logs = harness.job_logs(self.db, jid)
            self.assertIn(429, [l["status_code"] for l in logs])

    def test_redirect_is_not_followed(self):
        name = self.job_name("redirect", "/redirect", max_retries=0)
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "failed")
        self.assertEqual(row["last_status"], 302)
        self.assertIn("redirect", row["last_error"])
        self.assertEqual(len(self.ep.requests(path="/redirect")), 1)
        self.assertEqual(self.ep.requests(path="/ok"), [], "the Location was not requested")

    def test_huge_response_is_cut_without_holding_it_in_memory(self):
        mb = 50
        name = self.job_name("huge", "/huge?mb=%d" % mb)
        pid = harness.worker_status(self.db)["pid"]
        status = "/proc/%d/status" % pid

        def kb(field):
            with open(status) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
            raise AssertionError("no %s in %s" % (field, status))

        try:  # reset the worker's peak resident size to its current size
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")
        except OSError as exc:
            self.skipTest("cannot reset the worker's peak RSS: %s" % exc)
        before = kb("VmRSS")
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "completed", timeout=60)
        self.assertEqual(harness.worker_status(self.db)["pid"], pid, "the worker survived")
        self.assertEqual(row["last_status"], 200)
        self.assertIsNone(row["response"], "a body beyond the cap is not stored")
        [req] = self.sent(jid)
        self.assertEqual(req.status, 200)
        growth_kb = kb("VmHWM") - before
        self.assertLess(growth_kb, mb * 1024 // 5,
                        "the worker's peak RSS grew by %d kB for a %d MB body" % (growth_kb, mb))

    def test_connection_reset_is_recorded_and_retried(self):
        name = self.job_name("reset", "/reset", max_retries=1, retry_backoff="100 ms")
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "failed", timeout=15)
        self.assertEqual(row["attempts"], 2)
        self.assertIsNone(row["last_status"])
        self.assertTrue(row["last_error"], "a connection error is recorded")
        self.assertFalse(row["last_error"].startswith("HTTP"), row["last_error"])
        self.assertEqual([r.attempt for r in self.sent(jid)], [1, 2])
        messages = [l["log_message"] for l in harness.job_logs(self.db, jid)]
        self.assertTrue(any(m.startswith("attempt 1 failed: ") and "next attempt at" in m
                            for m in messages), messages)

    def test_timeout_fails_the_attempt(self):
        name = self.job_name("timeout", "/slow?ms=2000", timeout="300 ms", max_retries=0)
        jid = self.queue(name, user(1))
        row = wait_job_state(self.db, jid, "failed", timeout=15)
        self.assertIsNone(row["last_status"])
        self.assertRegex(row["last_error"], r"(?i)time")
        took = (row["finished_at"] - row["last_run_at"]).total_seconds()
        self.assertLess(took, 1.5, "the attempt was cut at its timeout")
        [req] = self.sent(jid)
        self.assertLessEqual(req.claims["exp"] - req.claims["iat"], 1 + 60,
                             "the token outlives the attempt by at most a minute")

    def test_disabled_job_name_dispatches_nothing_until_enabled(self):
        # A long poll: only the wake-up at the enabling commit can explain a
        # prompt delivery.
        self.set_setting("jobrunner.poll_interval", "10s")
        name = self.job_name("disabled", "/ok", enabled=False)
        jid = self.queue(name, user(1))
        harness.wait_worker_loops(self.db, 1)  # woken by the commit, it looked
        row = harness.job(self.db, jid)
        self.assertEqual((row["state"], row["attempts"]), ("pending", 0))
        self.assertEqual(self.ep.requests(), [], "nothing sent while disabled")
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET enabled = true WHERE job_name = %s",
                        (name,))
        enabled = time.time()
        [req] = self.ep.wait_for_requests(1, timeout=5, correlation_id=jid)
        self.assertLess(req.time - enabled, 1.0,
                        "sent %.3fs after the job name was enabled" % (req.time - enabled))
        wait_job_state(self.db, jid, "completed", timeout=10)
        self.assertEqual(len(self.sent(jid)), 1)

    def test_delayed_job_is_not_sent_before_run_at(self):
        name = self.job_name("delayed", "/ok")
        jid = scalar(self.db, "SELECT jobrunner.queue_job_for(%s, 'authenticated', NULL, %s, "
                                "'{}', _run_at => now() + interval '1 second')::text",
                     (str(uuid.uuid4()), name))
        run_at = harness.job(self.db, jid)["next_run_at"].timestamp()
        wait_job_state(self.db, jid, "completed", timeout=10)
        [req] = self.sent(jid)
        self.assertGreaterEqual(req.time, run_at, "sent before run_at")
        self.assertLessEqual(req.time, run_at + HOP_SLACK, "the worker woke up late")

    def test_higher_priority_first_within_a_job_name(self):
        name = self.job_name("priority", "/ok", concurrency_limit=1)
        owner = user(1)
        priorities = [3, 0, 7, 1, 5, -2, 9]
        tx = harness.connect(autocommit=False)
        try:
            ids = {harness.queue_for(tx, *owner, name, {"p": p}, priority=p): p
                   for p in priorities}
            tx.commit()
        finally:
            tx.close()
        self.wait_all(name, len(priorities))
        order = [ids[r.correlation_id]
                 for r in sorted(self.ep.requests(job_name=name), key=lambda r: r.started)]
        self.assertEqual(order, sorted(priorities, reverse=True))

    def test_commit_wakes_the_worker_without_waiting_for_the_poll(self):
        self.set_setting("jobrunner.poll_interval", "10s")
        self.assertEqual(scalar(self.db, "SHOW jobrunner.poll_interval"), "10s")
        name = self.job_name("wake", "/ok")
        owner = user(1)
        tx = harness.connect(autocommit=False)
        self.addCleanup(tx.close)
        for i in range(5):
            jid = harness.queue_for(tx, *owner, name, {"i": i})
            committed = time.time()
            tx.commit()
            [req] = self.ep.wait_for_requests(1, timeout=5, correlation_id=jid)
            self.assertLess(req.time - committed, 0.2,
                            "job %d reached the endpoint %.3fs after commit" % (
                                i, req.time - committed))
            wait_job_state(self.db, jid, "completed")

    def test_rollback_queues_and_sends_nothing(self):
        name = self.job_name("rollback", "/ok")
        owner = user(1)
        tx = harness.connect(autocommit=False)
        try:
            gone = harness.queue_for(tx, *owner, name, {"rolled": "back"})
            tx.rollback()
        finally:
            tx.close()
        self.assertIsNone(harness.job(self.db, gone))
        self.assertEqual(harness.job_logs(self.db, gone), [])
        kept = self.queue(name, owner, {"kept": True})
        wait_job_state(self.db, kept, "completed")
        harness.wait_worker_loops(self.db, 2)
        self.assertEqual([r.correlation_id for r in self.ep.requests()], [kept])

    def test_worker_status_reports_the_running_worker_and_its_counts(self):
        before = harness.worker_status(self.db)
        self.assertTrue(before["running"])
        self.assertEqual(before["pid"], harness.worker_pid(self.db))
        self.assertEqual(before["database_name"], scalar(self.db, "SELECT current_database()"))
        self.assertIsNotNone(before["started_at"])
        ok = self.job_name("status_ok", "/ok")
        bad = self.job_name("status_bad", "/fail", max_retries=0)
        ids = [self.queue(ok, user(i)) for i in range(4)]
        failing = self.queue(bad, user(9))
        for jid in ids:
            wait_job_state(self.db, jid, "completed")
        wait_job_state(self.db, failing, "failed")
        after = wait_for(lambda: (lambda s: s if s["in_flight"] == 0 else None)(
            harness.worker_status(self.db)), 10, message="in_flight back to 0")
        self.assertEqual(after["pid"], before["pid"])
        self.assertEqual(after["started_at"], before["started_at"])
        self.assertGreaterEqual(after["dispatched"] - before["dispatched"], 5)
        self.assertGreaterEqual(after["completed"] - before["completed"], 4)
        self.assertGreaterEqual(after["failed"] - before["failed"], 1)
        self.assertGreater(after["last_loop_at"], before["last_loop_at"])


if __name__ == "__main__":
    unittest.main()
