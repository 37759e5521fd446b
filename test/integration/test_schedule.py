"""test_schedule.py — recurring jobs through pg_cron: schedule_job /
unschedule_job, no overlapping runs, admin only, and a clear error without
pg_cron.

pg_cron 1.4 has no seconds, so the tests never wait for a real minute: they
run what pg_cron runs (the command stored in cron.job, which is
SELECT jobrunner._run_schedule('<name>')) directly, and check cron.job for the
schedule itself. pg_cron may still fire a '* * * * *' schedule at a minute
boundary during a test; its runs are read from cron.job_run_details and
allowed for.
"""

import json
import unittest
import uuid

import psycopg2
import psycopg2.errors
from psycopg2 import sql

import harness
from harness import connect, new_user, query, scalar, wait_job_state

ROLE = "authenticated"

# PostgREST's roles come from test/lib/roles.sql; this one is the file's own.
ROLES_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'it_schedule_plain') THEN
        CREATE ROLE it_schedule_plain LOGIN;
    END IF;
END $$;
"""


class ScheduleBase(harness.JobrunnerTestCase):
    """Schedules made by schedule_name() are unscheduled afterwards."""

    prefix = "it.schedule"

    def setUp(self):
        super().setUp()
        self.schedules = []
        self.addCleanup(self._unschedule)

    def _unschedule(self):
        for s in self.schedules:
            self.value("SELECT jobrunner.unschedule_job(%s)", s)

    def schedule_name(self, what):
        name = "it-%s-%s" % (what, uuid.uuid4().hex[:8])
        self.schedules.append(name)
        return name

    def cron_job(self, schedule):
        """The cron.job row of a schedule (None if there is none)."""
        rows = query(self.db, "SELECT jobid, schedule, command, database, username, active "
                              "FROM cron.job WHERE jobname = %s", ("jobrunner:" + schedule,))
        self.assertLessEqual(len(rows), 1, rows)
        return rows[0] if rows else None

    def schedule_rows(self, schedule):
        return self.value("SELECT count(*) FROM jobrunner.schedule WHERE schedule_name = %s",
                          schedule)

    def cron_runs(self, cron_id):
        """How often pg_cron itself has started this cron job."""
        return self.value("SELECT count(*) FROM cron.job_run_details WHERE jobid = %s", cron_id)


class ScheduleTest(ScheduleBase):
    def test_schedule_is_in_cron_and_unschedule_removes_it(self):
        name = self.job_name("cron", "/ok")
        schedule = self.schedule_name("cron")
        user = new_user()
        cron_id = self.value("SELECT jobrunner.schedule_job(%s, '* * * * *', %s, %s::jsonb, "
                             "%s::uuid)", schedule, name, '{"k": 1}', user)
        row = self.cron_job(schedule)
        self.assertIsNotNone(row, "schedule_job made no cron.job row")
        self.assertEqual(row["jobid"], cron_id)
        self.assertEqual(row["schedule"], "* * * * *")
        self.assertEqual(row["command"], "SELECT jobrunner._run_schedule('%s')" % schedule)
        self.assertEqual(row["database"], self.value("SELECT current_database()"))
        self.assertTrue(row["active"])
        # What pg_cron runs queues the job for the scheduled user.
        job_id = str(self.value(row["command"]))
        done = wait_job_state(self.db, job_id, "completed", timeout=15)
        self.assertEqual((str(done["user_id"]), done["user_role"], done["request_body"]),
                         (user, ROLE, {"k": 1}))
        self.assertEqual(done["dedup_key"], "schedule:" + schedule)
        [rec] = self.ep.requests(correlation_id=job_id)
        self.assertEqual((rec.sub, rec.json()), (user, {"k": 1}))

        # Scheduling the same name again replaces the schedule (one cron job).
        again = self.value("SELECT jobrunner.schedule_job(%s, '*/5 * * * *', %s)", schedule, name)
        row = self.cron_job(schedule)
        self.assertEqual((row["jobid"], row["schedule"]), (again, "*/5 * * * *"))
        self.assertEqual(self.schedule_rows(schedule), 1)

        self.assertIs(self.value("SELECT jobrunner.unschedule_job(%s)", schedule), True)
        self.assertIsNone(self.cron_job(schedule), "unschedule_job left the cron.job row")
        self.assertEqual(self.value("SELECT count(*) FROM cron.job WHERE jobid = %s", again), 0)
        self.assertEqual(self.schedule_rows(schedule), 0)
        self.assertIs(self.value("SELECT jobrunner.unschedule_job(%s)", schedule), False)
        with self.assertRaises(psycopg2.errors.UndefinedObject):
            self.value("SELECT jobrunner._run_schedule(%s)", schedule)

    def test_no_overlapping_runs(self):
        # A system job (no user): the dedup key holds for it too.
        name = self.job_name("block", "/block", concurrency_limit=10)
        schedule = self.schedule_name("block")
        cron_id = self.value("SELECT jobrunner.schedule_job(%s, '* * * * *', %s)", schedule, name)
        cron_row = self.cron_job(schedule)
        self.assertEqual(cron_row["schedule"], "* * * * *")

        def run():
            """What pg_cron runs each minute: the command stored in cron.job."""
            return str(self.value(cron_row["command"]))

        def active_jobs():
            return [r["id"] for r in query(self.db, "SELECT id::text FROM jobrunner.job "
                                                    "WHERE job_name = %s AND state IN "
                                                    "('pending', 'running')", (name,))]

        # Run 1 starts and is held by the endpoint.
        first = run()
        wait_job_state(self.db, first, "running", timeout=15)
        self.ep.wait_for_current(1, timeout=15, job_name=name)

        # The next runs, while run 1 is running, are skipped and logged.
        skips = 3
        for _ in range(skips):
            self.assertEqual(run(), first, "a run started while run 1 was running")
            self.assertEqual(active_jobs(), [first])
        skipped = [entry for entry in query(self.db, "SELECT log_level, log_message "
                                                     "FROM jobrunner.job_logs "
                                                     "WHERE job_id = %s ORDER BY id", (first,))
                   if "skipped" in entry["log_message"]]
        self.assertGreaterEqual(len(skipped), skips)
        self.assertLessEqual(len(skipped), skips + self.cron_runs(cron_id))
        self.assertEqual(skipped[0]["log_level"], "warning")
        self.assertIn('scheduled run of "%s" skipped' % schedule, skipped[0]["log_message"])
        self.assertEqual(len(self.ep.requests(job_name=name)), 1)
        self.assertEqual(self.ep.current(job_name=name), 1)

        # Once run 1 is done, the next run starts.
        self.ep.release()
        wait_job_state(self.db, first, "completed", timeout=15)
        second = run()
        self.assertNotEqual(second, first)
        wait_job_state(self.db, second, "completed", timeout=15)
        runs = self.value("SELECT count(*) FROM jobrunner.job WHERE job_name = %s", name)
        self.assertGreaterEqual(runs, 2)
        self.assertLessEqual(runs, 2 + self.cron_runs(cron_id))
        reqs = self.ep.requests(job_name=name)
        self.assertEqual(len(reqs), runs)
        ordered = sorted(reqs, key=lambda r: r.started)
        for earlier, later in zip(ordered, ordered[1:]):
            self.assertLessEqual(earlier.finished, later.started, "two runs overlapped")
        self.assertEqual(self.ep.max_concurrent(job_name=name), 1)
        system_role = self.value("SELECT current_setting('jobrunner.system_role')")
        self.assertEqual({(r.sub, r.claims["role"]) for r in reqs}, {(None, system_role)})
        self.ep.assert_no_violations()

    def test_bad_arguments_leave_no_schedule(self):
        name = self.job_name("bad", "/ok")
        nowhere = "it.schedule.nowhere.%s" % uuid.uuid4().hex[:8]
        cases = [("not a cron", name, psycopg2.Error),
                 ("* * * * *", nowhere, psycopg2.errors.UndefinedObject)]
        for cron, job_name, error in cases:
            schedule = self.schedule_name("bad")
            with self.subTest(cron=cron, job_name=job_name):
                with self.assertRaises(error):
                    self.value("SELECT jobrunner.schedule_job(%s, %s, %s)", schedule, cron, job_name)
                self.assertIsNone(self.cron_job(schedule))
                self.assertEqual(self.schedule_rows(schedule), 0)
        with self.assertRaises(psycopg2.errors.InvalidParameterValue):
            self.value("SELECT jobrunner.schedule_job('bad name!', '* * * * *', %s)", name)


class ScheduleAccessTest(ScheduleBase):
    def test_non_admin_is_denied(self):
        name = self.job_name("deny", "/ok")
        schedule = self.schedule_name("deny")
        with self.db.cursor() as cur:
            cur.execute(ROLES_SQL)
        self.addCleanup(self.db.cursor().execute, "DROP ROLE IF EXISTS it_schedule_plain")

        def plain():
            return connect(user="it_schedule_plain", autocommit=False)

        def postgrest_user():
            conn = connect(user="authenticator", autocommit=False)
            with conn.cursor() as cur:
                cur.execute("SET LOCAL ROLE authenticated")
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                            (json.dumps({"sub": new_user(), "role": ROLE}),))
            return conn

        calls = [
            sql.SQL("SELECT jobrunner.schedule_job({}, '* * * * *', {})").format(
                sql.Literal(schedule), sql.Literal(name)),
            sql.SQL("SELECT jobrunner.unschedule_job({})").format(sql.Literal(schedule)),
            sql.SQL("SELECT jobrunner._run_schedule({})").format(sql.Literal(schedule)),
        ]
        for who, make in (("plain login", plain), ("postgrest user", postgrest_user)):
            for call in calls:
                with self.subTest(who=who, call=call.as_string(self.db)):
                    conn = make()
                    try:
                        with self.assertRaises(psycopg2.errors.InsufficientPrivilege):
                            with conn.cursor() as cur:
                                cur.execute(call)
                    finally:
                        conn.close()
        self.assertIsNone(self.cron_job(schedule))
        self.assertEqual(self.schedule_rows(schedule), 0)


class WithoutPgCronTest(unittest.TestCase):
    def test_clear_error_without_pg_cron(self):
        dbname = sql.Identifier("jobrunner_it_nocron_%s" % uuid.uuid4().hex[:8])
        admin = connect()
        self.addCleanup(admin.close)
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(dbname))

        def drop():
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(dbname))
        self.addCleanup(drop)

        conn = connect(dbname=dbname.string)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION pg_jobrunner")
                cur.execute("INSERT INTO jobrunner.job_config (job_name, url) "
                            "VALUES ('nightly', 'http://127.0.0.1:9/nightly')")
            self.assertIsNone(scalar(conn, "SELECT to_regnamespace('cron')"))
            with self.assertRaises(psycopg2.errors.FeatureNotSupported) as ctx:
                scalar(conn, "SELECT jobrunner.schedule_job('nightly', '0 3 * * *', 'nightly')")
            err = ctx.exception
            self.assertEqual(err.pgcode, "0A000")
            self.assertIn("pg_cron", err.diag.message_primary)
            self.assertIsNotNone(err.diag.message_hint, "the error has no hint")
            self.assertIn("CREATE EXTENSION pg_cron", err.diag.message_hint)
            self.assertEqual(scalar(conn, "SELECT count(*) FROM jobrunner.schedule"), 0)
            self.assertIs(scalar(conn, "SELECT jobrunner.unschedule_job('nightly')"), False)
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
