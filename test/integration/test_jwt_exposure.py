"""test_jwt_exposure.py — the signing secret and minted tokens never leak.

A plain (non-superuser) role cannot read jobrunner.jwt_secret through SHOW,
current_setting or pg_settings, and cannot mint tokens. With every statement
and every debug message logged, neither the secret nor a whole token the
extension minted (returned by mint_user_jwt / sign_jwt, or sent by the worker)
reaches the server log. Tokens from mint_user_jwt and sign_jwt verify with
PyJWT, an implementation not written here; tampered ones and ones signed with
another secret do not.
"""

import base64
import json
import re
import time
import unittest
import uuid

import jwt
import psycopg2

import harness
from harness import Endpoint, scalar, wait_job_state

TOKEN_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def b64url_json(segment):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def b64url(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class JwtExposure(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.secret = harness.secret()
        cls.role = "jr_it_plain_%s" % uuid.uuid4().hex[:8]
        conn = harness.connect()
        try:
            with conn.cursor() as cur:
                cur.execute('CREATE ROLE "%s" LOGIN' % cls.role)
        finally:
            conn.close()

    @classmethod
    def tearDownClass(cls):
        conn = harness.connect()
        try:
            with conn.cursor() as cur:
                cur.execute('DROP ROLE IF EXISTS "%s"' % cls.role)
        finally:
            conn.close()

    def setUp(self):
        self.conn = harness.connect()
        self.addCleanup(self.conn.close)

    def assert_hidden(self, conn, statement, args=None):
        """statement either fails or returns nothing holding the secret; the
        error message does not hold it either. Returns the rows (or None)."""
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                rows = cur.fetchall()
        except psycopg2.Error as exc:
            self.assertNotIn(self.secret, str(exc), statement)
            return None
        self.assertNotIn(self.secret, repr(rows), statement)
        return rows

    def test_plain_role_cannot_read_the_secret_or_mint(self):
        plain = harness.connect(user=self.role)
        self.addCleanup(plain.close)
        self.assertFalse(scalar(plain, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        self.assert_hidden(plain, "SHOW jobrunner.jwt_secret")
        self.assert_hidden(plain, "SELECT current_setting('jobrunner.jwt_secret')")
        self.assert_hidden(plain, "SELECT current_setting('jobrunner.jwt_secret', true)")
        self.assert_hidden(plain, "SHOW ALL")
        rows = self.assert_hidden(plain, "SELECT * FROM pg_catalog.pg_settings")
        self.assertIsNotNone(rows, "pg_settings is readable, only without the secret")
        self.assert_hidden(plain, "SELECT * FROM pg_catalog.pg_settings "
                                  "WHERE name = 'jobrunner.jwt_secret'")
        self.assert_hidden(plain, "SELECT * FROM pg_catalog.pg_file_settings")
        with self.assertRaises(psycopg2.errors.InsufficientPrivilege) as ctx:
            with plain.cursor() as cur:
                cur.execute("SELECT jobrunner.mint_user_jwt(%s::uuid, 'authenticated', NULL)",
                            (str(uuid.uuid4()),))
        self.assertNotIn(self.secret, str(ctx.exception))

    def test_superuser_show_does_not_print_the_secret_either(self):
        self.assert_hidden(self.conn, "SHOW jobrunner.jwt_secret")
        self.assert_hidden(self.conn, "SELECT current_setting('jobrunner.jwt_secret')")
        self.assert_hidden(self.conn, "SELECT setting, reset_val, boot_val FROM pg_settings "
                                      "WHERE name = 'jobrunner.jwt_secret'")

    def test_secret_and_tokens_stay_out_of_a_fully_verbose_log(self):
        ep = Endpoint().start()
        self.addCleanup(ep.shutdown)
        name = harness.unique_name("jwtlog")
        harness.configure_job(self.conn, name, ep.url("/ok"))
        self.addCleanup(harness.retire_job_names, self.conn, [name])
        for setting, value in (("log_statement", "all"), ("log_min_messages", "debug5")):
            self.addCleanup(harness.set_setting, self.conn, setting, None, 0)
            harness.set_setting(self.conn, setting, value, 0)

        offset = harness.server_log_size()
        loud = harness.connect()  # a new session starts with the new settings
        self.addCleanup(loud.close)
        self.assertEqual(scalar(loud, "SHOW log_statement"), "all")
        self.assertEqual(scalar(loud, "SHOW log_min_messages"), "debug5")
        minted = scalar(loud, "SELECT jobrunner.mint_user_jwt(%s::uuid, 'authenticated', "
                              "'leak@example.com', '10 minutes')", (str(uuid.uuid4()),))
        signed = scalar(loud, "SELECT jobrunner.sign_jwt(%s::jsonb, %s)",
                        (json.dumps({"sub": "x", "role": "anon"}), self.secret))
        with self.assertRaises(psycopg2.Error) as ctx:  # an error quoting the secret
            scalar(loud, "SELECT jobrunner.sign_jwt('[1]'::jsonb, %s)", (self.secret,))
        self.assertNotIn(self.secret, str(ctx.exception))
        jid = harness.queue_for(loud, str(uuid.uuid4()), "authenticated", "leak@example.com",
                                name, {"x": 1})
        wait_job_state(self.conn, jid, "completed")
        sent = [r.header("Authorization")[len("Bearer "):] for r in ep.requests()]
        self.assertEqual(len(sent), 1)
        ep.assert_no_violations()
        # Let the worker log a few more turns at debug5.
        harness.wait_worker_loops(self.conn, 2)

        log = harness.server_log_since(offset)
        self.assertIn("mint_user_jwt", log, "statements were being logged")
        self.assertIn("DEBUG", log, "debug messages were being logged")
        self.assertNotIn(self.secret, log, "the secret is in the server log")
        for what, token in [("mint_user_jwt", minted), ("sign_jwt", signed)] + [
                ("sent by the worker", t) for t in sent]:
            self.assertTrue(TOKEN_RE.fullmatch(token), token[:16])
            self.assertNotIn(token, log, "a token from %s is in the server log" % what)
        for found in set(TOKEN_RE.findall(log)):
            with self.assertRaises(jwt.PyJWTError, msg="a valid token is in the server log"):
                jwt.decode(found, self.secret, algorithms=["HS256"],
                           options={"verify_aud": False, "verify_exp": False})

    def test_minted_tokens_verify_with_pyjwt(self):
        uid = str(uuid.uuid4())
        before = int(time.time())
        token = scalar(self.conn, "SELECT jobrunner.mint_user_jwt(%s::uuid, 'authenticated', "
                                  "'me@example.com', '10 minutes')", (uid,))
        head, body, sig = token.split(".")
        self.assertNotIn("=", token, "base64url without padding")
        self.assertEqual(b64url_json(head), {"alg": "HS256", "typ": "JWT"})
        claims = jwt.decode(token, self.secret, algorithms=["HS256"], audience="authenticated")
        self.assertEqual((claims["sub"], claims["role"], claims["aud"], claims["email"]),
                         (uid, "authenticated", "authenticated", "me@example.com"))
        self.assertEqual(claims["exp"] - claims["iat"], 600)
        self.assertLessEqual(abs(claims["iat"] - before), 2)

        system = scalar(self.conn, "SELECT jobrunner.mint_user_jwt(NULL, 'service_role', NULL)")
        claims = jwt.decode(system, self.secret, algorithms=["HS256"], audience="service_role")
        self.assertNotIn("sub", claims)
        self.assertNotIn("email", claims)

        wanted = {"sub": uid, "role": "editor", "n": 42, "nested": {"a": [1, "b"]}}
        signed = scalar(self.conn, "SELECT jobrunner.sign_jwt(%s::jsonb, %s)",
                        (json.dumps(wanted), self.secret))
        self.assertEqual(b64url_json(signed.split(".")[0]), {"alg": "HS256", "typ": "JWT"})
        self.assertEqual(jwt.decode(signed, self.secret, algorithms=["HS256"]), wanted)

        # Tampered: another payload under the same signature, a changed
        # signature, the wrong secret.
        forged = "%s.%s.%s" % (head, b64url(dict(b64url_json(body), sub=str(uuid.uuid4()))), sig)
        flipped = "%s.%s.%s%s" % (head, body, "B" if sig[0] == "A" else "A", sig[1:])
        for bad in (forged, flipped):
            with self.assertRaises(jwt.InvalidSignatureError):
                jwt.decode(bad, self.secret, algorithms=["HS256"], audience="authenticated")
        with self.assertRaises(jwt.InvalidSignatureError):
            jwt.decode(token, self.secret[::-1] + "x", algorithms=["HS256"],
                       audience="authenticated")
        other = "another-secret-of-at-least-32-bytes-0123456789"
        elsewhere = scalar(self.conn, "SELECT jobrunner.sign_jwt(%s::jsonb, %s)",
                           (json.dumps(wanted), other))
        self.assertEqual(jwt.decode(elsewhere, other, algorithms=["HS256"]), wanted)
        with self.assertRaises(jwt.InvalidSignatureError):
            jwt.decode(elsewhere, self.secret, algorithms=["HS256"])


if __name__ == "__main__":
    unittest.main()
