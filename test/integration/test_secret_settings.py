"""test_secret_settings.py — the signing secret, and what users get to see.

jobrunner.jwt_secret comes only from the server's configuration files
(postgresql.conf, or ALTER SYSTEM and a reload). Changing it never writes the
old or the new value to the server log, even with every statement logged;
every other way of setting it (ALTER ROLE / DATABASE ... SET, SET,
set_config) is refused, even for a superuser, because those values are
readable where they are stored or chosen by one session for its own tokens.
A secret too short to sign with mints nothing: the attempt fails with an
error that says so, and nothing is sent.

What a failed attempt tells the job's user (last_error, job_logs) says what
failed, never where the request went; the detail is for administrators, in
the server log.

Every test leaves the cluster's original secret in place (the log-hygiene
tier checks the whole log for it afterwards): settings are reset in cleanup,
whatever happened.
"""

import json
import secrets
import socket
import string
import unittest
import uuid

import jwt
import psycopg2
from psycopg2 import sql

import harness
from harness import scalar, wait_for, wait_job_state

SECRET_GUC = "jobrunner.jwt_secret"
ALNUM = string.ascii_letters + string.digits


def random_secret(length):
    """A random value that needs no quoting."""
    return "".join(secrets.choice(ALNUM) for _ in range(length))


def mint(conn):
    """A token from mint_user_jwt in conn's session."""
    return scalar(conn, "SELECT jobrunner.mint_user_jwt(%s::uuid, 'authenticated', NULL, "
                        "'5 minutes')", (str(uuid.uuid4()),))


def signed_with(token, secret):
    """Whether token's HS256 signature verifies with secret."""
    try:
        jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
        return True
    except jwt.InvalidSignatureError:
        return False


def windows(text, width=12):
    """Every substring of text of the given width (a shorter text: itself)."""
    return {text[i:i + width] for i in range(max(len(text) - width + 1, 1))}


class SecretSettings(harness.JobrunnerTestCase):
    prefix = "it.secret"

    @classmethod
    def setUpClass(cls):
        cls.secret = harness.secret()
        conn = harness.connect()
        try:
            cls.role = scalar(conn, "SELECT current_user")
            cls.database = scalar(conn, "SELECT current_database()")
            cls.superuser = scalar(conn, "SELECT rolsuper FROM pg_catalog.pg_roles "
                                         "WHERE rolname = current_user")
        finally:
            conn.close()

    def execute(self, stmt, args=None):
        with self.db.cursor() as cur:
            cur.execute(stmt, args)

    def stored_secret_entries(self):
        """How many jobrunner.jwt_secret entries pg_db_role_setting holds."""
        return scalar(self.db, "SELECT count(*) FROM pg_catalog.pg_db_role_setting s, "
                                 "pg_catalog.unnest(s.setconfig) c "
                                 "WHERE c LIKE 'jobrunner.jwt\\_secret=%'")

    def restore_secret(self):
        """Cleanup: back to the secret of postgresql.conf (ALTER SYSTEM's
        copy goes), and wait until the worker has reloaded it."""
        harness.set_setting(self.db, SECRET_GUC, None)

    def wait_session_secret(self, conn, secret):
        """Wait until tokens minted in conn's session are signed with secret
        (a session applies a reload before its next command, once the
        postmaster has passed the signal on)."""
        wait_for(lambda: signed_with(mint(conn), secret), 5, 0.02,
                 "the session does not sign with the expected secret after a reload")

    def deliver_one(self, prefix):
        """Queue a job to /ok; return (job row, the request the endpoint got)."""
        name = self.job_name(prefix, self.ep.url("/ok"))
        job_id = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        row = wait_job_state(self.db, job_id, "completed", timeout=10)
        [req] = self.ep.requests(correlation_id=job_id)
        return row, req

    # --- 1. changing the secret with ALTER SYSTEM -----------------------------

    def test_changing_the_secret_logs_neither_value(self):
        """Changing the secret with ALTER SYSTEM logs neither value.

        With every statement logged, ALTER SYSTEM SET jobrunner.jwt_secret to
        a new value and back, each followed by a reload, puts neither the new
        nor the original value in the server log.

        Without the log filter, log_statement = 'all' prints both statements
        with their values, and the postmaster's reload prints 'parameter
        "jobrunner.jwt_secret" changed to "<value>"' for each change.
        """
        new_secret = random_secret(48)
        self.addCleanup(harness.set_setting, self.db, "log_statement", None, 0)
        harness.set_setting(self.db, "log_statement", "all", 0)
        self.addCleanup(self.restore_secret)  # runs before log_statement is reset

        offset = harness.server_log_size()
        loud = harness.connect()  # a new session, certain to log every statement
        self.addCleanup(loud.close)
        self.assertEqual(scalar(loud, "SHOW log_statement"), "all")
        with loud.cursor() as cur:
            cur.execute("ALTER SYSTEM SET jobrunner.jwt_secret = %s", (new_secret,))
            cur.execute("SELECT pg_catalog.pg_reload_conf()")
        # The change took effect (else the test proves nothing about it).
        self.wait_session_secret(loud, new_secret)
        harness.wait_worker_loops(self.db, 2)
        with loud.cursor() as cur:
            cur.execute("ALTER SYSTEM SET jobrunner.jwt_secret = %s", (self.secret,))
            cur.execute("SELECT pg_catalog.pg_reload_conf()")
        self.wait_session_secret(loud, self.secret)
        harness.wait_worker_loops(self.db, 2)

        # Jobs sent afterwards carry tokens signed with the original secret
        # (the endpoint verifies every token with it).
        _, req = self.deliver_one("secretlog")
        self.assertIsNotNone(req.claims, req.jwt_error)
        self.ep.assert_no_violations()

        log = harness.server_log_since(offset)
        self.assertIn("statement: SELECT pg_catalog.pg_reload_conf()", log,
                      "statements were being logged")
        self.assertRegex(log, r'parameter "jobrunner\.jwt_secret" changed',
                         "the postmaster saw the secret change")
        self.assertNotIn(new_secret, log, "the new secret is in the server log")
        self.assertNotIn(self.secret, log, "the original secret is in the server log")

    # --- 2. every other way of setting it ------------------------------------

    def test_session_role_and_database_settings_are_refused_for_a_superuser(self):
        """ALTER ROLE / DATABASE ... SET, SET and set_config are refused (42501).

        Without the check, the superuser's statements succeed: ALTER ROLE and
        ALTER DATABASE store the value in pg_db_role_setting, which every role
        can read, and SET lets a session sign its tokens with a secret of its
        choosing.
        """
        self.assertTrue(self.superuser, "the test runs as a superuser")
        candidate = random_secret(48)
        role, db = sql.Identifier(self.role), sql.Identifier(self.database)
        guc = sql.SQL(SECRET_GUC)
        for stmt in (sql.SQL("ALTER ROLE {} RESET {}").format(role, guc),
                     sql.SQL("ALTER ROLE ALL RESET {}").format(guc),
                     sql.SQL("ALTER ROLE {} IN DATABASE {} RESET {}").format(role, db, guc),
                     sql.SQL("ALTER DATABASE {} RESET {}").format(db, guc)):
            self.addCleanup(self.execute, stmt)  # should any have succeeded
        offset = harness.server_log_size()

        attempts = [
            sql.SQL("ALTER ROLE {} SET {} = %s").format(role, guc),
            sql.SQL("ALTER ROLE ALL SET {} = %s").format(guc),
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = %s").format(role, db, guc),
            sql.SQL("ALTER DATABASE {} SET {} = %s").format(db, guc),
            sql.SQL("SET {} = %s").format(guc),
            sql.SQL("SELECT pg_catalog.set_config('jobrunner.jwt_secret', %s, false)"),
            sql.SQL("SELECT pg_catalog.set_config('jobrunner.jwt_secret', %s, true)"),
        ]
        for stmt in attempts:
            text = stmt.as_string(self.db)
            with self.subTest(statement=text):
                with self.assertRaises(psycopg2.errors.InsufficientPrivilege) as ctx:
                    with self.db.cursor() as cur:
                        cur.execute(stmt, (candidate,))
                self.assertNotIn(candidate, str(ctx.exception), "the error quotes the value")

        self.assertEqual(self.stored_secret_entries(), 0,
                         "pg_db_role_setting holds a jobrunner.jwt_secret entry")
        fresh = harness.connect()  # a new session: role and database settings apply
        self.addCleanup(fresh.close)
        self.assertTrue(signed_with(mint(fresh), self.secret), "a new session signs as before")
        self.assertTrue(signed_with(mint(self.db), self.secret), "this session signs as before")
        self.assertNotIn(candidate, harness.server_log_since(offset),
                         "a refused value is in the server log")

    def test_an_empty_secret_cannot_be_stored_for_a_role_or_database(self):
        """An empty value is refused by ALTER ROLE / DATABASE ... SET too.

        An empty entry in pg_db_role_setting is a secret that does not come
        from the configuration files: every later session of that role or in
        that database signs with nothing, so mint_user_jwt raises 22023, and
        so does the worker once it restarts (each job then fails with
        "signing secret is missing"). A check that lets empty values through
        as "nothing to hide" stores the entry, and this test fails on the
        pg_db_role_setting count.
        """
        role, db = sql.Identifier(self.role), sql.Identifier(self.database)
        guc = sql.SQL(SECRET_GUC)
        for what, target in (("ROLE", role), ("DATABASE", db)):
            with self.subTest(level=what):
                alter = sql.SQL("ALTER %s {} " % what).format(target)
                self.addCleanup(self.execute, alter + sql.SQL("RESET {}").format(guc))
                try:
                    self.execute(alter + sql.SQL("SET {} = ''").format(guc))
                except psycopg2.errors.InsufficientPrivilege:
                    pass  # refused: what the contract asks for
                stored = self.stored_secret_entries()
                fresh = harness.connect()  # starts with what ALTER ... SET stored
                try:
                    minted = mint(fresh)
                except psycopg2.Error as exc:
                    minted = "error %s: %s" % (exc.pgcode, exc.pgerror.strip())
                finally:
                    fresh.close()
                self.execute(alter + sql.SQL("RESET {}").format(guc))
                self.assertEqual(stored, 0, "ALTER %s ... SET jobrunner.jwt_secret = '' was "
                                            "stored; a new session then mints: %s" % (what, minted))
                self.assertTrue(signed_with(minted, self.secret), minted)

    # --- 3. a secret too short to sign with ----------------------------------

    def test_a_short_secret_mints_nothing_and_fails_the_attempt_clearly(self):
        """A secret under 32 bytes mints nothing, and says so.

        mint_user_jwt raises 22023 and a job's attempt fails with an error
        about the secret; nothing is sent, and the secret is shown nowhere.

        Without the length check, both sign happily with a guessable key (the
        endpoint would receive a request); an error that quotes the secret
        fails the assertNotIn checks.
        """
        short = random_secret(20)
        name = self.job_name("shortsecret", self.ep.url("/ok"), max_retries=0)
        self.addCleanup(self.restore_secret)
        offset = harness.server_log_size()
        harness.set_setting(self.db, SECRET_GUC, short)

        fresh = harness.connect()
        self.addCleanup(fresh.close)
        with self.assertRaises(psycopg2.errors.InvalidParameterValue) as ctx:
            mint(fresh)
        self.assertRegex(str(ctx.exception), r"(?i)secret")
        self.assertNotIn(short, str(ctx.exception), "the error shows the secret")

        job_id = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        row = wait_job_state(self.db, job_id, "failed", timeout=10)
        self.assertRegex(row["last_error"] or "", r"(?i)secret.*(short|32)",
                         "last_error says the secret is the problem")
        self.assertNotIn(short, row["last_error"])
        self.assertIsNone(row["last_status"])
        self.assertEqual(self.ep.requests(job_name=name), [], "nothing is sent without a token")
        for entry in harness.job_logs(self.db, job_id):
            self.assertNotIn(short, entry["log_message"] or "")

        self.restore_secret()
        after = harness.connect()
        self.addCleanup(after.close)
        self.assertTrue(signed_with(mint(after), self.secret), "the original secret signs again")
        self.assertNotIn(short, harness.server_log_since(offset), "the short secret is logged")

    # --- 4. transport errors ---------------------------------------------------

    def test_a_refused_connection_says_what_failed_not_where(self):
        """A refused connection: users learn what failed, not where.

        last_error says 'connection refused', without host or port; the
        server log has curl's message with the address, for administrators.

        A worker that stores curl's own message ('Failed to connect to
        127.0.0.1 port N ...') in last_error shows users where the request
        went (an internal address, say); one that keeps nothing leaves
        administrators with no detail in the log.
        """
        with socket.socket() as s:  # a port nobody listens on once it is closed
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name = self.job_name("refused", "http://127.0.0.1:%d/ok" % port, max_retries=0)
        offset = harness.server_log_size()
        job_id = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        row = wait_job_state(self.db, job_id, "failed", timeout=10)

        self.assertRegex(row["last_error"] or "", r"(?i)connection refused")
        self.assertIsNone(row["last_status"])
        self.assertIsNone(row["response"])
        seen_by_users = [row["last_error"]] + [
            entry["log_message"] or "" for entry in harness.job_logs(self.db, job_id)]
        for text in seen_by_users:
            self.assertNotIn("127.0.0.1", text, "users see where the request went")
            self.assertNotRegex(text, r"(?<!\d)%d(?!\d)" % port, "users see the endpoint's port")

        detail = wait_for(
            lambda: [l for l in harness.server_log_since(offset).splitlines()
                     if job_id in l and "127.0.0.1" in l and str(port) in l],
            5, 0.05, "no server log line with the failure's detail for job %s" % job_id)
        self.assertRegex(detail[0], r"(?i)refused|connect")

    # --- 5. an endpoint that echoes the token back --------------------------

    def test_an_echoed_token_is_not_stored(self):
        """An endpoint that echoes the Authorization header: no token is stored.

        A worker that stores the body as received keeps a valid bearer token
        in job.response, which the job's user can read; this test then finds
        a piece of the token's signature there.
        """
        name = self.job_name("echo", self.ep.url("/echo-headers"))
        job_id = harness.queue_for(self.db, str(uuid.uuid4()), "authenticated", None, name, {})
        row = wait_job_state(self.db, job_id, "completed", timeout=10)
        [req] = self.ep.requests(correlation_id=job_id)
        token = req.header("Authorization")[len("Bearer "):]
        signature = token.split(".")[2]
        stored = json.dumps(row["response"]) + (row["last_error"] or "")
        self.assertTrue(row["response"], "the echo was stored")
        leaked = [w for w in windows(signature) if w in stored]
        self.assertEqual(leaked, [], "pieces of the token's signature are stored")


if __name__ == "__main__":
    unittest.main()
