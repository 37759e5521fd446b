-- wrk script for ceiling A: a POST with a small JSON body and the header
-- sizes of a pg_jobrunner request (a JWT bearer token, the X-Job headers).
wrk.method = "POST"
wrk.body = '{"user":"3f2b8c1e-5a4d-4e6f-9a7b-1c2d3e4f5a6b","i":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. string.rep("x", 300)
wrk.headers["X-Job"] = "true"
wrk.headers["X-Correlation-ID"] = "3f2b8c1e-5a4d-4e6f-9a7b-1c2d3e4f5a6b"
wrk.headers["X-Job-Name"] = "bench"
wrk.headers["X-Job-Attempt"] = "1"
wrk.headers["Idempotency-Key"] = "3f2b8c1e-5a4d-4e6f-9a7b-1c2d3e4f5a6b"
