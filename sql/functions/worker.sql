-- worker.sql — the statements the background worker runs (it runs as a
-- superuser: every name is qualified, every function pins search_path), and
-- its live figures.

-- public API
CREATE OR REPLACE FUNCTION jobrunner.worker_status(
        OUT running boolean, OUT pid int, OUT started_at timestamptz,
        OUT in_flight int, OUT dispatched bigint, OUT completed bigint,
        OUT failed bigint, OUT last_loop_at timestamptz, OUT database_name text,
        OUT paused_reason text)
    LANGUAGE c VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_worker_status';
COMMENT ON FUNCTION jobrunner.worker_status() IS
    'live figures of the background worker: running, pid, in-flight requests, totals since start, and why it does not dispatch (NULL while it does)';

-- internal: attempts left in flight by another worker incarnation (one that
-- died, or this one at shutdown when _worker is 0) go back to pending at
-- once; the interrupted attempt does not count against retries. Requests
-- that incarnation still had on the wire are over. Rows locked by another
-- session are skipped, never waited for: recovered is how many were put
-- back, skipped how many must be tried again.
CREATE OR REPLACE FUNCTION jobrunner._recover(_worker bigint, OUT recovered int, OUT skipped int)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _stale tid[];
    _total int;
BEGIN
    SELECT pg_catalog.array_agg(j.ctid) INTO _stale
      FROM jobrunner.job j
     WHERE (j.state = 'running' OR j.sending_attempt = j.attempt_seq)
       AND j.locked_by IS DISTINCT FROM _worker
       AND (j.acked_at IS NULL OR j.sending_attempt = j.attempt_seq);
    _total := COALESCE(pg_catalog.array_length(_stale, 1), 0);
    WITH mine AS (
        SELECT j.ctid AS row_ctid, j.id, j.state = 'running' AND j.acked_at IS NULL AS interrupted,
               j.started_log_id, j.last_run_at
          FROM jobrunner.job j
         WHERE j.ctid = ANY (_stale)
           AND (j.state = 'running' OR j.sending_attempt = j.attempt_seq)
           AND j.locked_by IS DISTINCT FROM _worker
           FOR UPDATE SKIP LOCKED
    ), reset AS (
        UPDATE jobrunner.job j
           SET state = CASE WHEN j.state = 'running' AND j.acked_at IS NULL THEN 'pending' ELSE j.state END,
               attempts = CASE WHEN j.state = 'running' AND j.acked_at IS NULL
                               THEN j.attempts - 1 ELSE j.attempts END,
               next_run_at = CASE WHEN j.state = 'running' AND j.acked_at IS NULL
                                  THEN now() ELSE j.next_run_at END,
               due = CASE WHEN j.state = 'running' AND j.acked_at IS NULL THEN true ELSE j.due END,
               updated_at = now(),
               locked_at = CASE WHEN j.state = 'running' AND j.acked_at IS NULL THEN NULL ELSE j.locked_at END,
               locked_by = CASE WHEN j.state = 'running' AND j.acked_at IS NOT NULL THEN j.locked_by END,
               lease_expires_at = CASE WHEN j.state = 'running' AND j.acked_at IS NULL
                                       THEN NULL ELSE j.lease_expires_at END,
               sending_attempt = NULL,
               started_log_id = CASE WHEN j.state = 'running' AND j.acked_at IS NULL
                                     THEN NULL ELSE j.started_log_id END
         WHERE j.ctid = ANY (ARRAY(SELECT m.row_ctid FROM mine m))  -- a TID scan
        RETURNING j.id, j.attempt_seq, j.state
    ), logged AS (
        -- Only attempts that were running are interrupted (a job already
        -- pending again, failed by fail_job while its request was still on
        -- the wire, only gives its request up). The row carries the
        -- attempt's "started" row.
        INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message, started_id, started_at)
        SELECT r.id, r.attempt_seq, 'warning', 'attempt interrupted by a worker restart; will be attempted again',
               m.started_log_id, CASE WHEN m.started_log_id IS NOT NULL THEN m.last_run_at END
          FROM reset r
          JOIN mine m ON m.id = r.id
         WHERE m.interrupted
        RETURNING 1
    )
    SELECT (SELECT count(*)::int FROM logged), (SELECT count(*)::int FROM reset)
      INTO recovered, skipped;
    skipped := _total - skipped;
END;
$$;
COMMENT ON FUNCTION jobrunner._recover(bigint) IS
    'internal: put attempts left in flight by another worker incarnation back to pending; skips rows locked by others';

CREATE OR REPLACE FUNCTION jobrunner._stored_size(_value jsonb) RETURNS bigint
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_stored_size';
COMMENT ON FUNCTION jobrunner._stored_size(jsonb) IS
    'internal: uncompressed size of a stored value, read from its header without fetching or decompressing it (0 for NULL)';

-- internal: claim up to _limit due jobs, fairly, carrying at most about
-- _max_bytes of request bodies (always at least one job; NULL: no cap). Groups are
-- (job_name, owner); each group gets its first free slot before any group
-- gets a second; per-group concurrency_limit, per-name max_concurrency and
-- rate_limit are never exceeded, counting jobs whose request is still on
-- the wire. Rows locked by another session are skipped, never waited for.
-- A body far past jobrunner.max_request_size (queued before the limit was
-- lowered) is not read: its request_body is NULL and body_bytes says why.
-- due_at: when the job became due (the later of its created_at and
-- next_run_at), for the commit-to-request histogram (metrics.sql);
-- traceparent and tracestate: the trace the attempt is sent in;
-- retry_cap_ms: retry_backoff_max, the longest Retry-After obeyed.
-- _held_back: job names whose destination the worker may not send to now
-- (circuit open, or paused by Retry-After): none of their jobs is claimed.
CREATE OR REPLACE FUNCTION jobrunner._claim(_limit int, _worker bigint, _max_bytes bigint DEFAULT NULL,
                                            _held_back text[] DEFAULT NULL)
    RETURNS TABLE (id uuid, job_name text, user_id uuid, user_role text, user_email text,
                   attempt int, request_body text, body_bytes bigint, url text, headers text,
                   timeout_ms bigint, due_at timestamptz, traceparent text, tracestate text,
                   retry_cap_ms bigint)
    -- headers: the job_config headers as "Name: value" lines (values never
    -- hold CR or LF: job_config validation refuses them).
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    _ctids tid[];
    _ids uuid[];
    _run_names text[];
    _run_owners uuid[];
    _run_n bigint[];
    _names jsonb;
    _full jsonb;
    _cur_name text;
    _cur_owner uuid;
    _win_names text[];
    _win_owners uuid[];
    _room int;
    _walked int;
    _last_name text;
    _last_owner uuid;
    _served int;
    _turns boolean;
    _base text := NULLIF(pg_catalog.current_setting('jobrunner.base_url'), '');
    -- Bodies are read only below this stored size: jsonb is at most a few
    -- times larger than its text, so every job within max_request_size is.
    _readable bigint := jobrunner._max_request_bytes() * 16;
BEGIN
    IF _limit <= 0 THEN
        RETURN;
    END IF;

    -- Delayed jobs and retries whose time has come become due (a bounded
    -- batch; _next_wakeup says "now" while more are waiting).
    _ctids := ARRAY(SELECT w.ctid FROM jobrunner.job w
                     WHERE w.state = 'pending' AND NOT w.due AND w.next_run_at <= now()
                     ORDER BY w.next_run_at
                     LIMIT 10000
                       FOR UPDATE SKIP LOCKED);
    IF pg_catalog.cardinality(_ctids) > 0 THEN
        -- By ctid alone, a TID scan: the rows are locked above, so they are
        -- still what was read (another condition here would let the planner
        -- scan every waiting job instead).
        UPDATE jobrunner.job j SET due = true WHERE j.ctid = ANY (_ctids);
    END IF;

    -- Refill the token buckets of rate-limited names (burst: a tenth of a
    -- second's worth, at least one).
    INSERT INTO jobrunner.rate_bucket AS b (job_name, tokens, refreshed_at)
    SELECT c.job_name, 1, now() FROM jobrunner.job_config c
     WHERE c.enabled AND c.rate_limit IS NOT NULL
    ON CONFLICT (job_name) DO UPDATE
       SET tokens = LEAST(GREATEST(1.0, (SELECT c.rate_limit FROM jobrunner.job_config c
                                          WHERE c.job_name = b.job_name)::float8 / 10),
                          b.tokens + EXTRACT(epoch FROM now() - b.refreshed_at)::float8
                                   * (SELECT c.rate_limit FROM jobrunner.job_config c
                                       WHERE c.job_name = b.job_name)::float8),
           refreshed_at = now();

    -- Jobs in flight per group (at most a few hundred rows: the running
    -- index), read once.
    SELECT pg_catalog.array_agg(r.job_name), pg_catalog.array_agg(r.owner), pg_catalog.array_agg(r.n)
      INTO _run_names, _run_owners, _run_n
      FROM (SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner,
                   count(*) AS n
              FROM jobrunner.job j
             WHERE j.state = 'running' OR j.sending_attempt = j.attempt_seq
             GROUP BY 1, 2) r;

    -- Job names that may be given a job now (enabled, destination not held
    -- back, below max_concurrency, a token left), as keys of a jsonb object
    -- (looked up by binary search, however many names there are); the value
    -- is how many more jobs the name may start now, null when no
    -- max_concurrency or rate_limit caps it.
    SELECT COALESCE(pg_catalog.jsonb_object_agg(c.job_name, NULLIF(LEAST(
               COALESCE(c.max_concurrency - COALESCE(rn.n, 0), 2147483647),
               COALESCE(floor(b.tokens)::bigint, 2147483647)), 2147483647)), '{}')
      INTO _names
      FROM jobrunner.job_config c
      LEFT JOIN jobrunner.rate_bucket b ON b.job_name = c.job_name AND c.rate_limit IS NOT NULL
      LEFT JOIN (SELECT r.job_name, sum(r.n) AS n FROM unnest(_run_names, _run_n) AS r(job_name, n)
                  GROUP BY 1) rn ON rn.job_name = c.job_name
     WHERE c.enabled AND (_held_back IS NULL OR c.job_name <> ALL (_held_back))
       AND (c.rate_limit IS NULL OR COALESCE(b.tokens, 0) >= 1)
       AND (c.max_concurrency IS NULL OR c.max_concurrency > COALESCE(rn.n, 0));
    -- Groups at their concurrency_limit, as keys of a jsonb object (looked
    -- up by binary search).
    SELECT COALESCE(pg_catalog.jsonb_object_agg(r.job_name || '/' || r.owner, true), '{}')
      INTO _full
      FROM unnest(_run_names, _run_owners, _run_n) AS r(job_name, owner, n)
      JOIN jobrunner.job_config c ON c.job_name = r.job_name
     WHERE r.n >= c.concurrency_limit;

    -- The window: the first _limit groups, in key order from where the last
    -- claim stopped and round again, that have due jobs and may be given
    -- one now. A skip scan of the pending index, one probe per group (a
    -- group's due jobs sort first), a name that may not be served skipped
    -- whole; it stops when the window is full, so a claim costs what it
    -- takes, not what is queued. When every group fits, the window is all
    -- of them and the cursor starts again from the first.
    -- Priority orders jobs across groups too, so the groups of the most
    -- urgent due jobs with a positive priority come first (their index holds
    -- no job of priority 0, the common case).
    SELECT pg_catalog.array_agg(p.job_name ORDER BY p.first), pg_catalog.array_agg(p.owner ORDER BY p.first)
      INTO _win_names, _win_owners
      FROM (SELECT x.job_name, x.owner, min(x.ord) AS first
              FROM (SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner,
                           row_number() OVER (ORDER BY j.priority DESC, j.next_run_at) AS ord
                      FROM jobrunner.job j
                     WHERE j.state = 'pending' AND j.due AND j.priority > 0
                     ORDER BY j.priority DESC, j.next_run_at
                     LIMIT _limit) x
             WHERE _names ? x.job_name AND NOT _full ? (x.job_name || '/' || x.owner)
             GROUP BY 1, 2) p;
    _room := _limit - COALESCE(pg_catalog.cardinality(_win_names), 0);
    IF _room > 0 THEN
        SELECT _full || COALESCE(pg_catalog.jsonb_object_agg(w.job_name || '/' || w.owner, true), '{}')
          INTO _full
          FROM unnest(_win_names, _win_owners) AS w(job_name, owner);
        SELECT t.job_name, t.owner INTO _cur_name, _cur_owner FROM jobrunner.claim_cursor t LIMIT 1;
        -- Per group walked: ok, whether it may be given a job now; taken,
        -- the groups of its name that may, so far; places, the window's
        -- places filled so far. A group takes a place while its name has
        -- room (max_concurrency, rate_limit) for one more job; past that, a
        -- capped name's groups are still walked (the claim picks among them
        -- by turn, group_turn) but take none: the places are for jobs that
        -- can start, so a capped name never crowds the others out.
        WITH RECURSIVE after_cur AS (
            (SELECT n.job_name, n.owner, n.ok, n.ok::int AS taken, n.ok::int AS places, 1 AS pos
               FROM (SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner, j.due,
                               j.due AND _names ? j.job_name
                               AND NOT _full ? (j.job_name || '/' || COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) AS ok
                       FROM jobrunner.job j
                      WHERE j.state = 'pending'
                        -- (No cursor: from '', before every job name.)
                        AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid))
                            > (COALESCE(_cur_name, ''), COALESCE(_cur_owner, '00000000-0000-0000-0000-000000000000'::uuid))
                      ORDER BY 1, 2, 3 DESC
                      LIMIT 1) n)
            UNION ALL
            SELECT n.job_name, n.owner, n.ok, t.taken,
                   g.places + (n.ok AND (c.cap IS NULL OR t.taken <= c.cap))::int, g.pos + 1
              FROM after_cur g
             CROSS JOIN LATERAL (
                    SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner, j.due,
                               j.due AND _names ? j.job_name
                               AND NOT _full ? (j.job_name || '/' || COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) AS ok
                      FROM jobrunner.job j
                     WHERE j.state = 'pending'
                       AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid))
                           > (g.job_name, CASE WHEN _names ? g.job_name THEN g.owner
                                                   ELSE 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid END)
                     ORDER BY 1, 2, 3 DESC
                     LIMIT 1) n
             CROSS JOIN LATERAL (
                    SELECT CASE WHEN n.job_name = g.job_name THEN g.taken ELSE 0 END + n.ok::int AS taken) t
             CROSS JOIN LATERAL (SELECT (_names ->> n.job_name)::bigint AS cap) c
             WHERE g.places < _room
        ), after_end AS (
            SELECT a.job_name, a.taken, a.places, a.pos FROM after_cur a ORDER BY a.pos DESC LIMIT 1
        ), before_cur AS (
            -- Round again, from the first group up to the cursor, while
            -- places are left.
            (SELECT n.job_name, n.owner, n.ok,
                    CASE WHEN n.job_name = e.job_name THEN e.taken ELSE 0 END + n.ok::int AS taken,
                    COALESCE(e.places, 0) + n.ok::int AS places, COALESCE(e.pos, 0) + 1 AS pos
               FROM (SELECT 1) one
               LEFT JOIN after_end e ON true
              CROSS JOIN LATERAL (
                    SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner, j.due,
                               j.due AND _names ? j.job_name
                               AND NOT _full ? (j.job_name || '/' || COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) AS ok
                      FROM jobrunner.job j
                     WHERE j.state = 'pending'
                       AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) <= (_cur_name, _cur_owner)
                     ORDER BY 1, 2, 3 DESC
                     LIMIT 1) n
              WHERE _cur_name IS NOT NULL AND COALESCE(e.places, 0) < _room)
            UNION ALL
            SELECT n.job_name, n.owner, n.ok, t.taken,
                   g.places + (n.ok AND (c.cap IS NULL OR t.taken <= c.cap))::int, g.pos + 1
              FROM before_cur g
             CROSS JOIN LATERAL (
                    SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner, j.due,
                               j.due AND _names ? j.job_name
                               AND NOT _full ? (j.job_name || '/' || COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) AS ok
                      FROM jobrunner.job j
                     WHERE j.state = 'pending'
                       AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid))
                           > (g.job_name, CASE WHEN _names ? g.job_name THEN g.owner
                                                   ELSE 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid END)
                       AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)) <= (_cur_name, _cur_owner)
                     ORDER BY 1, 2, 3 DESC
                     LIMIT 1) n
             CROSS JOIN LATERAL (
                    SELECT CASE WHEN n.job_name = g.job_name THEN g.taken ELSE 0 END + n.ok::int AS taken) t
             CROSS JOIN LATERAL (SELECT (_names ->> n.job_name)::bigint AS cap) c
             WHERE g.places < _room
        ), walked AS (
            SELECT a.job_name, a.owner, a.ok, a.places, a.pos FROM after_cur a
            UNION ALL
            SELECT b.job_name, b.owner, b.ok, b.places, b.pos FROM before_cur b
        )
        SELECT COALESCE(_win_names, '{}') || pg_catalog.array_agg(w.job_name ORDER BY w.pos) FILTER (WHERE w.ok),
               COALESCE(_win_owners, '{}') || pg_catalog.array_agg(w.owner ORDER BY w.pos) FILTER (WHERE w.ok),
               max(w.places), (pg_catalog.array_agg(w.job_name ORDER BY w.pos DESC))[1],
               (pg_catalog.array_agg(w.owner ORDER BY w.pos DESC))[1]
          INTO _win_names, _win_owners, _walked, _last_name, _last_owner
          FROM walked w;
        -- Places all filled: the next claim goes on after the last group
        -- walked; otherwise every group was seen, and the next starts from
        -- the first.
        IF _walked >= _room THEN
            _cur_name := _last_name;
            _cur_owner := _last_owner;
        ELSE
            _cur_name := NULL;
            _cur_owner := NULL;
        END IF;
      -- A hint, never waited for: a concurrent claim holding it wins.
        UPDATE jobrunner.claim_cursor t SET job_name = _cur_name, owner = _cur_owner
         WHERE t.ctid = ANY (ARRAY(SELECT t2.ctid FROM jobrunner.claim_cursor t2
                                    WHERE t2.job_name IS DISTINCT FROM _cur_name
                                       OR t2.owner IS DISTINCT FROM _cur_owner
                                      FOR UPDATE SKIP LOCKED));
    END IF;
    IF pg_catalog.cardinality(_win_names) IS NULL OR pg_catalog.cardinality(_win_names) = 0 THEN
        RETURN;
    END IF;

    WITH running AS (
        SELECT r.job_name, r.owner, r.n FROM unnest(_run_names, _run_owners, _run_n) AS r(job_name, owner, n)
    ), slots AS (
        SELECT g.job_name, g.owner, COALESCE(r.n, 0) AS held,
               c.concurrency_limit - COALESCE(r.n, 0) AS free, t.served_at
          FROM unnest(_win_names, _win_owners) AS g(job_name, owner)
          JOIN jobrunner.job_config c ON c.job_name = g.job_name
          LEFT JOIN running r ON r.job_name = g.job_name AND r.owner = g.owner
          LEFT JOIN jobrunner.group_turn t ON t.job_name = g.job_name AND t.owner = g.owner
    ), fair_share AS (
        -- No group needs more than an even share of this claim: fetching
        -- more would only be sorted away. Groups left short are topped up by
        -- the next claim.
        SELECT GREATEST(1, ceil(_limit::numeric / GREATEST(1, count(*))))::int AS n
          FROM slots s
         WHERE s.free > 0
    ), cand AS (
        SELECT s.job_name, s.owner, s.held, s.free, s.served_at, x.row_ctid, x.id, x.priority,
               x.next_run_at, x.body_size
          FROM slots s
          CROSS JOIN fair_share f
          CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid, j.id, j.priority, j.next_run_at,
                       jobrunner._stored_size(j.request_body) AS body_size
                  FROM jobrunner.job j
                 WHERE j.state = 'pending' AND j.job_name = s.job_name
                   AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) = s.owner
                   AND j.due AND j.next_run_at <= now() AND j.sending_attempt IS NULL
                 ORDER BY j.priority DESC, j.next_run_at
                 LIMIT LEAST(s.free, f.n)) x
         WHERE s.free > 0
    ), in_group AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.job_name, c.owner
                                       ORDER BY c.priority DESC, c.next_run_at) AS grp_rank
          FROM cand c
    ), in_name AS (
        -- slot: which running job of its group this one would be. Slots
        -- already held count, so when max_concurrency or rate_limit is what
        -- binds, a group with jobs in flight does not beat one without;
        -- between equal slots, the group served longest ago goes first.
        SELECT g.*, row_number() OVER (PARTITION BY g.job_name
                                       ORDER BY g.held + g.grp_rank, g.served_at NULLS FIRST,
                                                g.priority DESC, g.next_run_at) AS name_rank
          FROM in_group g
         WHERE g.grp_rank <= g.free
    ), allowed AS (
        SELECT i.row_ctid, i.id, i.job_name, i.owner, i.held + i.grp_rank AS slot, i.served_at, i.priority,
               i.next_run_at, LEAST(i.body_size, _readable) AS body_size
          FROM in_name i
          JOIN jobrunner.job_config c ON c.job_name = i.job_name
          LEFT JOIN (SELECT r.job_name, sum(r.n) AS n FROM running r GROUP BY 1) rn
                 ON rn.job_name = i.job_name
          LEFT JOIN jobrunner.rate_bucket b ON b.job_name = i.job_name
         WHERE (c.max_concurrency IS NULL OR i.name_rank <= c.max_concurrency - COALESCE(rn.n, 0))
           AND (c.rate_limit IS NULL OR i.name_rank <= floor(COALESCE(b.tokens, 0)))
    ), ordered AS (
        -- bytes_before: the bodies of the jobs ahead of this one. A job is
        -- taken while that is within the budget, so the first always is.
        SELECT a.row_ctid, a.id, a.job_name, a.owner, row_number() OVER w AS ord,
               sum(a.body_size) OVER w - a.body_size AS bytes_before
          FROM allowed a
        WINDOW w AS (ORDER BY a.slot, a.served_at NULLS FIRST, a.priority DESC, a.next_run_at, a.id)
    )
    SELECT pg_catalog.array_agg(o.row_ctid ORDER BY o.ord), pg_catalog.array_agg(o.id ORDER BY o.ord),
           count(DISTINCT (o.job_name, o.owner))
      INTO _ctids, _ids, _served
      FROM (SELECT o.* FROM ordered o
             WHERE _max_bytes IS NULL OR o.bytes_before < GREATEST(_max_bytes, 1)
             ORDER BY o.ord
             LIMIT _limit) o;

    IF _ctids IS NULL THEN
        RETURN;
    END IF;
    -- When the groups were taken in turn by the cursor and every group of
    -- the window was served, the cursor alone keeps the rotation: no turn
    -- is written (with many groups, that is a new row per job).
    _turns := _walked IS NULL OR _walked < _room OR _served < pg_catalog.cardinality(_win_names);

    -- Rows are found by ctid (TID scans) and checked by id. A row changed
    -- since it was read (dequeued, say) no longer matches and is skipped, as
    -- is a row locked by another session.
    RETURN QUERY
    WITH locked AS (
        SELECT l.row_ctid
          FROM unnest(_ctids, _ids) AS c(row_ctid, id)
         CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid FROM jobrunner.job j
                 WHERE j.ctid = c.row_ctid AND j.id = c.id AND j.state = 'pending'
                   AND j.due AND j.sending_attempt IS NULL
                   FOR UPDATE SKIP LOCKED) l
    ), upd AS (
        -- = ANY (array) alone keeps this a TID scan: a join with locked would
        -- be planned as a hash join over every pending row, and any other
        -- condition as a scan of the pending index. The rows are locked, so
        -- they are still what locked checked.
        UPDATE jobrunner.job j
           SET state = 'running', attempts = j.attempts + 1, attempt_seq = j.attempt_seq + 1,
               locked_at = now(), locked_by = _worker, last_run_at = now(), updated_at = now(),
               acked_at = NULL, lease_expires_at = NULL, sending_attempt = j.attempt_seq + 1,
               -- The "started attempt" row of job_logs, shown from here
               -- until the attempt's first stored row carries it.
               started_log_id = pg_catalog.nextval('jobrunner.job_log_entry_id_seq')
         WHERE j.ctid = ANY (ARRAY(SELECT l.row_ctid FROM locked l))
        RETURNING j.id, j.job_name, j.user_id, j.user_role, j.user_email, j.attempt_seq,
                  j.request_body, jobrunner._stored_size(j.request_body) AS body_size,
                  GREATEST(j.created_at, j.next_run_at) AS due_at, j.traceparent, j.tracestate
    ), spent AS (
        UPDATE jobrunner.rate_bucket b SET tokens = b.tokens - k.n
          FROM (SELECT u.job_name, count(*) AS n FROM upd u GROUP BY 1) k
         WHERE b.job_name = k.job_name
    ), served AS (
        SELECT DISTINCT u.job_name, COALESCE(u.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner
          FROM upd u
         WHERE _turns
    ), turned AS (
        -- A plain UPDATE, then an insert of the groups never served before:
        -- ON CONFLICT DO UPDATE would lock each row first, a WAL record
        -- more per group and claim. (Only the claim writes these rows.)
        UPDATE jobrunner.group_turn t SET served_at = now()
          FROM served s
         WHERE t.job_name = s.job_name AND t.owner = s.owner
        RETURNING t.job_name, t.owner
    ), first_turns AS (
        INSERT INTO jobrunner.group_turn (job_name, owner, served_at)
        SELECT s.job_name, s.owner, now()
          FROM served s
         WHERE NOT EXISTS (SELECT 1 FROM turned t WHERE t.job_name = s.job_name AND t.owner = s.owner)
        ON CONFLICT (job_name, owner) DO NOTHING
    ), cfg AS MATERIALIZED (
        -- What the request needs from job_config, once per job name
        -- (inlined, the headers would be built again for every job).
        SELECT c.job_name, COALESCE(c.url, _base || '/' || c.job_name) AS url,
               (SELECT pg_catalog.string_agg(e.key || ': ' || (e.value #>> '{}'), E'\n')
                  FROM pg_catalog.jsonb_each(c.headers) e) AS headers,
               (EXTRACT(epoch FROM c.timeout) * 1000)::bigint AS timeout_ms,
               (EXTRACT(epoch FROM COALESCE(c.retry_backoff_max, interval '1 hour')) * 1000)::bigint
                   AS retry_cap_ms
          FROM jobrunner.job_config c
         WHERE c.job_name IN (SELECT u.job_name FROM upd u)
    )
    SELECT u.id, u.job_name, u.user_id, u.user_role, u.user_email, u.attempt_seq,
           CASE WHEN u.body_size <= _readable THEN COALESCE(u.request_body::text, '{}') END,
           u.body_size, c.url, c.headers, c.timeout_ms, u.due_at, u.traceparent, u.tracestate,
           c.retry_cap_ms
      FROM upd u
      JOIN cfg c ON c.job_name = u.job_name;
END;
$$;
COMMENT ON FUNCTION jobrunner._claim(int, bigint, bigint, text[]) IS
    'internal: claim due jobs fairly within concurrency, max_concurrency and rate limits, and a byte budget';

-- internal: record a batch of attempt outcomes from the worker. Fenced:
-- only rows still running the same attempt for this worker change; an
-- attempt someone else settled meanwhile (complete_job or fail_job while its
-- request ran) only gives its slot back. Plain outcomes are written
-- set-wise; those that must run a hook go one by one through _settle_ok /
-- _settle_fail, each in its own subtransaction. Never waits for a row lock:
-- every row is locked with SKIP LOCKED by the statement that reads it, and
-- the outcomes whose row another session holds are returned, for the worker
-- to try again later, while nothing waits for them.
CREATE OR REPLACE FUNCTION jobrunner._record(_worker bigint, _ids uuid[], _attempts int[],
                                             _statuses int[], _errors text[], _responses text[],
                                             _durations double precision[], _retry_after_ms bigint[])
    RETURNS uuid[]
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A generic plan would misjudge the batch (unnest estimated at 10 rows,
    -- running rows at 1) and re-scan it per running row: plan each call.
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    _done uuid[] := '{}';  -- outcomes written
    _skipped uuid[];
    _r record;
    _finished int;
BEGIN
    -- Outcomes that need a hook or a callback acknowledgement: one by one
    -- (skipped outright when no job name has either).
    IF EXISTS (SELECT 1 FROM jobrunner.job_config c
                WHERE c.on_complete IS NOT NULL OR c.on_fail IS NOT NULL
                   OR c.completion = 'callback') THEN
        FOR _r IN
            -- jj.job is the locked row as a jobrunner.job (a whole-row
            -- reference to a subquery would be an anonymous record).
            SELECT jj.job, x.id, x.status, x.err, x.resp, x.dur, x.ra,
                   (x.status BETWEEN 200 AND 299) AS ok
              FROM unnest(_ids, _attempts, _statuses, _errors, _responses, _durations, _retry_after_ms)
                   AS x(id, attempt, status, err, resp, dur, ra)
             CROSS JOIN LATERAL (
                    SELECT j AS job FROM jobrunner.job j
                     WHERE j.id = x.id AND j.state = 'running' AND j.attempt_seq = x.attempt
                       AND j.locked_by = _worker AND j.acked_at IS NULL
                       FOR UPDATE SKIP LOCKED) jj
              JOIN jobrunner.job_config c ON c.job_name = (jj.job).job_name
             WHERE x.status <> -1  -- deferred: below
               AND CASE WHEN x.status BETWEEN 200 AND 299
                        THEN c.on_complete IS NOT NULL OR c.completion = 'callback'
                        ELSE c.on_fail IS NOT NULL AND (jj.job).attempts > (jj.job).max_retries END
        LOOP
            IF _r.ok THEN
                PERFORM jobrunner._settle_ok(_r.job, _r.status, _r.resp::jsonb, _r.dur, 'worker');
            ELSE
                PERFORM jobrunner._settle_fail(_r.job, _r.status, _r.err, true, _r.ra, _r.dur);
            END IF;
            -- The request has ended: its slot is free again.
            UPDATE jobrunner.job j SET sending_attempt = NULL
             WHERE j.id = _r.id AND j.sending_attempt = (_r.job).attempt_seq;
            _done := _done || _r.id;
        END LOOP;
    END IF;

    -- Everything else in one statement. Outcomes settled above no longer pass
    -- the fence (their job was completed, failed, re-queued or acknowledged),
    -- so the choice of path is written once, in the loop's query. Rows
    -- another session holds are skipped here, and found below.
    WITH x AS (
        SELECT * FROM unnest(_ids, _attempts, _statuses, _errors, _responses, _durations, _retry_after_ms)
                 AS x(id, attempt, status, err, resp, dur, ra)
    ), t AS MATERIALIZED (
        -- retry_at: when a failed attempt's job is due again (unused when
        -- it has used up its retries).
        -- deferred (status -1): the worker did not send it (its
        -- destination may not be sent to now): back to pending for
        -- retry_after_ms, the attempt not counted.
        SELECT x.*, j.row_ctid, j.started_log_id, j.last_run_at,
               (x.status BETWEEN 200 AND 299) AS ok, x.status = -1 AS deferred,
               CASE WHEN x.status NOT BETWEEN 200 AND 299 AND x.status <> -1
                    THEN now() + jobrunner._retry_delay(j.attempts, COALESCE(c.retry_backoff, interval '10 seconds'),
                                                        COALESCE(c.retry_backoff_max, interval '1 hour'), x.ra)
               END AS retry_at
          FROM x
         CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid, j.job_name, j.attempts, j.started_log_id, j.last_run_at
                  FROM jobrunner.job j
                 WHERE j.id = x.id AND j.state = 'running' AND j.attempt_seq = x.attempt
                   AND j.locked_by = _worker AND j.acked_at IS NULL
                   FOR UPDATE SKIP LOCKED) j
          LEFT JOIN jobrunner.job_config c ON c.job_name = j.job_name
    ), upd AS (
        UPDATE jobrunner.job j
           SET state = CASE WHEN t.deferred THEN 'pending'
                            WHEN t.ok THEN 'completed'
                            WHEN j.attempts > j.max_retries THEN 'failed'
                            ELSE 'pending' END,
               -- A deferred attempt never left: its number is given to the
               -- next one (nothing was sent under it, no token minted), so
               -- attempt numbers stay those of requests, and a job never
               -- sent still has attempt_seq 0 (it may be coalesced into).
               attempts = CASE WHEN t.deferred THEN j.attempts - 1 ELSE j.attempts END,
               attempt_seq = CASE WHEN t.deferred THEN j.attempt_seq - 1 ELSE j.attempt_seq END,
               finished_at = CASE WHEN NOT t.deferred AND (t.ok OR j.attempts > j.max_retries) THEN now() END,
               next_run_at = CASE WHEN t.deferred
                                  THEN now() + pg_catalog.make_interval(secs => GREATEST(t.ra, 1) / 1000.0)
                                  WHEN t.ok OR j.attempts > j.max_retries THEN j.next_run_at
                                  ELSE t.retry_at END,
               due = CASE WHEN t.deferred THEN false
                          WHEN t.ok OR j.attempts > j.max_retries THEN j.due
                          ELSE t.retry_at <= now() END,
               updated_at = now(),
               last_status = CASE WHEN t.deferred THEN j.last_status ELSE NULLIF(t.status, 0) END,
               last_error = CASE WHEN t.deferred THEN j.last_error WHEN t.ok THEN NULL ELSE t.err END,
               response = CASE WHEN t.ok THEN t.resp::jsonb ELSE j.response END,
               locked_at = NULL,
               locked_by = CASE WHEN NOT t.deferred AND (t.ok OR j.attempts > j.max_retries) THEN j.locked_by END,
               sending_attempt = NULL,
               -- A completion is shown from this row, with its attempt's
               -- start (job_logs); any other outcome's row is stored and
               -- carries the start.
               finished_log_id = CASE WHEN t.ok THEN pg_catalog.nextval('jobrunner.job_log_entry_id_seq') END,
               last_duration_ms = CASE WHEN t.ok THEN t.dur ELSE j.last_duration_ms END,
               started_log_id = CASE WHEN t.ok THEN j.started_log_id END
          FROM t
         -- By ctid, and = ANY (array) makes it a TID scan: joined on ctid
         -- alone, a batch of a few hundred would be planned as a hash join
         -- over the whole table. The rows are locked by t, so they are as t
         -- read them.
         WHERE j.ctid = ANY (ARRAY(SELECT t2.row_ctid FROM t t2)) AND j.ctid = t.row_ctid
        RETURNING j.id, j.job_name, t.attempt AS attempt_seq, j.state, j.next_run_at, t.status, t.err, t.dur,
                  t.deferred, t.ok, t.started_log_id, t.last_run_at
    ), logged AS (
        INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message, status_code, duration_ms,
                                             started_id, started_at)
        SELECT u.id, u.attempt_seq,
               CASE WHEN u.deferred THEN 'info'
                    ELSE CASE u.state WHEN 'completed' THEN 'info' WHEN 'pending' THEN 'warning' ELSE 'error' END END,
               CASE WHEN u.deferred
                    THEN pg_catalog.format('attempt %s not sent: %s; next try at %s', u.attempt_seq, u.err, u.next_run_at)
                    WHEN u.state = 'completed'
                    THEN 'completed with status ' || u.status
                    ELSE pg_catalog.format('attempt %s failed: %s', u.attempt_seq, u.err)
                         || CASE WHEN u.state = 'pending'
                                 THEN '; next attempt at ' || u.next_run_at
                                 ELSE '; failed permanently' END
               END,
               CASE WHEN u.status > 0 THEN u.status END, CASE WHEN NOT u.deferred THEN u.dur END,
               u.started_log_id, CASE WHEN u.started_log_id IS NOT NULL THEN u.last_run_at END
          FROM upd u
         WHERE NOT u.ok
    )
    -- Jobs finished here count in the metrics when this transaction commits.
    SELECT _done || COALESCE(pg_catalog.array_agg(u.id), '{}'),
           jobrunner._count_finished(pg_catalog.array_agg(u.job_name ORDER BY u.job_name),
                                     pg_catalog.array_agg(u.state ORDER BY u.job_name))
      INTO _done, _finished FROM upd u;
    IF pg_catalog.cardinality(_done) = pg_catalog.cardinality(_ids) THEN
        RETURN '{}';
    END IF;

    -- The rest (rarely any): attempts someone else settled while their
    -- request ran give their slot back; rows another session holds are
    -- left for later; anything else is over.
    WITH rest AS (
        SELECT x.id, x.attempt FROM unnest(_ids, _attempts) AS x(id, attempt)
         WHERE x.id <> ALL (_done)
    ), freed AS (
        UPDATE jobrunner.job j
           SET sending_attempt = NULL,
               locked_by = CASE WHEN j.state = 'pending' THEN NULL ELSE j.locked_by END
          FROM (SELECT r.id, l.row_ctid FROM rest r
                 CROSS JOIN LATERAL (
                        SELECT j.ctid AS row_ctid FROM jobrunner.job j
                         WHERE j.id = r.id AND j.locked_by = _worker AND j.sending_attempt = r.attempt
                           AND NOT (j.state = 'running' AND j.attempt_seq = r.attempt AND j.acked_at IS NULL)
                           FOR UPDATE SKIP LOCKED) l) f
         WHERE j.id = f.id AND j.ctid = f.row_ctid
        RETURNING j.id
    )
    SELECT pg_catalog.array_agg(r.id) INTO _skipped
      FROM rest r
     WHERE r.id NOT IN (SELECT f.id FROM freed f)
       AND EXISTS (SELECT 1 FROM jobrunner.job j
                    WHERE j.id = r.id AND j.locked_by = _worker
                      AND ((j.state = 'running' AND j.attempt_seq = r.attempt AND j.acked_at IS NULL)
                           OR j.sending_attempt = r.attempt));
    RETURN COALESCE(_skipped, '{}');
END;
$$;
COMMENT ON FUNCTION jobrunner._record(bigint, uuid[], int[], int[], text[], text[], double precision[], bigint[]) IS
    'internal: record a batch of attempt outcomes, fenced by attempt and worker; returns those whose row another session holds';

-- internal: callback jobs whose lease ran out fail their attempt.
CREATE OR REPLACE FUNCTION jobrunner._expire_leases(_max int DEFAULT 1000) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
    _n int := 0;
BEGIN
    FOR _job IN
        SELECT * FROM jobrunner.job j
         WHERE j.state = 'running' AND j.acked_at IS NOT NULL AND j.lease_expires_at <= now()
         ORDER BY j.lease_expires_at
         LIMIT _max
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM jobrunner._settle_fail(_job, _job.last_status,
            pg_catalog.format('no complete_job within the callback lease (acknowledged at %s)', _job.acked_at),
            true, NULL, NULL);
        _n := _n + 1;
    END LOOP;
    RETURN _n;
END;
$$;
COMMENT ON FUNCTION jobrunner._expire_leases(int) IS
    'internal: fail callback attempts whose lease ran out';

-- internal: when the worker must look again even if nothing wakes it: the
-- next delayed job or retry, callback lease expiry, or rate-limit refill.
CREATE OR REPLACE FUNCTION jobrunner._next_wakeup() RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, not SQL: its plan is kept between calls (a SQL function
    -- with SET is planned anew on every call, and the worker calls this on
    -- every turn).
    RETURN LEAST(
        -- Finite dates only: a job dated at infinity never comes due.
        (SELECT min(j.next_run_at) FROM jobrunner.job j
          WHERE j.state = 'pending' AND NOT j.due AND j.next_run_at < 'infinity'),
        (SELECT min(j.lease_expires_at) FROM jobrunner.job j
          WHERE j.state = 'running' AND j.lease_expires_at IS NOT NULL),
        (SELECT min(now() + pg_catalog.make_interval(
                     secs => (GREATEST(1.0, c.rate_limit::float8 / 20) - b.tokens) / c.rate_limit::float8))
           FROM jobrunner.rate_bucket b
           JOIN jobrunner.job_config c ON c.job_name = b.job_name AND c.enabled
          WHERE b.tokens < GREATEST(1.0, c.rate_limit::float8 / 20)
            AND EXISTS (SELECT 1 FROM jobrunner.job j
                         WHERE j.state = 'pending' AND j.job_name = b.job_name AND j.due)));
END;
$$;
COMMENT ON FUNCTION jobrunner._next_wakeup() IS
    'internal: when the worker must look at the queue again';

-- internal: purge finished jobs (and their logs): completed and canceled
-- ones older than _retention, failed ones older than _failed_retention, a
-- small batch at a time. A job whose last request is still on the wire
-- keeps its slot until it ends, so it stays.
CREATE OR REPLACE FUNCTION jobrunner._purge(_retention interval, _failed_retention interval,
                                            _batch int DEFAULT 1000)
    RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _n int;
BEGIN
    WITH done AS (
        SELECT j.id FROM jobrunner.job j
         WHERE j.finished_at < now() - _retention
           AND j.state IN ('completed', 'canceled') AND j.sending_attempt IS NULL
         ORDER BY j.finished_at
         LIMIT _batch
           FOR UPDATE SKIP LOCKED  -- a row someone is retrying is left for later
    ), given_up AS (
        SELECT j.id FROM jobrunner.job j
         WHERE j.finished_at < now() - _failed_retention
           AND j.state = 'failed' AND j.sending_attempt IS NULL
         ORDER BY j.finished_at
         LIMIT _batch
           FOR UPDATE SKIP LOCKED
    ), old AS (
        SELECT d.id FROM done d UNION ALL SELECT g.id FROM given_up g
    ), logs AS (
        DELETE FROM jobrunner.job_log_entry l USING old WHERE l.job_id = old.id
    ), gone AS (
        DELETE FROM jobrunner.job j USING old WHERE j.id = old.id RETURNING 1
    ), turns AS (
        DELETE FROM jobrunner.group_turn t WHERE t.served_at < now() - _retention
    )
    SELECT count(*)::int INTO _n FROM gone;
    RETURN _n;
END;
$$;
COMMENT ON FUNCTION jobrunner._purge(interval, interval, int) IS
    'internal: delete finished jobs and their logs past their retention (failed ones have their own), in batches';
