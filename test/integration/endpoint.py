"""endpoint.py — a real recording HTTP server for pg_jobrunner's integration tests.

It listens on 127.0.0.1 (an ephemeral port by default) in a background thread
of the test process, records every request (time, path, headers, body, the
verified JWT claims or the verification error), counts simultaneous requests
per (sub, X-Job-Name), per X-Job-Name and overall, and checks every request
against the HTTP contract in shared/spec/CONTRACT.md.

Behaviours by path (job_config.url points at them):
  /ok                200 {"ok":true}
  /nocontent         204
  /fail              500
  /flaky?fail=N      the first N attempts of each job (by X-Correlation-ID)
                     get 500, later ones 200
  /slow?ms=N         sleeps N ms, then 200
  /block?ms=N        waits until the test calls release() (at most N ms,
                     default 30000), then 200
  /retry-after?s=N[&times=K]
                     429 with Retry-After: N (the first K attempts per job
                     only, when times is given; 200 after)
  /hold?ms=N          like /block, but the request also ends (unanswered,
                     note "client went away while held") as soon as the
                     client closes its connection, so a dead client's
                     request does not look in progress; req.client_gone
                     says so
  /redirect          302 Location: /ok
  /huge?mb=N         200 with an N MiB JSON body, streamed
  /reset             closes the connection without a response (TCP RST)
  /raw               200 with the exact bytes base64-encoded in the job's
                     body as {"raw_b64": ...}
  /callback          202; the job id goes to callbacks() / next_callback(),
                     and on_callback(record) is called if set, so the test
                     decides when to call jobrunner.complete_job
  anything else      404
GET /_stats answers a JSON summary (for standalone use).

Standalone: python3 endpoint.py --host 0.0.0.0 --port 8080 serves until
interrupted and prints one JSON line per request; the JWT secret comes from
JOBRUNNER_SECRET (or --secret-env NAME).

Only the standard library and PyJWT are used.
"""

import argparse
import base64
import json
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt

# Headers the contract requires on every request, checked in check_contract.
REQUIRED_HEADERS = (
    "Content-Type",
    "Authorization",
    "X-Job",
    "X-Correlation-ID",
    "X-Job-Name",
    "X-Job-Attempt",
    "Idempotency-Key",
    "User-Agent",
)

JWT_LEEWAY_SECONDS = 2


class Request:
    """One recorded request. Header lookups are case-insensitive."""

    def __init__(self, method, path, query, header_items, body, client):
        self.time = time.time()
        self.started = time.monotonic()
        self.finished = None
        self.method = method
        self.path = path
        self.query = query
        self.header_items = list(header_items)
        self.body = body
        self.client = client
        self.claims = None
        self.jwt_error = None
        self.jwt_header = None
        self.violations = []
        self.status = None
        self.note = None
        self.client_gone = False  # /hold: the client closed before the answer
        # When the answer started to go out (monotonic): a client sees it only
        # after this, so [started, answered_at] intervals of requests that
        # depend on each other never overlap (finished can lag behind).
        self.answered_at = None

    def header(self, name, default=None):
        lname = name.lower()
        for key, value in self.header_items:
            if key.lower() == lname:
                return value
        return default

    @property
    def headers(self):
        return {k: v for k, v in self.header_items}

    @property
    def correlation_id(self):
        return self.header("X-Correlation-ID")

    @property
    def job_name(self):
        return self.header("X-Job-Name")

    @property
    def attempt(self):
        value = self.header("X-Job-Attempt")
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    @property
    def sub(self):
        return (self.claims or {}).get("sub")

    def json(self):
        """The request body parsed as JSON (ValueError if it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def summary(self):
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "job_name": self.job_name,
            "correlation_id": self.correlation_id,
            "attempt": self.header("X-Job-Attempt"),
            "sub": self.sub,
            "role": (self.claims or {}).get("role"),
            "jwt_error": self.jwt_error,
            "violations": self.violations,
            "body_bytes": len(self.body),
            "note": self.note,
        }

    def __repr__(self):
        return "Request(%s %s %s attempt=%s status=%s)" % (
            self.method, self.path, self.correlation_id,
            self.header("X-Job-Attempt"), self.status)


def verify_token(token, secret):
    """Verify an HS256 token: signature, exp, iat, aud == role claim.

    Returns (claims, header, error); claims is None when verification failed.
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        return None, None, "malformed token: %s" % exc
    if header.get("alg") != "HS256" or header.get("typ") != "JWT":
        return None, header, "unexpected JOSE header %r" % (header,)
    role = unverified.get("role")
    if not role:
        return None, header, "token has no role claim"
    if secret is None:
        return None, header, "not verified: no secret configured"
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=role,
            leeway=JWT_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "aud", "role"],
                     "verify_exp": True, "verify_iat": True,
                     "verify_aud": True},
        )
    except jwt.PyJWTError as exc:
        return None, header, "%s: %s" % (type(exc).__name__, exc)
    return claims, header, None


def check_contract(req):
    """Return the list of ways req breaks the HTTP contract."""
    problems = []
    if req.method != "POST":
        problems.append("method is %s, not POST" % req.method)
    for name in REQUIRED_HEADERS:
        if req.header(name) is None:
            problems.append("missing header %s" % name)
    ctype = req.header("Content-Type")
    if ctype is not None and ctype.split(";")[0].strip().lower() != "application/json":
        problems.append("Content-Type is %r" % ctype)
    auth = req.header("Authorization")
    if auth is not None and not auth.startswith("Bearer "):
        problems.append("Authorization is not a Bearer token")
    if req.header("X-Job") is not None and req.header("X-Job") != "true":
        problems.append("X-Job is %r, not 'true'" % req.header("X-Job"))
    cid = req.correlation_id
    if cid is not None:
        try:
            uuid.UUID(cid)
        except ValueError:
            problems.append("X-Correlation-ID %r is not a uuid" % cid)
    if req.header("X-Job-Name") == "":
        problems.append("X-Job-Name is empty")
    attempt = req.header("X-Job-Attempt")
    if attempt is not None and (not attempt.isdigit() or int(attempt) < 1):
        problems.append("X-Job-Attempt %r is not a positive integer" % attempt)
    idem = req.header("Idempotency-Key")
    if idem is not None and cid is not None and idem != cid:
        problems.append("Idempotency-Key %r differs from X-Correlation-ID %r" % (idem, cid))
    agent = req.header("User-Agent")
    if agent is not None and not agent.startswith("pg_jobrunner/"):
        problems.append("User-Agent %r does not start with pg_jobrunner/" % agent)
    try:
        req.json()
    except ValueError:
        problems.append("body is not JSON")
    if req.jwt_error is not None and auth is not None:
        problems.append("JWT: %s" % req.jwt_error)
    # The token is bound to this attempt of this job (complete_job and
    # fail_job believe an endpoint only with it).
    if req.claims is not None:
        bound = req.claims.get("job") or {}
        if (bound.get("id"), bound.get("name"), str(bound.get("attempt"))) != (
                cid, req.header("X-Job-Name"), attempt):
            problems.append("JWT: job claim %r does not match the request's headers" % (bound,))
        if req.claims.get("jti") != "%s/%s" % (cid, attempt):
            problems.append("JWT: jti %r is not <job id>/<attempt>" % (req.claims.get("jti"),))
    return problems


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jobrunner-test-endpoint"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30

    def setup(self):
        super().setup()
        self.server.owner._track_connection(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._track_connection(self.connection, False)

    def log_message(self, fmt, *args):  # quiet: the owner records requests
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self):
        owner = self.server.owner
        parts = urlsplit(self.path)
        body = self._read_body()
        req = Request(self.command, parts.path, parse_qs(parts.query),
                      self.headers.items(), body, self.client_address)
        owner._begin(req)
        try:
            owner._dispatch(self, req)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as exc:
            req.note = "client went away: %s" % type(exc).__name__
            self.close_connection = True
        finally:
            owner._end(req)

    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle

    def do_GET(self):
        if urlsplit(self.path).path == "/_stats":
            self.server.owner._send_json(self, 200, self.server.owner.stats())
            return
        self._handle()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        """Quiet when a client vanished (a killed worker's idle keep-alive
        connections reset); anything else is printed as before."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Endpoint:
    """A recording HTTP server on 127.0.0.1, started in a background thread.

        with Endpoint() as ep:
            url = ep.url("/ok")
            ...
            ep.wait_for_requests(1, timeout=10)

    secret defaults to the JOBRUNNER_SECRET environment variable.
    """

    def __init__(self, secret=None, host="127.0.0.1", port=0, max_records=None,
                 on_request=None):
        self.secret = secret if secret is not None else os.environ.get("JOBRUNNER_SECRET")
        self.host = host
        self.port = port
        self.max_records = max_records
        self.on_request = on_request  # called with each finished Request
        self.on_callback = None  # called with each /callback Request
        self._lock = threading.Condition()
        self._records = []
        self._violations = []
        self._attempts = {}  # (path, correlation id) -> attempts seen
        self._current = {}
        self._maximum = {}
        self._callbacks = queue.Queue()
        self._release = threading.Event()
        self._stopping = threading.Event()
        self._connections = set()
        self._server = None
        self._thread = None

    # --- life cycle -----------------------------------------------------
    def start(self):
        self._server = _Server((self.host, self.port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="endpoint-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def shutdown(self):
        """Stop serving, release blocked requests and close open connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    def url(self, path="/ok"):
        return self.base_url + path

    # --- what the test reads ---------------------------------------------
    def requests(self, path=None, correlation_id=None, job_name=None):
        """A copy of the recorded requests, optionally filtered."""
        with self._lock:
            recs = list(self._records)
        return [r for r in recs
                if (path is None or r.path == path)
                and (correlation_id is None or r.correlation_id == str(correlation_id))
                and (job_name is None or r.job_name == job_name)]

    def violations(self):
        """[(request, problem)] for every contract violation seen."""
        with self._lock:
            return list(self._violations)

    def assert_no_violations(self):
        found = self.violations()
        if found:
            raise AssertionError("endpoint saw contract violations:\n" + "\n".join(
                "  %r: %s" % (r, p) for r, p in found[:20]))

    def current(self, sub=None, job_name=None):
        """Requests being handled now: overall, per job name, or per (sub, job)."""
        with self._lock:
            return self._current.get(self._key(sub, job_name), 0)

    def max_concurrent(self, sub=None, job_name=None):
        """The most requests handled at once, for the same keys as current()."""
        with self._lock:
            return self._maximum.get(self._key(sub, job_name), 0)

    def wait_for_requests(self, count, timeout=10.0, **filters):
        """Block until at least count matching requests finished; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [r for r in self.requests(**filters) if r.finished is not None]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("endpoint: %d of %d requests (%r) after %.1fs" % (
                        len(found), count, filters, timeout))
                self._lock.wait(min(left, 0.2))

    def wait_for_current(self, count, timeout=10.0, sub=None, job_name=None):
        """Block until exactly count matching requests are being handled."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._current.get(self._key(sub, job_name), 0) != count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("endpoint: %d requests in progress, wanted %d" % (
                        self._current.get(self._key(sub, job_name), 0), count))
                self._lock.wait(min(left, 0.2))

    def callbacks(self):
        """Drain and return the /callback requests not yet taken."""
        out = []
        while True:
            try:
                out.append(self._callbacks.get_nowait())
            except queue.Empty:
                return out

    def next_callback(self, timeout=10.0):
        """The next /callback request (waits up to timeout)."""
        try:
            return self._callbacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("endpoint: no /callback request within %.1fs" % timeout)

    def release(self):
        """Let every /block request (now and later) answer."""
        self._release.set()

    def hold(self):
        """Make /block requests wait again until release()."""
        self._release.clear()

    def clear(self):
        """Forget recorded requests, violations, attempts and maxima."""
        with self._lock:
            self._records.clear()
            self._violations.clear()
            self._attempts.clear()
            self._maximum = dict(self._current)
        self.callbacks()

    def stats(self):
        with self._lock:
            by_status = {}
            for r in self._records:
                by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
            return {
                "requests": len(self._records),
                "by_status": by_status,
                "violations": len(self._violations),
                "max_concurrent": self._maximum.get(self._key(None, None), 0),
                "in_progress": self._current.get(self._key(None, None), 0),
            }

    # --- internals ---------------------------------------------------------
    @staticmethod
    def _key(sub, job_name):
        if sub is not None and job_name is None:
            raise ValueError("per-sub counts are kept per (sub, job_name)")
        if job_name is None:
            return ("all",)
        if sub is None:
            return ("job", job_name)
        return ("user_job", str(sub), job_name)

    def _keys_for(self, req):
        keys = [("all",)]
        if req.job_name is not None:
            keys.append(("job", req.job_name))
            keys.append(("user_job", str(req.sub), req.job_name))
        return keys

    def _track_connection(self, conn, is_open):
        with self._lock:
            if is_open:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _begin(self, req):
        auth = req.header("Authorization") or ""
        if auth.startswith("Bearer "):
            req.claims, req.jwt_header, req.jwt_error = verify_token(auth[7:], self.secret)
        else:
            req.jwt_error = "no bearer token"
        req.violations = check_contract(req)
        if self.secret is None:
            req.violations = [v for v in req.violations if not v.startswith("JWT: not verified")]
        with self._lock:
            self._records.append(req)
            if self.max_records is not None and len(self._records) > self.max_records:
                del self._records[: len(self._records) - self.max_records]
            self._violations.extend((req, v) for v in req.violations)
            for key in self._keys_for(req):
                now = self._current.get(key, 0) + 1
                self._current[key] = now
                if now > self._maximum.get(key, 0):
                    self._maximum[key] = now
            self._lock.notify_all()

    def _end(self, req):
        req.finished = time.monotonic()
        with self._lock:
            for key in self._keys_for(req):
                self._current[key] -= 1
            self._lock.notify_all()
        if self.on_request is not None:
            self.on_request(req)

    def _attempt_number(self, req):
        """How many times this path has seen this job, this one included."""
        key = (req.path, req.correlation_id)
        with self._lock:
            self._attempts[key] = self._attempts.get(key, 0) + 1
            return self._attempts[key]

    @staticmethod
    def _int_param(req, name, default):
        try:
            return int(req.query[name][0])
        except (KeyError, IndexError, ValueError):
            return default

    def _send_json(self, handler, status, obj, extra_headers=()):
        data = json.dumps(obj).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _respond(self, handler, req, status, obj=None, extra_headers=()):
        req.status = status
        req.answered_at = time.monotonic()
        if status == 204:
            handler.send_response(204)
            for name, value in extra_headers:
                handler.send_header(name, value)
            handler.end_headers()
            return
        self._send_json(handler, status, obj if obj is not None else {}, extra_headers)

    def _dispatch(self, handler, req):
        path = req.path
        if path == "/ok":
            self._respond(handler, req, 200, {"ok": True})
        elif path == "/nocontent":
            self._respond(handler, req, 204)
        elif path == "/fail":
            self._respond(handler, req, 500, {"error": "failing on purpose"})
        elif path == "/flaky":
            n = self._attempt_number(req)
            if n <= self._int_param(req, "fail", 1):
                self._respond(handler, req, 500, {"error": "flaky", "attempt": n})
            else:
                self._respond(handler, req, 200, {"ok": True, "attempt": n})
        elif path == "/slow":
            ms = self._int_param(req, "ms", 1000)
            self._stopping.wait(ms / 1000.0)
            self._respond(handler, req, 200, {"ok": True, "slept_ms": ms})
        elif path == "/block":
            ms = self._int_param(req, "ms", 30000)
            released = self._release.wait(ms / 1000.0)
            self._respond(handler, req, 200, {"ok": True, "released": released})
        elif path == "/hold":
            self._hold(handler, req, self._int_param(req, "ms", 30000))
        elif path == "/retry-after":
            seconds = self._int_param(req, "s", 1)
            times = self._int_param(req, "times", None)
            n = self._attempt_number(req)
            if times is None or n <= times:
                self._respond(handler, req, 429, {"error": "slow down"},
                              [("Retry-After", str(seconds))])
            else:
                self._respond(handler, req, 200, {"ok": True, "attempt": n})
        elif path == "/redirect":
            req.status = 302
            handler.send_response(302)
            handler.send_header("Location", "/ok")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif path == "/huge":
            self._send_huge(handler, req, self._int_param(req, "mb", 1))
        elif path == "/reset":
            req.status = 0
            handler.close_connection = True
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
            handler.connection.close()
        elif path == "/raw":
            # 200 with the exact bytes of the job's {"raw_b64": ...}.
            data = base64.b64decode(req.json().get("raw_b64", ""))
            req.status = 200
            req.answered_at = time.monotonic()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        elif path == "/echo-headers":
            # A careless endpoint: the request's headers, token included.
            self._respond(handler, req, 200, {"headers": dict(req.header_items)})
        elif path == "/callback":
            self._respond(handler, req, 202, {"accepted": True})
            self._callbacks.put(req)
            if self.on_callback is not None:
                self.on_callback(req)
        else:
            self._respond(handler, req, 404, {"error": "no such path", "path": path})

    @staticmethod
    def _peer_closed(conn):
        """True when the client has closed (or reset) its side of conn."""
        try:
            poller = select.poll()  # not select(): descriptors may pass 1024
            poller.register(conn, select.POLLIN | select.POLLERR | select.POLLHUP)
            if not poller.poll(0):
                return False
            return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _hold(self, handler, req, ms):
        """/hold: wait for release() (at most ms), or end when the client goes away."""
        deadline = time.monotonic() + ms / 1000.0
        released = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._release.wait(min(left, 0.05)):
                released = True
                break
            if self._peer_closed(handler.connection):
                req.client_gone = True
                req.note = "client went away while held"
                handler.close_connection = True
                return
        self._respond(handler, req, 200, {"ok": True, "released": released})

    def _send_huge(self, handler, req, mb):
        total = max(mb, 0) * 1024 * 1024
        head, tail = b'{"pad":"', b'"}'
        fill = max(total - len(head) - len(tail), 0)
        req.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(head) + fill + len(tail)))
        handler.end_headers()
        handler.wfile.write(head)
        chunk = b"x" * 65536
        left = fill
        while left > 0 and not self._stopping.is_set():
            n = min(left, len(chunk))
            handler.wfile.write(chunk[:n])
            left -= n
        handler.wfile.write(tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description="pg_jobrunner test endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--secret-env", default="JOBRUNNER_SECRET",
                        help="environment variable holding the JWT secret")
    args = parser.parse_args(argv)

    def log(req):
        print(json.dumps(req.summary()), flush=True)

    ep = Endpoint(secret=os.environ.get(args.secret_env), host=args.host,
                  port=args.port, max_records=10000, on_request=log)
    ep.release()  # standalone: /block never waits for a test
    ep.start()
    print("endpoint listening on http://%s:%d" % (args.host, ep.port),
          file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        ep.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
