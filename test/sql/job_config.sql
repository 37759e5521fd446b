-- job_config: rows that could misdirect or break requests are refused, each
-- with SQLSTATE 22023 (or 42P13 for hooks) and a message naming the value.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

-- A valid row, with the defaults filled in.
INSERT INTO jobrunner.job_config (job_name, url) VALUES ('cfg.ok', 'https://api.example.com/jobs/ok');
SELECT job_name, url, enabled, concurrency_limit, max_concurrency, rate_limit, timeout,
       max_retries, retry_backoff, retry_backoff_max, headers, completion, on_complete, on_fail
  FROM jobrunner.job_config;
-- NULL url: the job goes to jobrunner.base_url/job_name.
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name) VALUES ('cfg.base-url_1')$$);

-- Job names: letters, digits, ".", "_", "-"; 1 to 128 characters.
SELECT n AS job_name, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url) VALUES (%L, %L)',
                                         n, 'http://localhost/x')) AS result
  FROM unnest(ARRAY['has space', '', 'slash/name', 'semi;colon', E'new\nline',
                    'ünïcode']) AS n;
SELECT left(regress.err(format('INSERT INTO jobrunner.job_config (job_name, url) VALUES (%L, %L)',
                               repeat('x', 129), 'http://localhost/x')), 40) AS name_of_129_chars;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url) VALUES (NULL, 'http://localhost/x')$$);
SELECT regress.err(format('INSERT INTO jobrunner.job_config (job_name, url) VALUES (%L, %L)',
                          repeat('x', 128), 'http://localhost/x')) AS name_of_128_chars;
DELETE FROM jobrunner.job_config WHERE job_name = repeat('x', 128);

-- URLs: absolute http(s) only, no whitespace, control characters or credentials.
SELECT u AS url, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url) VALUES (%L, %L)',
                                    'cfg.url', u)) AS result
  FROM unnest(ARRAY['javascript:alert(1)', 'ftp://files.example.com/x', 'file:///etc/passwd',
                    'http://exa mple.com/x', 'http://example.com/a b', E'http://example.com/\r\nX: 1',
                    'http://user:secret@example.com/x', 'example.com/x', '/relative', 'http://',
                    '']) AS u;
SELECT u AS url, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url) VALUES (%L, %L)',
                                    'cfg.url-' || ord, u)) AS result
  FROM unnest(ARRAY['http://localhost:8080/hook', 'https://api.example.com/v1/jobs?x=1',
                    'HTTPS://EXAMPLE.COM/']) WITH ORDINALITY AS t(u, ord);

-- Headers: a JSON object of strings; names are tokens; values have no CR/LF/NUL.
SELECT h AS headers, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url, headers) VALUES (%L, %L, %L)',
                                        'cfg.hdr', 'http://localhost/x', h)) AS result
  FROM unnest(ARRAY['{"X-Trace": "a\r\nInjected: 1"}', '{"X-Trace": "a\nb"}', '{"X-Trace": "a\rb"}',
                    '{"X-Trace": "a\u0000b"}', '{"Bad Name": "x"}', '{"X:Colon": "x"}', '{"": "x"}',
                    '{"X-Count": 1}', '{"X-Obj": {"a": 1}}', '["X-Trace", "x"]', '"X-Trace: x"']) AS h;
-- Headers pg_jobrunner sets itself cannot be overridden, whatever their case.
SELECT h AS headers, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url, headers) VALUES (%L, %L, %L)',
                                        'cfg.hdr', 'http://localhost/x', h)) AS result
  FROM unnest(ARRAY['{"Authorization": "Bearer x"}', '{"authorization": "x"}', '{"Content-Type": "text/plain"}',
                    '{"HOST": "evil.example.com"}', '{"X-Job": "false"}', '{"X-Correlation-ID": "x"}',
                    '{"X-Job-Name": "x"}', '{"X-Job-Attempt": "9"}', '{"Idempotency-Key": "x"}',
                    '{"User-Agent": "x"}', '{"Content-Length": "0"}', '{"Transfer-Encoding": "chunked"}']) AS h;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url, headers)
                     VALUES ('cfg.hdr', 'http://localhost/x', '{"X-Api-Key": "k-123", "Accept": "application/json"}')$$)
       AS good_headers;

-- Limits.
SELECT s AS setting, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url, %s) VALUES (%L, %L, %s)',
                                        split_part(s, '=', 1), 'cfg.lim', 'http://localhost/x',
                                        split_part(s, '=', 2))) AS result
  FROM unnest(ARRAY['concurrency_limit=0', 'concurrency_limit=-1', 'max_concurrency=0',
                    'max_concurrency=-5', 'rate_limit=0', 'rate_limit=-0.5',
                    $$timeout='0'$$, $$timeout='-1 second'$$, $$timeout='2 days'$$,
                    'max_retries=-1', 'max_retries=1001', $$retry_backoff='-1 second'$$,
                    $$callback_lease='0'$$, $$completion='webhook'$$, 'completion=NULL',
                    'enabled=NULL']) AS s;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url, retry_backoff, retry_backoff_max)
                     VALUES ('cfg.lim', 'http://localhost/x', '1 minute', '30 seconds')$$) AS backoff_above_cap;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_concurrency,
                                                        rate_limit, timeout, max_retries, retry_backoff,
                                                        retry_backoff_max, completion, callback_lease)
                     VALUES ('cfg.lim', 'http://localhost/x', 5, 20, 2.5, '30 seconds', 0, '0', '0',
                             'callback', '10 minutes')$$) AS good_limits;

-- Hooks take exactly one jobrunner.job.
CREATE FUNCTION public.cfg_hook_ok(j jobrunner.job) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.cfg_hook_text(t text) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.cfg_hook_two(j jobrunner.job, t text) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION public.cfg_hook_none() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE PROCEDURE public.cfg_hook_proc(j jobrunner.job) LANGUAGE sql AS 'SELECT';
SELECT h AS hook, regress.err(format('INSERT INTO jobrunner.job_config (job_name, url, on_complete) VALUES (%L, %L, %L)',
                                     'cfg.hook', 'http://localhost/x', h)) AS on_complete,
       regress.err(format('INSERT INTO jobrunner.job_config (job_name, url, on_fail) VALUES (%L, %L, %L)',
                          'cfg.hook2', 'http://localhost/x', h)) AS on_fail
  FROM unnest(ARRAY['public.cfg_hook_text(text)', 'public.cfg_hook_two(jobrunner.job,text)',
                    'public.cfg_hook_none()', 'public.cfg_hook_proc(jobrunner.job)']) AS h;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url, on_complete, on_fail)
                     VALUES ('cfg.hook', 'http://localhost/x', 'public.cfg_hook_ok(jobrunner.job)',
                             'public.cfg_hook_ok(jobrunner.job)')$$) AS good_hooks;
SELECT regress.err($$INSERT INTO jobrunner.job_config (job_name, url, on_complete)
                     VALUES ('cfg.hook3', 'http://localhost/x', 'public.no_such_hook(jobrunner.job)')$$)
       AS missing_hook;

-- UPDATE is validated the same way, and refreshes updated_at.
SELECT regress.err($$UPDATE jobrunner.job_config SET url = 'ftp://example.com/' WHERE job_name = 'cfg.ok'$$);
SELECT regress.err($$UPDATE jobrunner.job_config SET headers = '{"X-A": "1\r\n"}' WHERE job_name = 'cfg.ok'$$);
SELECT regress.err($$UPDATE jobrunner.job_config SET job_name = 'cfg ok' WHERE job_name = 'cfg.ok'$$);
SELECT regress.err($$UPDATE jobrunner.job_config SET max_retries = -3 WHERE job_name = 'cfg.ok'$$);
ALTER TABLE jobrunner.job_config DISABLE TRIGGER job_config_validate;
UPDATE jobrunner.job_config SET updated_at = now() - interval '1 day' WHERE job_name = 'cfg.ok';
ALTER TABLE jobrunner.job_config ENABLE TRIGGER job_config_validate;
SELECT updated_at < now() - interval '1 hour' AS backdated FROM jobrunner.job_config WHERE job_name = 'cfg.ok';
UPDATE jobrunner.job_config SET max_retries = 7 WHERE job_name = 'cfg.ok';
SELECT max_retries, updated_at > now() - interval '1 hour' AS updated_at_refreshed
  FROM jobrunner.job_config WHERE job_name = 'cfg.ok';

-- What was accepted.
SELECT job_name, url, headers, on_complete FROM jobrunner.job_config ORDER BY job_name COLLATE "C";

-- A hook dropped after it was set: the job name can still be disabled and
-- edited, and the hook cleared; setting the dropped hook again is refused.
CREATE FUNCTION public.cfg_hook_gone(j jobrunner.job) RETURNS void LANGUAGE sql AS 'SELECT';
INSERT INTO jobrunner.job_config (job_name, url, on_complete)
VALUES ('cfg.gone', 'http://localhost/x', 'public.cfg_hook_gone(jobrunner.job)');
SELECT on_complete::oid AS gone_hook FROM jobrunner.job_config WHERE job_name = 'cfg.gone' \gset
DROP FUNCTION public.cfg_hook_gone(jobrunner.job);
SELECT regress.err($$UPDATE jobrunner.job_config SET enabled = false, max_retries = 1 WHERE job_name = 'cfg.gone'$$)
       AS disable_with_dropped_hook;
SELECT regexp_replace(regress.err(format('UPDATE jobrunner.job_config SET on_fail = %s WHERE job_name = %L',
                                         :gone_hook, 'cfg.gone')), 'hook \d+', 'hook <oid>')
       AS dropped_hook_refused_as_new;
SELECT regress.err($$UPDATE jobrunner.job_config SET on_complete = NULL WHERE job_name = 'cfg.gone'$$)
       AS hook_cleared;
SELECT enabled, max_retries, on_complete FROM jobrunner.job_config WHERE job_name = 'cfg.gone';

DELETE FROM jobrunner.job_config;
DROP FUNCTION public.cfg_hook_ok(jobrunner.job), public.cfg_hook_text(text),
              public.cfg_hook_two(jobrunner.job, text), public.cfg_hook_none();
DROP PROCEDURE public.cfg_hook_proc(jobrunner.job);
