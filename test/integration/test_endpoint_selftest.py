"""test_endpoint_selftest.py — checks the recording test endpoint itself.

Needs no cluster and no extension: it talks to endpoint.Endpoint with urllib
(and http.client for keep-alive), with tokens made by PyJWT, so the tests
that rely on the endpoint can trust what it records.
"""

import http.client
import json
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

import jwt

from endpoint import Endpoint
from harness import wait_for

SECRET = "selftest-secret-0123456789-abcdefghijklmnopqrstuv"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(_NoRedirect)


def make_token(sub="11111111-1111-1111-1111-111111111111", role="authenticated",
               secret=SECRET, ttl=60, **extra):
    now = int(time.time())
    claims = {"sub": sub, "role": role, "aud": role, "email": "u@example.com",
              "iat": now, "exp": now + ttl}
    claims.update(extra)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


def contract_headers(job_id=None, job_name="selftest", attempt=1, token=None):
    job_id = job_id or str(uuid.uuid4())
    # The token is bound to the attempt, as the worker mints it.
    bound = {"jti": "%s/%s" % (job_id, attempt), "job": {"id": job_id, "name": job_name, "attempt": attempt}}
    return {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + (token or make_token(**bound)),
        "X-Job": "true",
        "X-Correlation-ID": job_id,
        "X-Job-Name": job_name,
        "X-Job-Attempt": str(attempt),
        "Idempotency-Key": job_id,
        "User-Agent": "pg_jobrunner/0.1.0",
    }


def post(url, headers=None, body=b"{}", timeout=10):
    """POST with urllib; return (status, headers, body) for any status."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers=headers if headers is not None else contract_headers())
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


class EndpointSelfTest(unittest.TestCase):
    def setUp(self):
        self.ep = Endpoint(secret=SECRET).start()
        self.addCleanup(self.ep.shutdown)

    def test_ok_records_verified_claims_and_no_violations(self):
        job_id = str(uuid.uuid4())
        status, _, body = post(self.ep.url("/ok"), contract_headers(job_id),
                               body=b'{"to":"a@b.c"}')
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"ok": True})
        [rec] = self.ep.wait_for_requests(1)
        self.assertEqual(rec.path, "/ok")
        self.assertEqual(rec.status, 200)
        self.assertEqual(rec.correlation_id, job_id)
        self.assertEqual(rec.attempt, 1)
        self.assertEqual(rec.json(), {"to": "a@b.c"})
        self.assertIsNone(rec.jwt_error)
        self.assertEqual(rec.claims["sub"], "11111111-1111-1111-1111-111111111111")
        self.assertEqual(rec.claims["aud"], "authenticated")
        self.assertEqual(rec.header("x-job-name"), "selftest")
        self.assertEqual(self.ep.violations(), [])
        self.ep.assert_no_violations()

    def test_header_violations_are_recorded(self):
        headers = contract_headers()
        del headers["X-Job"]
        headers["Idempotency-Key"] = str(uuid.uuid4())
        headers["User-Agent"] = "curl/8.0"
        headers["Content-Type"] = "text/plain"
        headers["X-Job-Attempt"] = "zero"
        status, _, _ = post(self.ep.url("/ok"), headers, body=b"not json")
        self.assertEqual(status, 200)
        problems = [p for _, p in self.ep.violations()]
        text = "\n".join(problems)
        self.assertIn("missing header X-Job", text)
        self.assertIn("Idempotency-Key", text)
        self.assertIn("User-Agent", text)
        self.assertIn("Content-Type", text)
        self.assertIn("X-Job-Attempt", text)
        self.assertIn("body is not JSON", text)
        # The token was minted for attempt 1, the header says "zero".
        self.assertIn("job claim", text)
        self.assertIn("jti", text)
        self.assertEqual(len(problems), 8, text)
        with self.assertRaises(AssertionError):
            self.ep.assert_no_violations()

    def test_jwt_verification_failures(self):
        cases = {
            "wrong secret": make_token(secret="another-secret-which-is-long-enough-0123456789"),
            "expired": make_token(ttl=-120),
            "wrong audience": make_token(aud="someone_else"),
            "no exp": make_token(exp=None),
            "no role": make_token(role=None, aud="x"),
        }
        for what, token in cases.items():
            post(self.ep.url("/ok"), contract_headers(token=token))
        recs = self.ep.wait_for_requests(len(cases))
        for (what, _), rec in zip(cases.items(), recs):
            self.assertIsNone(rec.claims, what)
            self.assertIsNotNone(rec.jwt_error, what)
        self.assertIn("Signature", recs[0].jwt_error)
        self.assertIn("Expired", recs[1].jwt_error)
        self.assertIn("Audience", recs[2].jwt_error)
        self.assertIn("exp", recs[3].jwt_error)
        self.assertIn("role", recs[4].jwt_error)
        self.assertEqual(len(self.ep.violations()), len(cases))

    def test_system_token_without_sub_verifies(self):
        post(self.ep.url("/ok"), contract_headers(token=make_token(sub=None, role="service_role")))
        [rec] = self.ep.wait_for_requests(1)
        self.assertIsNone(rec.jwt_error)
        self.assertNotIn("sub", rec.claims)
        self.assertEqual(rec.claims["role"], "service_role")

    def test_status_paths(self):
        self.assertEqual(post(self.ep.url("/nocontent"))[0], 204)
        self.assertEqual(post(self.ep.url("/fail"))[0], 500)
        self.assertEqual(post(self.ep.url("/nowhere"))[0], 404)
        status, headers, _ = post(self.ep.url("/retry-after?s=7"))
        self.assertEqual(status, 429)
        self.assertEqual(headers["Retry-After"], "7")
        status, headers, _ = post(self.ep.url("/redirect"))
        self.assertEqual(status, 302)
        self.assertEqual(headers["Location"], "/ok")
        self.ep.wait_for_requests(5)
        self.assertEqual(self.ep.requests(path="/ok"), [], "the redirect was not followed")

    def test_retry_after_times_limits_429s_per_job(self):
        job_id = str(uuid.uuid4())
        url = self.ep.url("/retry-after?s=3&times=1")
        self.assertEqual(post(url, contract_headers(job_id))[0], 429)
        self.assertEqual(post(url, contract_headers(job_id, attempt=2))[0], 200)

    def test_flaky_fails_first_n_attempts_per_job(self):
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        url = self.ep.url("/flaky?fail=2")
        got = [post(url, contract_headers(a, attempt=1))[0],
               post(url, contract_headers(b, attempt=1))[0],
               post(url, contract_headers(a, attempt=2))[0],
               post(url, contract_headers(a, attempt=3))[0],
               post(url, contract_headers(b, attempt=2))[0],
               post(url, contract_headers(b, attempt=3))[0]]
        self.assertEqual(got, [500, 500, 500, 200, 500, 200])
        self.assertEqual(len(self.ep.requests(correlation_id=a)), 3)

    def test_huge_streams_the_requested_size(self):
        status, _, body = post(self.ep.url("/huge?mb=3"))
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 3 * 1024 * 1024)
        self.assertEqual(len(json.loads(body)["pad"]), 3 * 1024 * 1024 - 10)

    def test_reset_gives_no_response(self):
        with self.assertRaises((urllib.error.URLError, http.client.HTTPException,
                                ConnectionError)):
            post(self.ep.url("/reset"))
        [rec] = self.ep.wait_for_requests(1)
        self.assertEqual(rec.path, "/reset")

    def test_slow_waits_at_least_the_given_time(self):
        started = time.monotonic()
        status, _, body = post(self.ep.url("/slow?ms=200"))
        self.assertEqual(status, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.2)
        self.assertEqual(json.loads(body)["slept_ms"], 200)

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.ep.port, timeout=10)
        self.addCleanup(conn.close)
        for attempt in (1, 2, 3):
            conn.request("POST", "/ok", body=b"{}", headers=contract_headers(attempt=attempt))
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            resp.read()
        ports = {rec.client[1] for rec in self.ep.wait_for_requests(3)}
        self.assertEqual(len(ports), 1, "all three came over one connection")

    def test_concurrency_is_counted_per_user_job_and_overall(self):
        user_a = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
        user_b = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
        plan = [(user_a, "send"), (user_a, "send"), (user_b, "send"), (user_a, "other")]
        results = []

        def call(sub, job_name):
            headers = contract_headers(job_name=job_name, token=make_token(sub=sub))
            results.append(post(self.ep.url("/block"), headers)[0])

        threads = [threading.Thread(target=call, args=p, daemon=True) for p in plan]
        for t in threads:
            t.start()
        self.ep.wait_for_current(4)
        self.assertEqual(self.ep.current(), 4)
        self.assertEqual(self.ep.current(job_name="send"), 3)
        self.assertEqual(self.ep.current(sub=user_a, job_name="send"), 2)
        self.ep.release()
        for t in threads:
            t.join(10)
        self.assertEqual(results, [200] * 4)
        self.ep.wait_for_current(0)
        self.assertEqual(self.ep.max_concurrent(), 4)
        self.assertEqual(self.ep.max_concurrent(job_name="send"), 3)
        self.assertEqual(self.ep.max_concurrent(sub=user_a, job_name="send"), 2)
        self.assertEqual(self.ep.max_concurrent(sub=user_b, job_name="send"), 1)
        self.assertEqual(self.ep.max_concurrent(sub=user_a, job_name="other"), 1)
        self.assertEqual(self.ep.max_concurrent(job_name="never"), 0)

    def test_callback_hands_the_job_to_the_test(self):
        seen = []
        self.ep.on_callback = seen.append
        job_id = str(uuid.uuid4())
        status, _, _ = post(self.ep.url("/callback"), contract_headers(job_id))
        self.assertEqual(status, 202)
        rec = self.ep.next_callback(timeout=5)
        self.assertEqual(rec.correlation_id, job_id)
        wait_for(lambda: seen, 5, message="on_callback was not called")
        self.assertEqual(seen[0].correlation_id, job_id)
        self.assertEqual(self.ep.callbacks(), [])

    def test_shutdown_is_bounded_and_closes_the_port(self):
        port = self.ep.port
        errors = []

        def blocked():
            try:
                post(self.ep.url("/block?ms=60000"), timeout=30)
            except Exception as exc:  # the answer may race the close
                errors.append(exc)

        t = threading.Thread(target=blocked, daemon=True)
        t.start()
        self.ep.wait_for_current(1)
        started = time.monotonic()
        self.ep.shutdown()
        self.assertLess(time.monotonic() - started, 10)
        t.join(10)
        self.assertFalse(t.is_alive())
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    def test_wait_for_fails_with_the_message(self):
        with self.assertRaises(AssertionError) as ctx:
            wait_for(lambda: False, timeout=0.1, message="never true")
        self.assertIn("never true", str(ctx.exception))
        self.assertEqual(wait_for(lambda: 42, timeout=0.1), 42)


if __name__ == "__main__":
    unittest.main()
