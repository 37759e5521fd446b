"""test_trust_escalation.py — the superuser worker lends its rights to nobody.

The worker runs as the bootstrap superuser. Three ways a less privileged role
could borrow that, each tried against the real worker, and each refused:

1. Name resolution. A non-superuser who may create objects in the database
   plants look-alikes of the functions and operators the worker's own
   statements use (make_interval, ceil, clock_timestamp, `*`) in public and
   in a schema named after the worker's user ("$user" in a default
   search_path). The worker purges and computes wake-ups for dated jobs; no
   planted object is ever called, and the planter stays a plain role.
2. Security-restricted operations. A table owner's index expression runs on
   her behalf when autovacuum, or a superuser, analyzes her table: inside it
   she sets alice's claims and tries to queue, look at and finish alice's
   jobs. Claims set there are not believed and nobody is an admin: every
   attempt is refused and nothing changes.
3. Hooks. A completion hook (on_complete or on_fail) runs as its function's
   owner, in a security-restricted operation, with the job user's claims:
   the superuser worker calling it grants the owner nothing.

Each test says in its docstring why it fails on a version without the
defence. Every role, schema, function and table made here is dropped
afterwards, whatever the outcome.
"""

import json
import unittest
import uuid

from psycopg2 import sql

import harness
from harness import connect, job, query, queue_for
from harness import scalar, wait_for, wait_job_state

APPOWNER = "jr_appowner"
MALLORY = "mallory"
USER_ROLE = "authenticated"
HOOK = "public.escalating_hook(jobrunner.job)"
# Worker statements before 0.2.0 (unqualified, default search_path): run in
# a rolled-back transaction, they show that the planted objects would catch
# a worker that resolved names this way.
UNQUALIFIED_PURGE_ARGUMENT = "SELECT make_interval(secs => 604800)"
UNQUALIFIED_WAKEUP = ("SELECT GREATEST(0, ceil(EXTRACT(epoch FROM now() + interval '1 minute'"
                      " - clock_timestamp()) * 1000))::bigint")

# --- objects the planter owns ---------------------------------------------

# What a planted object records when it is called, and its escalation try.
PLANT_RECORDER_SQL = """
CREATE TABLE public.planted_calls (
    planted   text,     -- which planted object ran
    called_as text,     -- current_user when it ran
    escalated boolean   -- whether its ALTER ROLE ... SUPERUSER went through
);
GRANT INSERT, SELECT ON public.planted_calls TO PUBLIC;

CREATE FUNCTION public.planted_alarm(_planted text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _escalated boolean := false;
BEGIN
    BEGIN
        ALTER ROLE jr_appowner SUPERUSER;
        _escalated := true;
    EXCEPTION WHEN others THEN
        NULL;
    END;
    INSERT INTO public.planted_calls VALUES (_planted, current_user, _escalated);
END $$;
"""

# The look-alikes, for one schema ({s}): each records its call, then answers
# what pg_catalog's original would, so a hijacked worker keeps working.
PLANTS_SQL = """
CREATE FUNCTION {s}.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.make_interval(integer)');
    RETURN pg_catalog.make_interval(secs => $1);
END $$;
CREATE FUNCTION {s}.make_interval(secs double precision) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.make_interval(double precision)');
    RETURN pg_catalog.make_interval(secs => $1);
END $$;
CREATE FUNCTION {s}.planted_times_numeric(numeric, integer) RETURNS numeric
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.*(numeric, integer)');
    RETURN $1 OPERATOR(pg_catalog.*) $2;
END $$;
CREATE OPERATOR {s}.* (LEFTARG = numeric, RIGHTARG = integer,
                       FUNCTION = {s}.planted_times_numeric);
CREATE FUNCTION {s}.planted_times_float(double precision, integer) RETURNS double precision
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.*(double precision, integer)');
    RETURN $1 OPERATOR(pg_catalog.*) $2;
END $$;
CREATE OPERATOR {s}.* (LEFTARG = double precision, RIGHTARG = integer,
                       FUNCTION = {s}.planted_times_float);
CREATE FUNCTION {s}.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.clock_timestamp()');
    RETURN pg_catalog.clock_timestamp();
END $$;
CREATE FUNCTION {s}.ceil(numeric) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.ceil(numeric)');
    RETURN pg_catalog.ceil($1);
END $$;
CREATE FUNCTION {s}.ceil(double precision) RETURNS double precision LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.planted_alarm('{s}.ceil(double precision)');
    RETURN pg_catalog.ceil($1);
END $$;
"""

# The hook and what it saw. Every name is qualified: the hook runs with the
# search_path of jobrunner._call_hook (pg_catalog, pg_temp).
HOOK_SQL = """
CREATE TABLE public.hook_calls (
    job_id     uuid,
    job_state  text,
    called_as  text,
    claims     text,
    claim_sub  text,
    alter_role text     -- 'succeeded', or the SQLSTATE it raised
);
CREATE FUNCTION public.escalating_hook(j jobrunner.job) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    _alter text;
BEGIN
    BEGIN
        ALTER ROLE jr_appowner SUPERUSER;
        _alter := 'succeeded';
    EXCEPTION WHEN others THEN
        _alter := SQLSTATE;
    END;
    INSERT INTO public.hook_calls
    VALUES (j.id, j.state, current_user,
            pg_catalog.current_setting('request.jwt.claims', true),
            pg_catalog.current_setting('request.jwt.claim.sub', true),
            _alter);
END $$;
"""

# --- objects mallory owns -------------------------------------------------

# An innocent-looking expression index whose IMMUTABLE function calls a
# VOLATILE one that tries, with alice's claims, to act on alice's jobs, and
# logs every answer. Mallory's own writes evaluate the index too: the attack
# acts only when run on someone else's behalf (session_user differs).
MALLORY_SQL = """
CREATE TABLE it_mallory.target (
    alice       uuid,
    job_name    text,   -- a configured job name to queue under
    pending_job uuid,   -- alice's, to dequeue
    running_job uuid    -- alice's, to complete
);
CREATE TABLE it_mallory.attempt_log (
    pid           int,
    session_login text,
    acting_as     text,
    attempt       text,
    outcome       text,  -- a SQLSTATE, or what the call returned
    message       text
);

CREATE FUNCTION it_mallory.note(_attempt text, _outcome text, _message text) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO it_mallory.attempt_log
    VALUES (pg_catalog.pg_backend_pid(), session_user, current_user, _attempt, _outcome, _message);
$$;

CREATE FUNCTION it_mallory.attack() RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    _t it_mallory.target;
    _id uuid;
    _n bigint;
    _done boolean;
BEGIN
    IF session_user = current_user THEN
        RETURN;
    END IF;
    SELECT * INTO _t FROM it_mallory.target;
    PERFORM pg_catalog.set_config('request.jwt.claims',
        pg_catalog.json_build_object('sub', _t.alice, 'role', 'service_role')::text, true);
    BEGIN
        _id := jobrunner.queue_job(_t.job_name, '{"by": "mallory"}'::jsonb);
        PERFORM it_mallory.note('queue_job', 'queued ' || _id, NULL);
    EXCEPTION WHEN others THEN
        PERFORM it_mallory.note('queue_job', SQLSTATE, SQLERRM);
    END;
    BEGIN
        _id := jobrunner.queue_job_for(_t.alice, 'service_role', NULL, _t.job_name,
                                       '{"by": "mallory"}'::jsonb);
        PERFORM it_mallory.note('queue_job_for', 'queued ' || _id, NULL);
    EXCEPTION WHEN others THEN
        PERFORM it_mallory.note('queue_job_for', SQLSTATE, SQLERRM);
    END;
    BEGIN
        SELECT count(*) INTO _n FROM jobrunner.job;
        PERFORM it_mallory.note('count', _n::text, NULL);
    EXCEPTION WHEN others THEN
        PERFORM it_mallory.note('count', SQLSTATE, SQLERRM);
    END;
    BEGIN
        _done := jobrunner.complete_job(_t.running_job, '{"forged": true}'::jsonb);
        PERFORM it_mallory.note('complete_job', 'returned ' || _done, NULL);
    EXCEPTION WHEN others THEN
        PERFORM it_mallory.note('complete_job', SQLSTATE, SQLERRM);
    END;
    BEGIN
        _done := jobrunner.dequeue_job(_t.pending_job);
        PERFORM it_mallory.note('dequeue_job', 'returned ' || _done, NULL);
    EXCEPTION WHEN others THEN
        PERFORM it_mallory.note('dequeue_job', SQLSTATE, SQLERRM);
    END;
END $$;

CREATE FUNCTION it_mallory.innocent(n int) RETURNS int
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM it_mallory.attack();
    RETURN n;
END $$;

CREATE TABLE it_mallory.bait (n int)
    WITH (autovacuum_analyze_threshold = 0, autovacuum_analyze_scale_factor = 0);
CREATE INDEX bait_innocent ON it_mallory.bait ((it_mallory.innocent(n)));
"""

# What each of mallory's attempts must get: (outcome, words in the message).
REFUSALS = {
    "queue_job": ("42501", None),
    "queue_job_for": ("42501", None),
    "count": ("0", None),
    "complete_job": ("P0002", "not found"),
    "dequeue_job": ("P0002", "not found"),
}


# --- helpers ----------------------------------------------------------------

def run(conn, text, args=None):
    """Execute a statement (or a block of them) on conn."""
    with conn.cursor() as cur:
        cur.execute(text, args)


def drop_role(name):
    """Drop a role and everything it owns in the test database (and the
    grants it holds), on a fresh connection: cleanup must work even when the
    test's own connection broke."""
    conn = connect()
    try:
        if scalar(conn, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (name,)):
            run(conn, sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
            run(conn, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def restore_setting(name):
    """ALTER SYSTEM RESET name and reload, on a fresh connection (cleanup)."""
    conn = connect()
    try:
        harness.set_setting(conn, name, None, worker_loops=0)
    finally:
        conn.close()


def is_superuser(conn, name):
    """Whether role name is a superuser now (as conn sees it)."""
    return scalar(conn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (name,))


def worker_user(conn):
    """The role the worker's session runs as ("$user" in its search_path)."""
    return wait_for(lambda: scalar(conn, "SELECT usename FROM pg_catalog.pg_stat_activity "
                                         "WHERE backend_type = %s", (harness.WORKER_BACKEND_TYPE,)),
                    30, 0.05, "the worker is not in pg_stat_activity")


class TrustBase(harness.JobrunnerTestCase):
    """Roles made by login_role() are dropped with all they own afterwards."""

    prefix = "it.trust"

    def login_role(self, name):
        """A LOGIN role made for this test (dropped with all it owns afterwards),
        and a connection as it."""
        drop_role(name)  # left over by an interrupted run
        run(self.db, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        self.addCleanup(drop_role, name)
        conn = connect(user=name)
        self.addCleanup(conn.close)
        return conn

    def appowner(self):
        """jr_appowner: may create schemas in this database and objects in
        public, as an application's owner role often may."""
        conn = self.login_role(APPOWNER)
        database = scalar(self.db, "SELECT current_database()")
        run(self.db, sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(APPOWNER)))
        run(self.db, sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(APPOWNER)))
        return conn


class NameResolutionTest(TrustBase):
    """The worker's own statements resolve nothing through a schema another
    role can write."""

    def plant(self, owner_conn, schema_name):
        """Plant the look-alikes in public and in schema_name, as the owner."""
        run(owner_conn, PLANT_RECORDER_SQL)
        run(owner_conn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema_name)))
        for schema in ("public", sql.Identifier(schema_name).as_string(owner_conn)):
            run(owner_conn, PLANTS_SQL.format(s=schema))

    def planted_calls(self):
        return query(self.db, "SELECT * FROM public.planted_calls")

    def assert_plants_are_live(self):
        """The statements of a worker that resolved names through the default
        search_path call the plants (seen inside a transaction that is then
        rolled back, escalation included): the assertions below have teeth."""
        control = connect(autocommit=False)
        self.addCleanup(control.close)
        try:
            run(control, UNQUALIFIED_PURGE_ARGUMENT)
            run(control, UNQUALIFIED_WAKEUP)
            called = {r["planted"] for r in query(control, "SELECT planted FROM public.planted_calls")}
            escalated = is_superuser(control, APPOWNER)
        finally:
            control.rollback()
        self.assertTrue(any(".make_interval(integer)" in c for c in called), called)
        self.assertTrue(any(".*(numeric, integer)" in c for c in called), called)
        self.assertTrue(escalated, "a superuser calling a plant makes jr_appowner a superuser")
        self.assertEqual(self.planted_calls(), [], "the control was rolled back")
        self.assertFalse(is_superuser(self.db, APPOWNER))

    def queue_dated(self, name, seconds):
        """A system job dated `seconds` from now; its id."""
        return scalar(self.db, "SELECT jobrunner.queue_job_for(NULL, NULL, NULL, %s, '{}'::jsonb, "
                               "_run_at => now() + %s::interval)::text",
                      (name, "%s seconds" % seconds))

    def test_planted_functions_and_operators_are_never_called_by_the_worker(self):
        """The worker's purge and wake-up statements call no planted object.

        Without the defence: before 0.2.0 the worker ran
        `_purge(make_interval(secs => $1))` with an int4 $1 and
        `ceil(EXTRACT(epoch FROM w - clock_timestamp()) * 1000)` under the
        default search_path ("$user", public). There the planted
        make_interval(secs integer) is an exact match that beats
        pg_catalog's (double precision) one, and the planted
        `*`(numeric, integer) beats pg_catalog's numeric * numeric: the
        superuser worker would call them (assert_plants_are_live shows it),
        planted_calls would fill and jr_appowner would become a superuser.
        The worker now pins search_path = pg_catalog, pg_temp for its
        session and qualifies every name and operator."""
        owner = self.appowner()
        old_pid = harness.wait_for_worker()
        worker_role = worker_user(self.db)
        self.plant(owner, worker_role)
        self.assert_plants_are_live()

        # A completed job the restarted worker's first purge must delete.
        name = self.job_name("plant", "/ok")
        aged = queue_for(self.db, None, None, None, name, {"aged": True})
        wait_job_state(self.db, aged, "completed")

        # The worker plans its statements once, at first use: a worker
        # started after the plants resolves every name anew.
        offset = harness.server_log_size()
        self.assertTrue(scalar(self.db, "SELECT pg_terminate_backend(%s)", (old_pid,)))
        wait_for(lambda: not scalar(self.db, "SELECT count(*) FROM pg_catalog.pg_stat_activity "
                                             "WHERE pid = %s", (old_pid,)),
                 30, 0.02, "the worker did not exit")
        # Aged only now, while no worker runs (the postmaster restarts it
        # after 5 s): only the new worker's first purge can delete it.
        run(self.db, "UPDATE jobrunner.job SET finished_at = now() "
                     "- current_setting('jobrunner.retention')::interval - interval '1 hour' "
                     "WHERE id = %s", (aged,))
        self.assertIsNone(harness.worker_pid(self.db), "the aged job must wait for a new worker")
        harness.wait_for_worker(30, not_pid=old_pid)
        wait_for(lambda: job(self.db, aged) is None, 15, 0.05,
                 "the new worker did not purge a job older than jobrunner.retention")
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM jobrunner.job_logs WHERE job_id = %s",
                                (aged,)), 0, "its logs are purged with it")

        # Dated jobs: the worker computes when to wake up for them.
        dated = [self.queue_dated(name, s) for s in (1, 2)]
        for job_id in dated:
            row = wait_job_state(self.db, job_id, "completed", timeout=15)
            [request] = self.ep.requests(correlation_id=job_id)
            self.assertGreaterEqual(request.time, row["next_run_at"].timestamp() - 0.05,
                                    "a dated job is not sent before its time")

        self.assertEqual(self.planted_calls(), [], "a planted object was called")
        self.assertFalse(is_superuser(self.db, APPOWNER), "jr_appowner became a superuser")
        log = harness.server_log_since(offset)
        self.assertNotIn("worker transaction failed", log)
        self.ep.assert_no_violations()


class RestrictedOperationTest(TrustBase):
    """Code VACUUM or ANALYZE runs on a table owner's behalf is neither
    believed nor an admin, whoever runs the maintenance."""

    def setUp(self):
        super().setUp()
        self.mallory = self.login_role(MALLORY)
        run(self.db, "CREATE SCHEMA it_mallory AUTHORIZATION mallory")
        run(self.mallory, MALLORY_SQL)
        # Alice's jobs: one pending (its name is disabled), one running (a
        # callback job acknowledged by the endpoint and waiting for complete_job).
        self.alice = str(uuid.uuid4())
        held = self.job_name("held", "/ok", enabled=False)
        callback = self.job_name("cb", "/callback", completion="callback", callback_lease="1 hour")
        self.pending = queue_for(self.db, self.alice, USER_ROLE, "alice@example.com", held)
        self.running = queue_for(self.db, self.alice, USER_ROLE, "alice@example.com", callback)
        wait_for(lambda: job(self.db, self.running)["acked_at"] is not None, 15, 0.02,
                 "alice's callback job was not acknowledged")
        run(self.db, "INSERT INTO it_mallory.target VALUES (%s, %s, %s, %s)",
            (self.alice, held, self.pending, self.running))
        self.before = self.alices_jobs()

    def alices_jobs(self):
        return {r["id"]: r for r in query(self.db, """
            SELECT id::text, state, attempts, attempt_seq, updated_at, finished_at, response
              FROM jobrunner.job WHERE job_name = ANY (%s)""", (self.names,))}

    def attempts(self):
        return query(self.db, "SELECT * FROM it_mallory.attempt_log ORDER BY attempt")

    def feed_the_bait(self):
        """Mallory writes rows to her table (her own session: the attack stays
        quiet) and disconnects, so her statistics reach the server."""
        run(self.mallory, "INSERT INTO it_mallory.bait SELECT g FROM generate_series(1, 5) g")
        self.mallory.close()

    def assert_all_refused(self, attempts):
        """Every attempt refused; alice's jobs as they were; nothing queued."""
        self.assertTrue(attempts, "the attack never ran")
        for entry in attempts:
            outcome, words = REFUSALS[entry["attempt"]]
            self.assertEqual(entry["outcome"], outcome, harness.pretty(entry))
            if words:
                self.assertIn(words, entry["message"], harness.pretty(entry))
            self.assertEqual(entry["acting_as"], MALLORY, "ANALYZE runs the index as its owner")
        self.assertEqual(sorted({e["attempt"] for e in attempts}), sorted(REFUSALS))
        self.assertEqual(self.alices_jobs(), self.before, "alice's jobs changed")
        self.assertEqual(self.before[self.pending]["state"], "pending")
        self.assertEqual(self.before[self.running]["state"], "running")

    def assert_attack_works_outside_maintenance(self):
        """Run by a superuser's session acting as mallory (SET ROLE), outside
        any restricted operation, the same function is believed to be alice
        (the login is a superuser): it queues for her, sees her jobs and
        cancels her pending one. Seen inside a transaction that is rolled
        back: the refusals below come from the defence, not from a broken
        attack."""
        control = connect(autocommit=False)
        self.addCleanup(control.close)
        try:
            run(control, "SET LOCAL ROLE mallory")
            run(control, "SELECT it_mallory.attack()")
            outcomes = {r["attempt"]: r["outcome"]
                        for r in query(control, "SELECT * FROM it_mallory.attempt_log")}
        finally:
            control.rollback()
        self.assertRegex(outcomes["queue_job"], "^queued ", outcomes)
        # alice's two jobs, and the one just queued as her (row-level security)
        self.assertGreaterEqual(int(outcomes["count"]), 2, outcomes)
        self.assertEqual(outcomes["dequeue_job"], "returned true", outcomes)
        self.assertEqual(self.attempts(), [], "the control was rolled back")
        self.assertEqual(self.alices_jobs(), self.before)

    def test_autovacuum_analyze_lends_mallory_no_claims_and_no_admin(self):
        """Autovacuum's ANALYZE of mallory's table gives her index no claims, no admin.

        Without the defence: autovacuum's session user is the bootstrap
        superuser. A version that believes claims whenever session_user is
        a superuser, and judges admin on the outer (session) role, would
        believe the claims mallory's index expression sets and treat her as
        an admin: queue_job would queue for alice, she would see every job,
        and complete_job / dequeue_job would finish and cancel alice's jobs
        (assert_attack_works_outside_maintenance shows the claims half).
        Inside a security-restricted operation neither counts now."""
        self.assert_attack_works_outside_maintenance()
        self.addCleanup(restore_setting, "autovacuum_naptime")
        harness.set_setting(self.db, "autovacuum_naptime", "1s", worker_loops=0)
        self.feed_the_bait()

        def analyzed_by_autovacuum():
            done = scalar(self.db, "SELECT last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
                                   "WHERE relid = 'it_mallory.bait'::regclass")
            return done and self.attempts()

        attempts = wait_for(analyzed_by_autovacuum, 40, 0.1,
                            "autovacuum did not analyze mallory's table")
        own_pid = scalar(self.db, "SELECT pg_backend_pid()")
        self.assertTrue(all(e["pid"] != own_pid for e in attempts), "nobody else analyzed it")
        self.assertTrue(all(e["session_login"] != MALLORY for e in attempts))
        self.assert_all_refused(attempts)

    def test_superuser_analyze_lends_mallory_no_claims_and_no_admin(self):
        """A superuser's ANALYZE of mallory's table gives her index no claims, no admin.

        Without the defence: ANALYZE runs the index expression as mallory,
        but the session's login is the superuser: a version that checks
        only session_user (trusted claims) or the outer role (admin) would
        let the expression act as alice, or as an admin, with the same
        results as under autovacuum."""
        self.assert_attack_works_outside_maintenance()
        self.feed_the_bait()
        run(self.db, "ANALYZE it_mallory.bait")
        own_pid = scalar(self.db, "SELECT pg_backend_pid()")
        attempts = self.attempts()
        self.assertTrue([e for e in attempts if e["pid"] == own_pid],
                        "the superuser's ANALYZE ran the index expression")
        self.assert_all_refused(attempts)


class HookFromWorkerTest(TrustBase):
    """A hook the worker calls runs as its owner with the job user's claims."""

    def setUp(self):
        super().setUp()
        run(self.appowner(), HOOK_SQL)
        self.alice = str(uuid.uuid4())

    def hook_call(self, job_id):
        rows = query(self.db, "SELECT * FROM public.hook_calls WHERE job_id = %s", (job_id,))
        self.assertEqual(len(rows), 1, "the hook runs once")
        return rows[0]

    def assert_hook_escalates_as_a_superuser(self):
        """Called directly by a superuser, the hook does make jr_appowner a
        superuser (seen inside a transaction that is rolled back): what
        stops it below is how the worker calls it."""
        control = connect(autocommit=False)
        self.addCleanup(control.close)
        try:
            run(control, "SELECT public.escalating_hook(NULL::jobrunner.job)")
            [call] = query(control, "SELECT * FROM public.hook_calls")
            escalated = is_superuser(control, APPOWNER)
        finally:
            control.rollback()
        self.assertEqual((call["alter_role"], escalated), ("succeeded", True), call)
        self.assertFalse(is_superuser(self.db, APPOWNER))

    def assert_ran_as_owner_for_alice(self, call):
        self.assertEqual(call["called_as"], APPOWNER)
        self.assertEqual(json.loads(call["claims"]),
                         {"sub": self.alice, "role": USER_ROLE, "email": "alice@example.com"})
        self.assertEqual(call["claim_sub"], self.alice)
        self.assertEqual(call["alter_role"], "42501", "ALTER ROLE ... SUPERUSER is refused")
        self.assertFalse(is_superuser(self.db, APPOWNER), "jr_appowner became a superuser")

    def test_on_complete_runs_as_its_owner_with_alices_claims(self):
        """on_complete, called by the worker, runs as jr_appowner with alice's claims.

        Without the defence: before 0.2.0 the hook ran as the worker
        (EXECUTE 'SELECT hook($1)' in the superuser's transaction), with
        only request.jwt.claims set: called_as would be the worker's user,
        ALTER ROLE would succeed (assert_hook_escalates_as_a_superuser shows
        it) and jr_appowner would become a superuser; request.jwt.claim.sub
        would be empty."""
        self.assert_hook_escalates_as_a_superuser()
        name = self.job_name("complete", "/ok", on_complete=HOOK)
        job_id = queue_for(self.db, self.alice, USER_ROLE, "alice@example.com", name)
        row = wait_job_state(self.db, job_id, "completed")
        self.assertIsNone(row["last_error"])
        call = self.hook_call(job_id)
        self.assertEqual(call["job_state"], "completed")
        self.assert_ran_as_owner_for_alice(call)
        self.ep.assert_no_violations()

    def test_on_fail_runs_as_its_owner_with_alices_claims(self):
        """on_fail, called by the worker, runs as jr_appowner with alice's claims.

        Without the defence: on_fail runs on another path (_settle_fail,
        once retries are used up); a version that lowered rights only for
        on_complete, or none at all, would escalate here as above."""
        self.assert_hook_escalates_as_a_superuser()
        name = self.job_name("fail", "/fail", max_retries=0, on_fail=HOOK)
        job_id = queue_for(self.db, self.alice, USER_ROLE, "alice@example.com", name)
        row = wait_job_state(self.db, job_id, "failed")
        self.assertNotIn("on_fail hook", row["last_error"] or "", "the hook did not raise")
        call = self.hook_call(job_id)
        self.assertEqual(call["job_state"], "failed")
        self.assert_ran_as_owner_for_alice(call)
        self.ep.assert_no_violations()


if __name__ == "__main__":
    unittest.main()
