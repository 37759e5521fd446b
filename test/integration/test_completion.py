"""test_completion.py — completion in the caller's transaction, against the
real worker and a real HTTP endpoint.

completion = 'response': an on_complete hook writes a domain row in the same
transaction as the completion, so the row exists if and only if the job is
completed; a raising hook undoes both and the attempt is retried; the hook
sees the job user's request.jwt.claims; on_fail runs once the job fails for
good; hook validation refuses a wrong signature.

completion = 'callback': a 2xx only acknowledges; an endpoint-like session
writes its own row and calls complete_job in one transaction (commit: both,
rollback: neither); complete_job is fenced by _attempt; fail_job retries; an
expired callback lease fails the attempt; and complete_job works through a
PostgREST-like identity (authenticator -> SET ROLE authenticated + claims).
"""

import json
import threading
import unittest

import psycopg2
import psycopg2.errors
from psycopg2.extras import Json

import harness
from harness import connect, job, new_user, pretty, query, queue_for
from harness import wait_for, wait_job_state

ROLE = "authenticated"
RECEIPT_HOOK = "it_completion.write_receipt(jobrunner.job)"
FAILURE_HOOK = "it_completion.note_failure(jobrunner.job)"

SETUP_SQL = """
CREATE SCHEMA it_completion;
-- The domain rows a completion writes.
CREATE TABLE it_completion.receipt (
    job_id    uuid PRIMARY KEY,
    job_state text,
    claims    jsonb
);
-- Jobs whose on_complete hook raises (after writing its receipt).
CREATE TABLE it_completion.refuse (job_id uuid PRIMARY KEY);
-- What on_fail saw.
CREATE TABLE it_completion.failure (
    job_id     uuid,
    job_state  text,
    attempts   int,
    last_error text,
    claims     jsonb
);
-- Rows an endpoint writes in the same transaction as complete_job.
CREATE TABLE it_completion.delivery (
    job_id  uuid PRIMARY KEY,
    attempt int,
    note    text
);

CREATE FUNCTION it_completion.write_receipt(j jobrunner.job) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO it_completion.receipt (job_id, job_state, claims)
    VALUES (j.id, j.state, pg_catalog.current_setting('request.jwt.claims', true)::jsonb);
    IF EXISTS (SELECT 1 FROM it_completion.refuse r WHERE r.job_id = j.id) THEN
        RAISE EXCEPTION 'receipt refused for job %', j.id;
    END IF;
END $$;

CREATE FUNCTION it_completion.note_failure(j jobrunner.job) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO it_completion.failure (job_id, job_state, attempts, last_error, claims)
    VALUES (j.id, j.state, j.attempts, j.last_error,
            pg_catalog.current_setting('request.jwt.claims', true)::jsonb);
END $$;

-- Wrong shapes for a hook.
CREATE FUNCTION it_completion.takes_int(x int) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION it_completion.takes_two(j jobrunner.job, x int) RETURNS void
    LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE it_completion.a_procedure(j jobrunner.job) LANGUAGE sql AS $$ SELECT $$;

-- PostgREST's roles come from test/lib/roles.sql; this one is the file's own.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'it_completion_plain') THEN
        CREATE ROLE it_completion_plain LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA it_completion TO authenticated;
GRANT INSERT, SELECT ON it_completion.delivery TO authenticated;
"""


class CompletionBase(harness.JobrunnerTestCase):
    """The schema it_completion, made once for the class."""

    prefix = "it.completion"
    job_columns = {"concurrency_limit": 10}

    @classmethod
    def setUpClass(cls):
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA IF EXISTS it_completion CASCADE")
                cur.execute(SETUP_SQL)
        finally:
            conn.close()

    @classmethod
    def tearDownClass(cls):
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA IF EXISTS it_completion CASCADE")
                cur.execute("DROP ROLE IF EXISTS it_completion_plain")
        finally:
            conn.close()

    def complete(self, job_id, result=None, attempt=None, conn=None):
        """jobrunner.complete_job; returns its boolean."""
        return self.value("SELECT jobrunner.complete_job(%s, %s, _attempt => %s)",
                          job_id, None if result is None else Json(result), attempt, conn=conn)

    def fail_job(self, job_id, error, attempt=None, retry=True, conn=None):
        """jobrunner.fail_job; returns its boolean."""
        return self.value("SELECT jobrunner.fail_job(%s, %s, _retry => %s, _attempt => %s)",
                          job_id, error, retry, attempt, conn=conn)

    def rows_of(self, table, job_id):
        """How many rows of it_completion.<table> belong to job_id."""
        return self.value("SELECT count(*) FROM it_completion.%s WHERE job_id = %%s" % table,
                          job_id)

    def state(self, job_id):
        return job(self.db, job_id)["state"]

    def logs(self, job_id):
        """The job's log rows in the order they were written (created_at is
        when each writing transaction began, which can differ)."""
        return query(self.db, "SELECT * FROM jobrunner.job_logs WHERE job_id = %s ORDER BY id",
                     (job_id,))

    def logs_text(self, job_id):
        return "\n".join("%s %s" % (entry["attempt"], entry["log_message"])
                         for entry in self.logs(job_id))

    def wait_acked(self, job_id, attempt, timeout=15.0):
        """Wait until attempt `attempt` of a callback job is acknowledged (still running)."""
        def check():
            row = job(self.db, job_id)
            return row if (row["state"] == "running" and row["attempts"] == attempt
                           and row["acked_at"] is not None) else None
        try:
            return wait_for(check, timeout)
        except AssertionError:
            raise AssertionError("job %s attempt %d was not acknowledged: %s\n%s" % (
                job_id, attempt, pretty(job(self.db, job_id)), self.logs_text(job_id)))


class HookTest(CompletionBase):
    """completion = 'response' with on_complete / on_fail hooks."""

    def test_receipt_exists_iff_job_completed(self):
        ok = self.job_name("ok", "/slow?ms=30", concurrency_limit=4, on_complete=RECEIPT_HOOK)
        bad = self.job_name("bad", "/fail", max_retries=0, on_complete=RECEIPT_HOOK)
        users = [new_user() for _ in range(3)]
        ids = {}
        for i in range(24):
            user, name = users[i % 3], (ok if i % 4 else bad)
            job_id = queue_for(self.db, user, ROLE, "u%d@example.com" % (i % 3), name, {"n": i})
            ids[job_id] = (user, name)
        system_job = queue_for(self.db, None, None, None, ok, {"n": "system"})

        # Every snapshot taken while the jobs run agrees: a receipt iff completed.
        snapshots = 0

        def all_final():
            nonlocal snapshots
            row = query(self.db, """
                SELECT count(*) FILTER (WHERE (j.state = 'completed') <> (r.job_id IS NOT NULL))
                           AS disagree,
                       count(*) FILTER (WHERE j.state IN ('pending', 'running')) AS active
                  FROM jobrunner.job j LEFT JOIN it_completion.receipt r ON r.job_id = j.id
                 WHERE j.job_name IN (%s, %s)""", (ok, bad))[0]
            snapshots += 1
            self.assertEqual(row["disagree"], 0, "a receipt without completion or the reverse")
            return row["active"] == 0

        wait_for(all_final, 30, message="jobs did not all finish")
        self.assertGreater(snapshots, 1)

        rows = {r["id"]: r for r in query(self.db, """
            SELECT j.id::text, j.state, r.job_state, r.claims
              FROM jobrunner.job j LEFT JOIN it_completion.receipt r ON r.job_id = j.id
             WHERE j.job_name IN (%s, %s)""", (ok, bad))}
        self.assertEqual(len(rows), 25)
        for job_id, (user, name) in ids.items():
            r = rows[job_id]
            if name == ok:
                self.assertEqual(r["state"], "completed", job_id)
                self.assertEqual(r["job_state"], "completed", "the hook sees the completed row")
                self.assertEqual(r["claims"]["sub"], user)
                self.assertEqual(r["claims"]["role"], ROLE)
            else:
                self.assertEqual(r["state"], "failed", job_id)
                self.assertIsNone(r["claims"], "no receipt for a failed job")
        # A system job's hook sees the system role and no sub.
        r = rows[system_job]
        self.assertEqual(r["state"], "completed")
        self.assertNotIn("sub", r["claims"])
        self.assertEqual(r["claims"]["role"],
                         self.value("SELECT current_setting('jobrunner.system_role')"))
        self.ep.assert_no_violations()

    def test_raising_hook_undoes_completion_and_is_retried(self):
        name = self.job_name("raise", "/ok", max_retries=5, retry_backoff="200 ms",
                             retry_backoff_max="1 second", on_complete=RECEIPT_HOOK)
        # The job and its "refuse" flag commit together, before any attempt.
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        job_id = queue_for(tx, new_user(), ROLE, None, name, {"n": 1})
        with tx.cursor() as cur:
            cur.execute("INSERT INTO it_completion.refuse VALUES (%s)", (job_id,))
        tx.commit()

        def first_attempt_failed():
            row = job(self.db, job_id)
            return row if row["attempts"] >= 1 and row["last_error"] else None

        row = wait_for(first_attempt_failed, 15, message="the first attempt was not recorded")
        self.assertNotEqual(row["state"], "completed")
        self.assertIn("on_complete hook", row["last_error"])
        self.assertIn("receipt refused for job %s" % job_id, row["last_error"])
        self.assertEqual(row["last_status"], 200, "the endpoint answered 200; the hook failed")
        self.assertEqual(self.rows_of("receipt", job_id), 0, "the raising hook's row stayed")
        logs = self.logs_text(job_id)
        self.assertRegex(logs, r"1 attempt 1 failed: on_complete hook .*write_receipt.* "
                               r"failed: receipt refused")
        self.assertNotIn("completed", logs)

        # The hook stops raising: a later attempt completes, with one receipt.
        with self.db.cursor() as cur:
            cur.execute("DELETE FROM it_completion.refuse WHERE job_id = %s", (job_id,))
        row = wait_job_state(self.db, job_id, "completed", timeout=20)
        self.assertGreaterEqual(row["attempts"], 2)
        self.assertIsNone(row["last_error"])
        self.assertEqual(self.rows_of("receipt", job_id), 1)
        seen = [r.attempt for r in self.ep.requests(correlation_id=job_id)]
        self.assertEqual(seen, list(range(1, row["attempts"] + 1)), "one request per attempt")
        last = self.logs(job_id)[-1]
        self.assertEqual((last["attempt"], last["log_message"]),
                         (row["attempts"], "completed with status 200"))

    def test_on_fail_runs_once_when_the_job_fails_for_good(self):
        name = self.job_name("onfail", "/fail", max_retries=2, retry_backoff="50 ms",
                             retry_backoff_max="200 ms", on_fail=FAILURE_HOOK)
        user = new_user()
        job_id = queue_for(self.db, user, ROLE, "f@example.com", name)
        row = wait_job_state(self.db, job_id, "failed", timeout=20)
        self.assertEqual(row["attempts"], 3)
        self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 3)
        notes = query(self.db, "SELECT * FROM it_completion.failure WHERE job_id = %s", (job_id,))
        self.assertEqual(len(notes), 1, "on_fail runs once, not on the retried attempts")
        note = notes[0]
        self.assertEqual((note["job_state"], note["attempts"]), ("failed", 3))
        self.assertIn("500", note["last_error"])
        self.assertEqual(note["claims"], {"sub": user, "role": ROLE, "email": "f@example.com"})
        self.assertIn("failed permanently", self.logs_text(job_id))

    def test_hook_with_the_wrong_signature_is_refused(self):
        name = self.job_name("sig", "/ok")
        for column in ("on_complete", "on_fail"):
            for hook in ("it_completion.takes_int(int)",
                         "it_completion.takes_two(jobrunner.job,int)",
                         "it_completion.a_procedure(jobrunner.job)"):
                with self.subTest(column=column, hook=hook):
                    with self.assertRaises(psycopg2.errors.InvalidFunctionDefinition) as ctx:
                        with self.db.cursor() as cur:
                            cur.execute("UPDATE jobrunner.job_config SET %s = %%s::regprocedure "
                                        "WHERE job_name = %%s" % column, (hook, name))
                    self.assertIn("must be a function taking one jobrunner.job", str(ctx.exception))
                    self.assertIn(name, str(ctx.exception))
        self.assertIsNone(self.value("SELECT coalesce(on_complete, on_fail) "
                                     "FROM jobrunner.job_config WHERE job_name = %s", name))
        # The right shape is accepted.
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET on_complete = %s, on_fail = %s "
                        "WHERE job_name = %s", (RECEIPT_HOOK, FAILURE_HOOK, name))


class CallbackTest(CompletionBase):
    """completion = 'callback': the endpoint finishes the job itself."""

    def callback_job(self, what, **columns):
        columns.setdefault("callback_lease", "1 hour")
        return self.job_name(what, "/callback", completion="callback", **columns)

    def queue_acked(self, name, user=None):
        """Queue a job and wait until the endpoint has acknowledged attempt 1."""
        user = user or new_user()
        job_id = queue_for(self.db, user, ROLE, None, name)
        rec = self.ep.next_callback(timeout=15)
        self.assertEqual((rec.correlation_id, rec.attempt, rec.sub), (job_id, 1, user))
        return job_id, self.wait_acked(job_id, 1)

    def test_acked_job_stays_running_and_complete_job_commits_with_own_rows(self):
        name = self.callback_job("cb")
        job_id, row = self.queue_acked(name)
        self.assertEqual(row["last_status"], 202)
        self.assertIsNone(row["finished_at"])
        self.assertIn("acknowledged with status 202", self.logs_text(job_id))

        # The endpoint's session: its own row and complete_job in one transaction.
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        with tx.cursor() as cur:
            cur.execute("INSERT INTO it_completion.delivery VALUES (%s, 1, 'delivered')", (job_id,))
        self.assertIs(self.complete(job_id, {"pages": 2}, attempt=1, conn=tx), True)
        # Not committed yet: others see neither.
        self.assertEqual(self.state(job_id), "running")
        self.assertEqual(self.rows_of("delivery", job_id), 0)
        tx.commit()
        row = job(self.db, job_id)
        self.assertEqual((row["state"], row["response"]), ("completed", {"pages": 2}))
        self.assertIsNotNone(row["finished_at"])
        self.assertEqual(self.rows_of("delivery", job_id), 1)
        self.assertIn("completed by complete_job", self.logs_text(job_id))

        # A second call changes nothing.
        self.assertIs(self.complete(job_id, {"again": 1}), False)
        self.assertIs(self.fail_job(job_id, "too late"), False)
        row = job(self.db, job_id)
        self.assertEqual((row["state"], row["response"]), ("completed", {"pages": 2}))
        self.assertEqual(len(self.ep.requests(correlation_id=job_id)), 1)
        self.ep.assert_no_violations()

    def test_rolled_back_complete_job_leaves_neither(self):
        job_id, _ = self.queue_acked(self.callback_job("cbrb"))
        tx = connect(autocommit=False)
        self.addCleanup(tx.close)
        with tx.cursor() as cur:
            cur.execute("INSERT INTO it_completion.delivery VALUES (%s, 1, 'rolled back')",
                        (job_id,))
        self.assertIs(self.complete(job_id, attempt=1, conn=tx), True)
        tx.rollback()
        row = job(self.db, job_id)
        self.assertEqual(row["state"], "running")
        self.assertIsNotNone(row["acked_at"])
        self.assertEqual(self.rows_of("delivery", job_id), 0)
        self.assertNotIn("completed", self.logs_text(job_id))
        # Still completable afterwards.
        self.assertIs(self.complete(job_id, attempt=1), True)
        self.assertEqual(self.state(job_id), "completed")

    def test_stale_attempt_is_refused_and_fail_job_retries(self):
        name = self.callback_job("cbfail", retry_backoff="100 ms", retry_backoff_max="200 ms",
                                 max_retries=2)
        job_id, _ = self.queue_acked(name)
        # A complete_job for an attempt that is not the current one is refused.
        self.assertIs(self.complete(job_id, attempt=2), False)
        self.assertIs(self.complete(job_id, attempt=0), False)
        self.assertEqual(self.state(job_id), "running")

        # fail_job: the attempt fails and the job is dispatched again.
        self.assertIs(self.fail_job(job_id, "printer on fire", attempt=1), True)
        rec = self.ep.next_callback(timeout=15)
        self.assertEqual((rec.correlation_id, rec.attempt), (job_id, 2))
        self.wait_acked(job_id, 2)
        logs = self.logs_text(job_id)
        self.assertIn("attempt 1 failed: printer on fire", logs)
        self.assertIn("started attempt 2", logs)
        # The first attempt's late answer changes nothing; the second completes.
        self.assertIs(self.complete(job_id, attempt=1), False)
        self.assertIs(self.fail_job(job_id, "late", attempt=1), False)
        self.assertEqual(self.state(job_id), "running")
        self.assertIs(self.complete(job_id, attempt=2), True)
        row = job(self.db, job_id)
        self.assertEqual((row["state"], row["attempts"]), ("completed", 2))

        # fail_job without retry fails the job for good.
        job2, _ = self.queue_acked(name)
        self.assertIs(self.fail_job(job2, "give up", retry=False), True)
        row = job(self.db, job2)
        self.assertEqual((row["state"], row["attempts"], row["last_error"]),
                         ("failed", 1, "give up"))

    def test_expired_lease_fails_the_attempt_and_the_job_is_sent_again(self):
        name = self.callback_job("cblease", callback_lease="1 second", retry_backoff="100 ms",
                                 retry_backoff_max="200 ms", max_retries=3)
        job_id, row = self.queue_acked(name)
        lease = (row["lease_expires_at"] - row["acked_at"]).total_seconds()
        self.assertAlmostEqual(lease, 1.0, delta=0.01)
        # Attempt 1's lease was fixed when it was acknowledged; attempt 2 gets
        # a long one, so the test does not race it.
        with self.db.cursor() as cur:
            cur.execute("UPDATE jobrunner.job_config SET callback_lease = '1 hour' "
                        "WHERE job_name = %s", (name,))
        rec = self.ep.next_callback(timeout=15)
        self.assertEqual((rec.correlation_id, rec.attempt), (job_id, 2))
        # Attempt 2 was dispatched only after attempt 1's lease ran out.
        first = self.ep.requests(correlation_id=job_id)[0]
        self.assertGreaterEqual(rec.time - first.time, 1.0)
        self.wait_acked(job_id, 2)
        self.assertRegex(self.logs_text(job_id),
                         r"1 attempt 1 failed: no complete_job within the callback lease")
        self.assertIs(self.complete(job_id, attempt=1), False)
        self.assertEqual(self.state(job_id), "running")
        self.assertIs(self.complete(job_id, {"n": 2}, attempt=2), True)
        row = job(self.db, job_id)
        self.assertEqual((row["state"], row["attempts"], row["response"]),
                         ("completed", 2, {"n": 2}))

    def test_endpoint_completes_before_its_202_is_recorded(self):
        # The endpoint finishes the job from its request handler, possibly
        # before the worker has recorded the 202: the job stays completed.
        name = self.callback_job("cbfast")
        results = {}
        done = threading.Event()

        def on_callback(rec):
            try:
                conn = connect(autocommit=False)
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO it_completion.delivery "
                                    "VALUES (%s, %s, 'from handler')",
                                    (rec.correlation_id, rec.attempt))
                    results[rec.correlation_id] = self.complete(
                        rec.correlation_id, attempt=rec.attempt, conn=conn)
                    conn.commit()
                finally:
                    conn.close()
            except Exception as exc:  # reported by the test thread
                results[rec.correlation_id] = exc
            finally:
                if len(results) >= 5:
                    done.set()

        self.ep.on_callback = on_callback
        ids = [queue_for(self.db, new_user(), ROLE, None, name, {"n": i}) for i in range(5)]
        self.assertTrue(done.wait(20), "the endpoint did not see all five jobs: %r" % results)
        self.assertEqual(results, {i: True for i in ids})
        # The worker got the five 202s before this marker job's 200: once the
        # marker is recorded, so are they. None may have turned a completed
        # job back into an acknowledged, running one.
        marker = queue_for(self.db, None, None, None, self.job_name("marker", "/ok"))
        wait_job_state(self.db, marker, "completed", timeout=15)
        for i in ids:
            row = job(self.db, i)
            self.assertEqual(row["state"], "completed", i)
            self.assertIsNone(row["lease_expires_at"], i)
            # The 202 may be recorded before the completion, never after it.
            messages = [entry["log_message"] for entry in self.logs(i)]
            self.assertEqual(messages[-1], "completed by complete_job", messages)
            self.assertEqual(self.rows_of("delivery", i), 1)


class PostgrestIdentityTest(CompletionBase):
    """complete_job as PostgREST calls it: login authenticator, SET ROLE
    authenticated, request.jwt.claims with the user's sub."""

    def as_user(self, sub, login="authenticator", claims=None):
        """A connection as PostgREST makes one for a request with sub's JWT
        (in an open transaction, as PostgREST runs each request); claims:
        the whole JWT payload PostgREST verified, when not just sub and role."""
        conn = connect(user=login, autocommit=False)
        self.addCleanup(conn.close)
        with conn.cursor() as cur:
            if login == "authenticator":
                cur.execute("SET LOCAL ROLE authenticated")
            cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps(claims or {"sub": sub, "role": ROLE}),))
        return conn

    def acked_job(self, owner):
        """A callback job of owner's, acknowledged; and the request the
        endpoint received for it."""
        name = self.job_name("rest", "/callback", completion="callback", callback_lease="1 hour")
        job_id = queue_for(self.db, owner, ROLE, None, name)
        request = self.ep.next_callback(timeout=15)
        self.wait_acked(job_id, 1)
        return job_id, request

    def test_endpoint_completes_the_owner_cannot_another_user_gets_not_found(self):
        owner = new_user()
        job_id, request = self.acked_job(owner)

        # Another user: not found, whatever it tries; nothing changes.
        for call in (lambda conn: self.complete(job_id, conn=conn),
                     lambda conn: self.fail_job(job_id, "not mine", conn=conn)):
            other = self.as_user(new_user())
            with self.assertRaises(psycopg2.errors.NoDataFound) as ctx:
                call(other)
            self.assertIn("job %s not found" % job_id, str(ctx.exception))
            other.rollback()
        self.assertEqual(self.state(job_id), "running")

        # The owner with her own token sees her job but cannot forge its
        # outcome, either way.
        for call in (lambda conn: self.complete(job_id, {"paid": True}, conn=conn),
                     lambda conn: self.fail_job(job_id, "forged", conn=conn)):
            mine = self.as_user(owner)
            self.assertEqual(self.value("SELECT count(*) FROM jobrunner.job WHERE id = %s", job_id,
                                        conn=mine), 1, "the owner sees its job (RLS)")
            with self.assertRaises(psycopg2.errors.InsufficientPrivilege) as ctx:
                call(mine)
            self.assertIn("token minted for its attempt", str(ctx.exception))
            mine.rollback()
        self.assertEqual(self.state(job_id), "running")

        # The endpoint, with the token it was sent: its own row and the
        # completion, in its transaction.
        claims = request.claims  # verified by the endpoint
        self.assertEqual(claims["job"], {"id": job_id, "name": claims["job"]["name"], "attempt": 1})
        self.assertEqual(claims["jti"], "%s/1" % job_id)
        endpoint = self.as_user(owner, claims=claims)
        self.assertEqual(self.value("SELECT (current_user, session_user)::text", conn=endpoint),
                         "(authenticated,authenticator)")
        with endpoint.cursor() as cur:
            cur.execute("INSERT INTO it_completion.delivery VALUES (%s, 1, 'via postgrest')",
                        (job_id,))
        self.assertIs(self.complete(job_id, {"via": "rest"}, attempt=1, conn=endpoint), True)
        endpoint.commit()
        row = job(self.db, job_id)
        self.assertEqual((row["state"], row["response"]), ("completed", {"via": "rest"}))
        self.assertEqual(self.rows_of("delivery", job_id), 1)

    def test_untrusted_login_role_cannot_borrow_the_owners_claims(self):
        # The owner's claims, set by a login role that is not trusted, are not
        # believed: the job is "not found".
        owner = new_user()
        job_id, _ = self.acked_job(owner)
        conn = self.as_user(owner, login="it_completion_plain")
        with self.assertRaises(psycopg2.errors.NoDataFound):
            self.complete(job_id, conn=conn)
        conn.rollback()
        self.assertEqual(self.state(job_id), "running")
        self.assertIs(self.complete(job_id), True)


if __name__ == "__main__":
    unittest.main()
