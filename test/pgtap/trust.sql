-- trust: what an attacker inside the database cannot do. Admin rights are
-- judged on the session's role (a SECURITY DEFINER wrapper lends none); code
-- that ANALYZE runs on a table owner's behalf is believed as nobody; hooks
-- run as their owner with only the job user's claims; attempt numbers never
-- repeat and a job is never sent while its last request is on the wire;
-- poison input is refused at enqueue; the claim reads only due jobs.
BEGIN;
SELECT plan(53);
SET LOCAL client_min_messages = warning;

CREATE ROLE jr_trust_admin LOGIN;
CREATE ROLE jr_trust_appowner LOGIN;
GRANT EXECUTE ON FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text),
                          jobrunner.mint_user_jwt(uuid, text, text, interval)
   TO jr_trust_admin;
GRANT CREATE ON SCHEMA public TO mallory, jr_trust_admin, jr_trust_appowner;

DELETE FROM jobrunner.job_log_entry;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries)
VALUES ('tap.trust', 'http://localhost/trust', 1, 3);

\set alice 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
\set bob 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'

------------------------------------------------------------------------------
-- Admin checks agree: an admin's SECURITY DEFINER wrapper makes nobody else
-- an admin, for queue_job_for as for dequeue_job and mint_user_jwt.
------------------------------------------------------------------------------
SET LOCAL ROLE jr_trust_admin;
CREATE FUNCTION public.trust_queue_for(_user uuid) RETURNS uuid LANGUAGE sql SECURITY DEFINER AS $$
    SELECT jobrunner.queue_job_for(_user, 'authenticated', NULL, 'tap.trust')
$$;
CREATE FUNCTION public.trust_mint(_user uuid) RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
    SELECT jobrunner.mint_user_jwt(_user, 'service_role', NULL)
$$;
GRANT EXECUTE ON FUNCTION public.trust_queue_for(uuid), public.trust_mint(uuid) TO mallory;
SELECT lives_ok(format('SELECT public.trust_queue_for(%L)', :'alice'), 'an admin queues for a user through its own function');
RESET ROLE;
SET LOCAL ROLE mallory;
SELECT throws_ok(format('SELECT public.trust_queue_for(%L)', :'alice'), '42501', 'queue_job_for is for administrators',
                 'mallory cannot queue for alice through an admin''s SECURITY DEFINER function');
SELECT throws_ok(format('SELECT public.trust_mint(%L)', :'alice'), '42501', 'mint_user_jwt is for administrators',
                 'nor mint a token for her that way');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM jobrunner.job), 1, 'only the admin''s own call queued a job');
SET LOCAL ROLE mallory;
SELECT throws_ok('SELECT jobrunner.resume_dispatch()', '42501', 'resume_dispatch is for administrators',
                 'nobody but an admin resumes a paused dispatch');
RESET ROLE;

------------------------------------------------------------------------------
-- Code ANALYZE runs on a table owner's behalf (an index expression) is a
-- security-restricted operation: the superuser running ANALYZE lends it no
-- admin rights, and claims it sets are not believed.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust', '{"victim": true}') AS alice_job \gset
SET LOCAL ROLE mallory;
CREATE TABLE public.trust_probe_log (what text, result text);
CREATE FUNCTION public.trust_attack() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    _victim uuid;
BEGIN
    PERFORM set_config('request.jwt.claims',
                       '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "service_role"}', true);
    SELECT id INTO _victim FROM jobrunner.job WHERE request_body ->> 'victim' = 'true';
    INSERT INTO public.trust_probe_log VALUES ('sees', (SELECT count(*) FROM jobrunner.job)::text);
    BEGIN
        PERFORM jobrunner.queue_job('tap.trust', '{"forged": true}');
        INSERT INTO public.trust_probe_log VALUES ('queue_job', 'ok');
    EXCEPTION WHEN others THEN
        INSERT INTO public.trust_probe_log VALUES ('queue_job', SQLSTATE);
    END;
    BEGIN
        PERFORM jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'service_role', NULL, 'tap.trust');
        INSERT INTO public.trust_probe_log VALUES ('queue_job_for', 'ok');
    EXCEPTION WHEN others THEN
        INSERT INTO public.trust_probe_log VALUES ('queue_job_for', SQLSTATE);
    END;
END $$;
CREATE FUNCTION public.trust_probe(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM public.trust_attack();
    RETURN x;
END $$;
CREATE TABLE public.trust_probe_t (x int);
INSERT INTO public.trust_probe_t SELECT g FROM generate_series(1, 3) g;
CREATE INDEX ON public.trust_probe_t (public.trust_probe(x));
DELETE FROM public.trust_probe_log;
RESET ROLE;
ANALYZE public.trust_probe_t;
SELECT ok((SELECT count(*) FROM public.trust_probe_log) > 0, 'ANALYZE ran mallory''s index expression');
SELECT is((SELECT array_agg(DISTINCT result) FROM public.trust_probe_log WHERE what = 'sees'), ARRAY['0'],
          'inside ANALYZE, with alice''s claims, it sees no job');
SELECT is((SELECT array_agg(DISTINCT result) FROM public.trust_probe_log WHERE what = 'queue_job'), ARRAY['42501'],
          'it cannot queue as alice');
SELECT is((SELECT array_agg(DISTINCT result) FROM public.trust_probe_log WHERE what = 'queue_job_for'), ARRAY['42501'],
          'nor borrow the superuser''s admin rights');
SELECT is((SELECT count(*)::int FROM jobrunner.job), 2, 'no job was queued');

------------------------------------------------------------------------------
-- Hooks run as their function's owner, inside a security-restricted
-- operation, with the job user's claims only, whoever completes the job.
------------------------------------------------------------------------------
SET LOCAL ROLE jr_trust_appowner;
CREATE TABLE public.trust_hook_log (job_id uuid, current_usr text, escalation text, claims text,
                                    claim_sub text, claim_aal text, queued_by text);
CREATE FUNCTION public.trust_hook(j jobrunner.job) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    _escalation text := 'ok';
    _follow_up uuid;
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE jr_trust_appowner SUPERUSER';
    EXCEPTION WHEN others THEN
        _escalation := SQLSTATE;
    END;
    _follow_up := jobrunner.queue_job('tap.trust', '{"follow_up": true}');
    INSERT INTO public.trust_hook_log
    VALUES (j.id, current_user, _escalation, current_setting('request.jwt.claims', true),
            current_setting('request.jwt.claim.sub', true), current_setting('request.jwt.claim.aal', true),
            (SELECT user_id::text FROM jobrunner.job WHERE id = _follow_up));
END $$;
RESET ROLE;
UPDATE jobrunner.job_config SET on_complete = 'public.trust_hook(jobrunner.job)', concurrency_limit = 10
 WHERE job_name = 'tap.trust';
-- Claim alice's job; the caller of complete_job has claims of its own (bob's).
UPDATE jobrunner.job SET next_run_at = now() + interval '1 day' WHERE id <> :'alice_job';
SELECT is((SELECT count(*)::int FROM jobrunner._claim(10, 42)), 1, 'the worker claims alice''s job');
SET LOCAL request.jwt.claims = '{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "service_role"}';
SET LOCAL request.jwt.claim.sub = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
SET LOCAL request.jwt.claim.aal = 'aal2';
SELECT is(jobrunner.complete_job(:'alice_job', '{"paid": true}'), true, 'an admin completes it; the hook runs');
SELECT is((SELECT current_usr FROM public.trust_hook_log WHERE job_id = :'alice_job'), 'jr_trust_appowner',
          'the hook ran as its owner, not as the superuser completing the job');
SELECT is((SELECT escalation FROM public.trust_hook_log WHERE job_id = :'alice_job'), '42501',
          'its ALTER ROLE ... SUPERUSER was refused');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'jr_trust_appowner'), false, 'the hook''s owner gained nothing');
SELECT is((SELECT claims::jsonb ->> 'sub' FROM public.trust_hook_log WHERE job_id = :'alice_job'), :'alice',
          'request.jwt.claims described alice');
SELECT is((SELECT claim_sub FROM public.trust_hook_log WHERE job_id = :'alice_job'), :'alice',
          'request.jwt.claim.sub described alice, not the caller''s bob');
SELECT is((SELECT claim_aal FROM public.trust_hook_log WHERE job_id = :'alice_job'), '',
          'a claim setting the caller chose was empty');
SELECT is((SELECT queued_by FROM public.trust_hook_log WHERE job_id = :'alice_job'), :'alice',
          'queue_job inside the hook queued for alice');
SELECT is(current_setting('request.jwt.claim.sub') || ' ' || current_setting('request.jwt.claim.aal'),
          :'bob' || ' aal2', 'the caller''s claim settings are back after the hook');
SELECT is(current_setting('request.jwt.claims')::jsonb ->> 'sub', :'bob', 'and so are its request.jwt.claims');
RESET request.jwt.claims;
RESET request.jwt.claim.sub;
RESET request.jwt.claim.aal;
-- From the worker's _record too.
SELECT jobrunner.queue_job_for(:'bob', 'authenticated', NULL, 'tap.trust', '{"n": 2}') AS bob_job \gset
UPDATE jobrunner.job SET next_run_at = now() + interval '1 day' WHERE id <> :'bob_job' AND state = 'pending';
SELECT is((SELECT array_agg(c.attempt) FROM jobrunner._claim(10, 42) c), ARRAY[1], 'the worker claims bob''s job');
SELECT is(jobrunner._record(42, ARRAY[:'bob_job']::uuid[], ARRAY[1], ARRAY[200], ARRAY[NULL]::text[], ARRAY[NULL]::text[],
                            ARRAY[1]::float8[], ARRAY[NULL]::bigint[]), '{}'::uuid[], 'its 200 is recorded');
SELECT is((SELECT current_usr || ' ' || escalation || ' ' || claim_sub FROM public.trust_hook_log WHERE job_id = :'bob_job'),
          'jr_trust_appowner 42501 ' || :'bob', 'from the worker too, the hook ran as its owner, for bob');
UPDATE jobrunner.job_config SET on_complete = NULL WHERE job_name = 'tap.trust';

-- Settings a hook changes, even with set_config(..., false), end with it:
-- a hook must not leave its search_path (a superuser's session would then
-- resolve names through the hook owner's schema), claims or timeouts behind.
SET LOCAL ROLE jr_trust_appowner;
CREATE FUNCTION public.trust_settings_hook(j jobrunner.job) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('search_path', 'public, pg_catalog', false);
    PERFORM set_config('lock_timeout', '0', false);
    PERFORM set_config('trust.tenant', j.user_id::text, false);
    PERFORM set_config('request.jwt.claims', '{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "service_role"}', false);
END $$;
RESET ROLE;
UPDATE jobrunner.job_config SET on_complete = 'public.trust_settings_hook(jobrunner.job)' WHERE job_name = 'tap.trust';
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust', '{"n": 3}') AS settings_job \gset
UPDATE jobrunner.job SET next_run_at = now() + interval '1 day' WHERE id <> :'settings_job' AND state = 'pending';
SELECT current_setting('search_path') AS search_path_before, current_setting('lock_timeout') AS lock_timeout_before \gset
SELECT is((SELECT count(*)::int FROM jobrunner._claim(10, 42)), 1, 'the worker claims the job whose hook changes settings');
SELECT is(jobrunner.complete_job(:'settings_job'), true, 'an admin completes it');
SELECT is(current_setting('search_path') || ' / ' || current_setting('lock_timeout'),
          :'search_path_before' || ' / ' || :'lock_timeout_before', 'the hook''s search_path and lock_timeout did not outlive it');
SELECT is(COALESCE(current_setting('trust.tenant', true), ''), '', 'nor did a setting it made up');
SELECT is(COALESCE(current_setting('request.jwt.claims', true), ''), '', 'nor the claims it set');
UPDATE jobrunner.job_config SET on_complete = NULL WHERE job_name = 'tap.trust';

------------------------------------------------------------------------------
-- Attempt numbers never repeat: a late complete_job for attempt 1 cannot
-- complete attempt 1 of a retried job. A job whose request is still on the
-- wire is not sent again, and holds its slot, until that request ends.
------------------------------------------------------------------------------
UPDATE jobrunner.job_config SET concurrency_limit = 1 WHERE job_name = 'tap.trust';
DELETE FROM jobrunner.job WHERE job_name = 'tap.trust';
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust', '{"n": 1}') AS j1 \gset
SELECT is((SELECT array_agg(c.attempt) FROM jobrunner._claim(10, 42) c), ARRAY[1], 'attempt 1 starts');
SELECT is(jobrunner.fail_job(:'j1', 'failed while its request runs', _retry => false), true,
          'fail_job fails it while its request is on the wire');
SELECT is(jobrunner.retry_job(:'j1'), true, 'retry_job puts it back');
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust', '{"n": 2}') AS j2 \gset
SELECT is((SELECT count(*)::int FROM jobrunner._claim(10, 42)), 0,
          'neither it nor another job of alice''s starts: its request still holds her one slot');
SELECT is(jobrunner._record(42, ARRAY[:'j1']::uuid[], ARRAY[1], ARRAY[200], ARRAY[NULL]::text[], ARRAY['{"late": true}'],
                            ARRAY[1]::float8[], ARRAY[NULL]::bigint[]), '{}'::uuid[], 'the request ends with a 200');
SELECT is((SELECT state || ' ' || attempts || ' ' || COALESCE(response::text, '-') FROM jobrunner.job WHERE id = :'j1'),
          'pending 0 -', 'its late 200 changed nothing but the slot');
UPDATE jobrunner.job SET next_run_at = now() + interval '1 day' WHERE id = :'j2';
SELECT is((SELECT array_agg(c.attempt) FROM jobrunner._claim(10, 42) c), ARRAY[2], 'the job starts again: attempt 2, not 1');
SELECT is((SELECT attempts || '/' || attempt_seq FROM jobrunner.job WHERE id = :'j1'), '1/2',
          'its retry count was reset, its attempt number was not');
SELECT is(jobrunner.complete_job(:'j1', '{"stale": true}', _attempt => 1), false, 'a late complete_job for attempt 1 is refused');
SELECT is(jobrunner._record(42, ARRAY[:'j1']::uuid[], ARRAY[1], ARRAY[200], ARRAY[NULL]::text[], ARRAY['{"stale": true}'],
                            ARRAY[1]::float8[], ARRAY[NULL]::bigint[]), '{}'::uuid[], 'a late 200 for attempt 1 ...');
SELECT is((SELECT state FROM jobrunner.job WHERE id = :'j1'), 'running', '... changes nothing either');
SELECT is(jobrunner.complete_job(:'j1', '{"ok": true}', _attempt => 2), true, 'attempt 2 completes');

------------------------------------------------------------------------------
-- Poison input is refused at enqueue, with the value named.
------------------------------------------------------------------------------
SET LOCAL ROLE authenticated;
SET LOCAL request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
SELECT throws_ok($$SELECT jobrunner.queue_job('tap.trust', _dedup_key => 'schedule:bill-alice')$$, '22023',
                 'dedup key ''schedule:bill-alice'' is reserved for schedules',
                 'a user''s dedup key cannot pre-empt a schedule''s runs');
RESET ROLE;
RESET request.jwt.claims;
SELECT throws_ok($$INSERT INTO jobrunner.job_config (job_name, url) VALUES ('..', NULL)$$, '22023', NULL,
                 'a job name of dots is refused: with base_url it would leave its path');
SELECT throws_ok(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L, _run_at => %L)', :'alice', 'authenticated', 'tap.trust', 'infinity'),
                 '22023', 'run_at must be a finite time, not infinity', 'run_at infinity is refused');
SELECT throws_ok(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L, _run_at => %L)', :'alice', 'authenticated', 'tap.trust', '-infinity'),
                 '22023', 'run_at must be a finite time, not -infinity', 'run_at -infinity is refused');
SET LOCAL jobrunner.max_request_size = '1kB';
SELECT throws_ok(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L, %L::jsonb)', :'alice', 'authenticated', 'tap.trust',
                        jsonb_build_object('blob', repeat('x', 2000))),
                 '54000', 'request body of job "tap.trust" is 2012 bytes, more than jobrunner.max_request_size (1kB)',
                 'a body over jobrunner.max_request_size is refused');
SELECT lives_ok(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L, %L::jsonb)', :'alice', 'authenticated', 'tap.trust',
                       jsonb_build_object('blob', repeat('x', 900))), 'a body within it is queued');
-- One queued before the limit was lowered far below it is never read by the claim.
DELETE FROM jobrunner.job WHERE job_name = 'tap.trust';
SET LOCAL jobrunner.max_request_size = '4MB';
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust',
                               jsonb_build_object('blob', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 60000) g)))
       AS big \gset
SET LOCAL jobrunner.max_request_size = '1kB';
SELECT is((SELECT (c.request_body IS NULL)::text || ' ' || (c.body_bytes > 16 * 1024)::text FROM jobrunner._claim(10, 42) c),
          'true true', 'the claim carries no body far past the limit, only its size');
RESET jobrunner.max_request_size;

------------------------------------------------------------------------------
-- The claim reads only due jobs: 3000 delayed jobs with distinct priorities
-- cost it nothing.
------------------------------------------------------------------------------
DELETE FROM jobrunner.job WHERE job_name = 'tap.trust';
UPDATE jobrunner.job_config SET concurrency_limit = 100 WHERE job_name = 'tap.trust';
INSERT INTO jobrunner.job (user_id, user_role, job_name, request_body, priority, max_retries, next_run_at, due)
SELECT :'alice', 'authenticated', 'tap.trust', '{}', g, 0, now() + interval '1 day', false
  FROM generate_series(1, 3000) g;
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'tap.trust', '{"due": true}', _priority => -1) AS due_job \gset
SELECT pg_stat_get_xact_tuples_returned('jobrunner.job_pending_idx'::regclass) AS read_before \gset
SELECT is((SELECT array_agg(c.id) FROM jobrunner._claim(512, 42) c), ARRAY[:'due_job']::uuid[], 'the claim takes the one due job');
-- (Entries of rows deleted earlier in this transaction are read too: a few
-- dozen, not thousands.)
SELECT cmp_ok(pg_stat_get_xact_tuples_returned('jobrunner.job_pending_idx'::regclass) - :read_before, '<', 100::bigint,
              'reading a handful of index entries, not the 3000 delayed ones');
SELECT is((SELECT count(*)::int FROM jobrunner.job WHERE job_name = 'tap.trust' AND state = 'pending' AND NOT due), 3000,
          'the delayed jobs stay waiting');
-- When their time comes the claim marks them due and takes them, in priority order.
UPDATE jobrunner.job SET next_run_at = now() - interval '1 second' WHERE job_name = 'tap.trust' AND state = 'pending';
SELECT is((SELECT array_agg(c.attempt) FROM (SELECT * FROM jobrunner._claim(3, 42)) c), ARRAY[1, 1, 1],
          'once due, they are claimed');
SELECT is((SELECT array_agg(priority ORDER BY priority DESC) FROM jobrunner.job WHERE job_name = 'tap.trust' AND state = 'running' AND priority > 0),
          ARRAY[3000, 2999, 2998], 'highest priority first');

SELECT * FROM finish();
ROLLBACK;
