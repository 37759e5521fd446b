#!/usr/bin/env bash
# demo.sh — `make demo`: a throwaway PostgreSQL 15 cluster with pg_jobrunner,
# a demo endpoint on 127.0.0.1, and jobs flowing: orders inserted by "users"
# queue jobs from a trigger in the same transaction, one job name fails and
# retries, a hook records receipts, a rate-limited job explains why it waits,
# an autosave coalesces, job_stats is shown live, and a partner host goes
# down (its circuit opens) and comes back; Debian's
# postgres_exporter serves the queue's metrics (monitoring/) on 127.0.0.1
# while it runs. Everything it starts is stopped when it ends (after
# DEMO_SECONDS, default 20, plus DEMO_LINGER, default 0, to browse the
# metrics page at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
PORT=${DEMO_PORT:-54339}
EP_PORT=${DEMO_ENDPOINT_PORT:-18089}
EXPORTER_PORT=${DEMO_EXPORTER_PORT:-18187}
PARTNER_PORT=${DEMO_PARTNER_PORT:-18090}  # a second endpoint, down at first
EXPORTER=/usr/bin/prometheus-postgres-exporter
SECONDS_TO_RUN=${DEMO_SECONDS:-20}

if [[ $(id -u) -eq 0 ]]; then make --no-print-directory install >/dev/null
else sudo make --no-print-directory install >/dev/null; fi

DEMO_DIR=$(mktemp -d /tmp/jobrunner-demo.XXXXXX)
EP_PID=""
EXPORTER_PID=""
PARTNER_PID=""
cleanup() {
  [[ -n "$EP_PID" ]] && kill "$EP_PID" 2>/dev/null || true
  [[ -n "$PARTNER_PID" ]] && kill "$PARTNER_PID" 2>/dev/null || true
  [[ -n "$EXPORTER_PID" ]] && kill "$EXPORTER_PID" 2>/dev/null || true
  test/lib/cluster.sh stop "$DEMO_DIR" >/dev/null 2>&1 || true
  [[ -n "${DEMO_KEEP:-}" ]] || rm -rf "$DEMO_DIR"
}
trap cleanup EXIT

echo "jobrunner.base_url = 'http://127.0.0.1:$EP_PORT'" > "$DEMO_DIR/demo.conf"
eval "$(test/lib/cluster.sh start "$DEMO_DIR" "$PORT" "$DEMO_DIR/demo.conf")"
JOBRUNNER_SECRET=$(cat "$DEMO_DIR/jwt_secret") \
  $PY test/integration/endpoint.py --host 127.0.0.1 --port "$EP_PORT" \
  > "$DEMO_DIR/endpoint.log" 2>&1 &
EP_PID=$!

psql() { /usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 -d jobrunner_it "$@"; }
/usr/lib/postgresql/15/bin/psql -X -q -d postgres -c 'CREATE DATABASE jobrunner_it'

# wait_until <what> <query> [seconds]: until the query says t, or fail the demo.
wait_until() {
  local what=$1 query=$2 limit=${3:-20} i
  for ((i = 0; i < limit * 10; i++)); do
    [[ $(psql -At -c "$query") == t ]] && return 0
    sleep 0.1
  done
  echo "demo: $what did not happen within ${limit} s" >&2
  exit 1
}

# Wait (bounded) for the worker and the endpoint.
for _ in $(seq 1 100); do
  running=$(psql -At -c "CREATE EXTENSION IF NOT EXISTS pg_jobrunner" \
                     -c "SELECT running FROM jobrunner.worker_status()" 2>/dev/null || true)
  [[ "$running" == t ]] && break
  sleep 0.1
done
[[ "$running" == t ]] || { echo "demo: the worker did not start" >&2; exit 1; }

# The queue's metrics, as Prometheus would scrape them: postgres_exporter
# with pg_jobrunner's queries, as a role that has only pg_monitor.
METRICS_URL=""
if [[ -x $EXPORTER ]]; then
  psql -c "CREATE ROLE demo_exporter LOGIN IN ROLE pg_monitor"
  DATA_SOURCE_NAME="postgresql://demo_exporter@127.0.0.1:$PORT/jobrunner_it?sslmode=disable" \
    "$EXPORTER" --extend.query-path=monitoring/postgres_exporter.yml \
    --disable-default-metrics --disable-settings-metrics --no-collector.database --no-collector.bgwriter \
    --web.listen-address="127.0.0.1:$EXPORTER_PORT" > "$DEMO_DIR/exporter.log" 2>&1 &
  EXPORTER_PID=$!
  METRICS_URL="http://127.0.0.1:$EXPORTER_PORT/metrics"
else
  echo "demo: $EXPORTER is missing (make deps): no metrics page" >&2
fi

echo "== pg_jobrunner demo: cluster on port $PORT, endpoint on 127.0.0.1:$EP_PORT${METRICS_URL:+, metrics at $METRICS_URL}"
psql <<'SQL'
CREATE SCHEMA app;
CREATE TABLE app.orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer    uuid NOT NULL,
    total_cents int  NOT NULL,
    receipt_at  timestamptz
);

-- Three job names on the demo endpoint: one fast, one that fails twice
-- before succeeding, one slow.
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, retry_backoff, retry_backoff_max)
VALUES ('send-receipt', current_setting('jobrunner.base_url') || '/ok', 4, '1 second', '2 seconds'),
       ('charge-card',  current_setting('jobrunner.base_url') || '/flaky?fail=2', 2, '1 second', '2 seconds'),
       ('build-report', current_setting('jobrunner.base_url') || '/slow?ms=300', 1, '1 second', '2 seconds');

-- The receipt's completion and the order's receipt_at commit together.
CREATE FUNCTION app.receipt_sent(j jobrunner.job) RETURNS void LANGUAGE sql AS $$
    UPDATE app.orders SET receipt_at = now() WHERE id = (j.request_body ->> 'order_id')::bigint;
$$;
UPDATE jobrunner.job_config SET on_complete = 'app.receipt_sent(jobrunner.job)'
 WHERE job_name = 'send-receipt';

-- The trigger queues in the inserting transaction, as the inserting user
-- (the caller's request.jwt.claims, as PostgREST sets them).
CREATE FUNCTION app.order_placed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobrunner.queue_job('charge-card', jsonb_build_object('order_id', NEW.id, 'cents', NEW.total_cents));
    PERFORM jobrunner.queue_job('send-receipt', jsonb_build_object('order_id', NEW.id));
    RETURN NEW;
END $$;
CREATE TRIGGER order_placed AFTER INSERT ON app.orders
    FOR EACH ROW EXECUTE FUNCTION app.order_placed();
SQL

echo "== five users place orders (each in its own transaction, as PostgREST would)"
for u in 1 2 3 4 5; do
  sub="00000000-0000-4000-8000-00000000000$u"
  psql <<SQL
BEGIN;
SET LOCAL request.jwt.claims = '{"sub":"$sub","role":"authenticated","email":"user$u@example.com"}';
INSERT INTO app.orders (customer, total_cents) SELECT '$sub', 100 * g FROM generate_series(1, 4) g;
COMMIT;
SQL
done
echo "== a rolled-back order queues nothing"
before=$(psql -At -c "SELECT count(*) FROM jobrunner.job")
psql <<'SQL'
BEGIN;
SET LOCAL request.jwt.claims = '{"sub":"00000000-0000-4000-8000-000000000009","role":"authenticated"}';
INSERT INTO app.orders (customer, total_cents) VALUES ('00000000-0000-4000-8000-000000000009', 1);
ROLLBACK;
SQL
after=$(psql -At -c "SELECT count(*) FROM jobrunner.job")
echo "jobs before: $before, after the rolled-back order: $after"
psql -c "SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'build-report', '{\"period\":\"daily\"}') AS system_job" >/dev/null
echo "== why is a user's last charge-card job not running yet? (explain_job)"
psql -c "SELECT e.* FROM jobrunner.job j, jobrunner.explain_job(j.id) e
          WHERE j.id = (SELECT id FROM jobrunner.job WHERE job_name = 'charge-card'
                         ORDER BY created_at DESC, id LIMIT 1)"

echo "== a rate-limited job name (2 per second): why is its last job waiting? (explain_job)"
psql -c "INSERT INTO jobrunner.job_config (job_name, url, rate_limit, concurrency_limit)
         VALUES ('sync-crm', current_setting('jobrunner.base_url') || '/ok', 2, 10)"
last=$(psql -At -c "SELECT (array_agg(jobrunner.queue_job_for(NULL, NULL, NULL, 'sync-crm', jsonb_build_object('n', g))
                                ORDER BY g DESC))[1] FROM generate_series(1, 8) g")
wait_until "a sync-crm job is sent" \
  "SELECT count(*) > 0 FROM jobrunner.job WHERE job_name = 'sync-crm' AND state <> 'pending'"
psql -c "SELECT * FROM jobrunner.explain_job('$last')"

echo "== an autosave, coalesced: five edits in a row, one request with the last body"
psql -c "INSERT INTO jobrunner.job_config (job_name, url) VALUES ('save-draft', current_setting('jobrunner.base_url') || '/ok')"
for edit in 1 2 3 4 5; do
  draft=$(psql -At -c "SELECT jobrunner.queue_job_for('00000000-0000-4000-8000-000000000001', 'authenticated', NULL,
                         'save-draft', jsonb_build_object('text', 'draft v$edit'), _dedup_key => 'draft:42',
                         _on_duplicate => 'replace', _run_at => now() + interval '1 second')")
done
wait_until "the draft is saved" "SELECT state = 'completed' FROM jobrunner.job WHERE id = '$draft'"
psql -c "SELECT count(*) AS jobs, min(request_body->>'text') AS body_sent FROM jobrunner.job WHERE job_name = 'save-draft'"

deadline=$((SECONDS + SECONDS_TO_RUN))
while (( SECONDS < deadline )); do
  echo "-- job_stats at $(date +%T)"
  psql -c "SELECT job_name, pending, running, completed_last_hour AS completed,
                  failed_last_hour AS failed, round(p50_ms::numeric, 1) AS p50_ms
             FROM jobrunner.job_stats ORDER BY job_name"
  left=$(psql -At -c "SELECT count(*) FROM jobrunner.job WHERE state IN ('pending', 'running')")
  [[ "$left" == 0 ]] && break
  sleep 1
done

echo "== one charge-card job, attempt by attempt (fails twice, then succeeds)"
psql -c "SELECT l.attempt, l.log_level, l.status_code, left(l.log_message, 70) AS log_message
           FROM jobrunner.job_logs l
          WHERE l.job_id = (SELECT id FROM jobrunner.job WHERE job_name = 'charge-card'
                             ORDER BY created_at, id LIMIT 1)
          ORDER BY l.id"
echo "== receipts written by the on_complete hook, in the completion's transaction"
psql -c "SELECT count(*) AS orders, count(receipt_at) AS receipts FROM app.orders"
echo "== the endpoint verified every token independently"
psql -c "SELECT * FROM jobrunner.worker_status()" -x
grep -c '"violations": \[\]' "$DEMO_DIR/endpoint.log" | sed 's/^/requests without contract violations: /'

echo "== a partner's host goes down, and comes back"
psql -c "INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries, retry_backoff, retry_backoff_max)
         VALUES ('notify-partner', 'http://127.0.0.1:$PARTNER_PORT/ok', 10, 20, '1 second', '2 seconds')" \
     -c "SELECT count(jobrunner.queue_job_for(NULL, NULL, NULL, 'notify-partner', jsonb_build_object('n', g)))
           FROM generate_series(1, 6) g" >/dev/null
wait_until "the partner's circuit opens" \
  "SELECT count(*) > 0 FROM jobrunner.destinations WHERE state IN ('open', 'half_open')"
echo "-- nothing answers on 127.0.0.1:$PARTNER_PORT: after 5 failures in a row only one probe goes out, at growing intervals"
psql -c "SELECT destination, state, consecutive_failures, until, job_names FROM jobrunner.destinations"
psql -c "SELECT e.* FROM jobrunner.explain_job((SELECT id FROM jobrunner.job WHERE job_name = 'notify-partner'
                                                  AND state = 'pending' LIMIT 1)) e WHERE e.blocking"
echo "-- the partner starts answering"
JOBRUNNER_SECRET=$(cat "$DEMO_DIR/jwt_secret") \
  $PY test/integration/endpoint.py --host 127.0.0.1 --port "$PARTNER_PORT" \
  > "$DEMO_DIR/partner.log" 2>&1 &
PARTNER_PID=$!
wait_until "every notify-partner job is delivered" \
  "SELECT count(*) FILTER (WHERE state = 'completed') = 6 FROM jobrunner.job WHERE job_name = 'notify-partner'" 60
psql -c "SELECT state, count(*), max(attempts) AS most_attempts FROM jobrunner.job WHERE job_name = 'notify-partner' GROUP BY 1"
psql -At -c "SELECT CASE WHEN count(*) = 0 THEN 'jobrunner.destinations is empty again: every host is healthy' END
               FROM jobrunner.destinations"

if [[ -n "$METRICS_URL" ]]; then
  echo "== the queue as Prometheus sees it (a few lines of $METRICS_URL)"
  curl -s --max-time 5 "$METRICS_URL" |
    grep -E '^jobrunner_(jobs_(completed|failed)_total|queue_pending|worker_(up|in_flight))\{' |
    sed -E 's/,?server="[^"]*"//' || echo "demo: the metrics page did not answer (see $DEMO_DIR/exporter.log)"
  echo "== metrics page: $METRICS_URL (queries: monitoring/postgres_exporter.yml, alerts: monitoring/alerts.yml)"
  if (( ${DEMO_LINGER:-0} > 0 )); then
    echo "   up for ${DEMO_LINGER} more seconds, then everything stops"
    sleep "$DEMO_LINGER"
  else
    echo "   it stops with the demo; DEMO_LINGER=<seconds> make demo keeps it up that long"
  fi
fi
