/*
 * worker_db.cpp — the worker's transactions, through SPI.
 *
 * The C++ containers live in the caller's frame; inside PG_TRY only Postgres
 * calls run and only plain memory is written (values are copied into a
 * memory context), so an ERROR never longjmps over a C++ object. The copies
 * become C++ objects after the transaction has ended.
 */
#include "core/dispatch.hpp"

#include "pg/guc.hpp"
#include "pg/json_body.hpp"
#include "pg/prelude.hpp"
#include "pg/worker_db.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"
}

#ifndef JOBRUNNER_VERSION
#define JOBRUNNER_VERSION "dev"
#endif

namespace jobrunner {

namespace {

// Columns of _claim read as text; due_at, the last, is read as a timestamp.
constexpr int kClaimCols = 14;

// Claimed rows copied out of SPI, in plain memory, until the C++ side takes them.
struct RawClaims {
    MemoryContext cxt = nullptr;
    char ***rows = nullptr;   // rows[i][col], nullptr for SQL NULL
    int64 *due_us = nullptr;  // rows[i]'s due_at, Unix microseconds (0: unknown)
    int count = 0;
    char **skipped = nullptr;  // job ids of outcomes not recorded yet
    int skipped_count = 0;
};

// Memory for one cycle's copies; reset after every cycle.
MemoryContext cycle_context() {
    static MemoryContext cxt = nullptr;
    if (cxt == nullptr) {
        cxt = AllocSetContextCreate(TopMemoryContext, "pg_jobrunner cycle", ALLOCSET_DEFAULT_SIZES);
    }
    return cxt;
}

// Why a transaction failed, in plain storage (filled inside PG_CATCH).
struct XactError {
    char message[1024] = {0};
    char sqlstate[6] = {0};
};

// Runs body in its own transaction with SPI connected; on ERROR rolls back
// and returns false with the message and SQLSTATE in err.
template <typename F>
bool run_in_xact(const char *activity, F &&body, XactError &err) {
    MemoryContext caller = CurrentMemoryContext;
    volatile bool ok = true;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PG_TRY();
    {
        if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
        PushActiveSnapshot(GetTransactionSnapshot());
        pgstat_report_activity(STATE_RUNNING, activity);
        body();
        SPI_finish();
        PopActiveSnapshot();
        CommitTransactionCommand();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        strlcpy(err.message, edata->message ? edata->message : "unknown error",
                sizeof(err.message));
        strlcpy(err.sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(err.sqlstate));
        FreeErrorData(edata);
        AbortCurrentTransaction();
        ok = false;
    }
    PG_END_TRY();
    MemoryContextSwitchTo(caller);
    pgstat_report_stat(false);
    pgstat_report_activity(STATE_IDLE, nullptr);
    return ok;
}

// A statement the worker runs on every turn, parsed and planned once and
// kept (SPI_keepplan) across transactions. Re-planning on every call cost
// more than running the statements on an idle worker. The plan cache
// re-checks a kept plan before each use, so it follows DROP and CREATE
// EXTENSION (the text is re-analysed and finds the new functions).
class KeptStatement {
public:
    KeptStatement(const char *sql, int nargs, const Oid *types)
        : sql_(sql), nargs_(nargs), types_(types) {}

    // Runs it with SPI connected; rc is SPI_execute_plan's return code.
    int run(const Datum *values, const char *nulls, long count) {
        if (plan_ == nullptr) {
            SPIPlanPtr plan = SPI_prepare(sql_, nargs_, const_cast<Oid *>(types_));
            if (plan == nullptr)
                elog(ERROR, "preparing \"%s\" failed: SPI code %d", sql_, SPI_result);
            if (SPI_keepplan(plan) != 0) elog(ERROR, "keeping the plan of \"%s\" failed", sql_);
            plan_ = plan;
        }
        return SPI_execute_plan(plan_, const_cast<Datum *>(values), nulls, false, count);
    }

    const char *sql() const { return sql_; }

private:
    const char *sql_;
    int nargs_;
    const Oid *types_;
    SPIPlanPtr plan_ = nullptr;
};

// A one-dimensional array Datum from Datums and null flags.
Datum make_array(Datum *values, bool *nulls, int n, Oid elemtype) {
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
    int dims[1] = {n};
    int lbs[1] = {1};
    return PointerGetDatum(
        construct_md_array(values, nulls, 1, dims, lbs, elemtype, typlen, typbyval, typalign));
}

// Text Datum of a C++ string's bytes (already valid UTF-8).
Datum text_datum(const std::string &s) {
    return PointerGetDatum(cstring_to_text_with_len(s.data(), (int)s.size()));
}

constexpr Oid kRecordTypes[8] = {INT8OID,      TEXTARRAYOID, INT4ARRAYOID,   INT4ARRAYOID,
                                 TEXTARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, INT8ARRAYOID};
constexpr Oid kClaimTypes[4] = {INT4OID, INT8OID, INT8OID, TEXTARRAYOID};
constexpr Oid kTwoInts[2] = {INT4OID, INT4OID};
constexpr Oid kTwoOids[2] = {OIDOID, OIDOID};
constexpr Oid kOneBigint[1] = {INT8OID};

// SELECT jobrunner._record(...) for the outcomes; Postgres calls only. The
// ids of outcomes left for later (their row is locked by another session)
// are copied into raw.
void record_outcomes(std::int64_t worker_id, const std::vector<Outcome> &outcomes, RawClaims &raw) {
    int n = (int)outcomes.size();
    Datum *ids = (Datum *)palloc(sizeof(Datum) * n);
    Datum *attempts = (Datum *)palloc(sizeof(Datum) * n);
    Datum *statuses = (Datum *)palloc(sizeof(Datum) * n);
    Datum *errors = (Datum *)palloc(sizeof(Datum) * n);
    Datum *responses = (Datum *)palloc(sizeof(Datum) * n);
    Datum *durations = (Datum *)palloc(sizeof(Datum) * n);
    Datum *retry_after = (Datum *)palloc(sizeof(Datum) * n);
    bool *no_nulls = (bool *)palloc0(sizeof(bool) * n);
    bool *error_nulls = (bool *)palloc0(sizeof(bool) * n);
    bool *response_nulls = (bool *)palloc0(sizeof(bool) * n);
    bool *ra_nulls = (bool *)palloc0(sizeof(bool) * n);
    for (int i = 0; i < n; i++) {
        const Outcome &o = outcomes[i];
        ids[i] = text_datum(o.id);
        attempts[i] = Int32GetDatum(o.attempt);
        statuses[i] = Int32GetDatum(o.status);
        error_nulls[i] = o.error.empty();
        errors[i] = o.error.empty() ? (Datum)0 : text_datum(o.error);
        // Stored exactly when jsonb takes it, so _record's cast never fails.
        response_nulls[i] = !o.response || !jsonb_accepts(o.response->data(), o.response->size());
        responses[i] = response_nulls[i] ? (Datum)0 : text_datum(*o.response);
        durations[i] = Float8GetDatum(o.duration_ms);
        ra_nulls[i] = !o.retry_after_ms.has_value();
        retry_after[i] = o.retry_after_ms ? Int64GetDatum(*o.retry_after_ms) : (Datum)0;
    }
    Datum values[8] = {Int64GetDatum(worker_id),
                       make_array(ids, no_nulls, n, TEXTOID),
                       make_array(attempts, no_nulls, n, INT4OID),
                       make_array(statuses, no_nulls, n, INT4OID),
                       make_array(errors, error_nulls, n, TEXTOID),
                       make_array(responses, response_nulls, n, TEXTOID),
                       make_array(durations, no_nulls, n, FLOAT8OID),
                       make_array(retry_after, ra_nulls, n, INT8OID)};
    static KeptStatement record(
        "SELECT pg_catalog.unnest(jobrunner._record($1, $2::pg_catalog.uuid[], $3, $4, $5, $6, $7, "
        "$8))"
        "::pg_catalog.text",
        8, kRecordTypes);
    int rc = record.run(values, nullptr, 0);
    if (rc != SPI_OK_SELECT) elog(ERROR, "recording outcomes failed: SPI code %d", rc);
    raw.skipped_count = (int)SPI_processed;
    raw.skipped =
        (char **)MemoryContextAllocZero(raw.cxt, sizeof(char *) * (raw.skipped_count + 1));
    for (int i = 0; i < raw.skipped_count; i++) {
        raw.skipped[i] = MemoryContextStrdup(
            raw.cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
    }
}

// SELECT * FROM jobrunner._claim(...), rows copied into raw.
void claim_jobs(std::int64_t worker_id, int limit, std::int64_t max_bytes,
                const std::vector<std::string> &held_back, RawClaims &raw) {
    static KeptStatement claim(
        "SELECT id::pg_catalog.text, job_name, user_id::pg_catalog.text, user_role, user_email, "
        "attempt::pg_catalog.text, request_body, body_bytes::pg_catalog.text, url, headers, "
        "timeout_ms::pg_catalog.text, traceparent, tracestate, retry_cap_ms::pg_catalog.text, "
        "due_at "
        "FROM jobrunner._claim($1, $2, $3, $4)",
        4, kClaimTypes);
    Datum values[4] = {Int32GetDatum(limit), Int64GetDatum(worker_id), Int64GetDatum(max_bytes),
                       (Datum)0};
    char nulls[4] = {' ', ' ', ' ', 'n'};
    if (!held_back.empty()) {
        int n = static_cast<int>(held_back.size());
        Datum *names = static_cast<Datum *>(palloc(sizeof(Datum) * n));
        for (int i = 0; i < n; i++) names[i] = text_datum(held_back[i]);
        values[3] = make_array(names, nullptr, n, TEXTOID);
        nulls[3] = ' ';
    }
    int rc = claim.run(values, nulls, 0);
    if (rc != SPI_OK_SELECT) elog(ERROR, "claiming jobs failed: SPI code %d", rc);
    raw.count = (int)SPI_processed;
    raw.rows = (char ***)MemoryContextAllocZero(raw.cxt, sizeof(char **) * (raw.count + 1));
    raw.due_us = (int64 *)MemoryContextAllocZero(raw.cxt, sizeof(int64) * (raw.count + 1));
    for (int i = 0; i < raw.count; i++) {
        raw.rows[i] = (char **)MemoryContextAllocZero(raw.cxt, sizeof(char *) * kClaimCols);
        for (int c = 0; c < kClaimCols; c++) {
            char *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1);
            raw.rows[i][c] = v ? MemoryContextStrdup(raw.cxt, v) : nullptr;
        }
        bool isnull = true;
        Datum due =
            SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, kClaimCols + 1, &isnull);
        // From the Postgres epoch (2000-01-01) to the Unix epoch.
        if (!isnull) raw.due_us[i] = DatumGetTimestampTz(due) - SetEpochTimestamp();
    }
}

// Runs a statement returning one int or bigint (NULL as -1).
int64 select_int(KeptStatement &statement, const Datum *values = nullptr) {
    int rc = statement.run(values, nullptr, 1);
    if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "\"%s\" failed", statement.sql());
    bool isnull = false;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (isnull) return -1;
    Oid type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
    return type == INT8OID ? DatumGetInt64(d) : DatumGetInt32(d);
}

// Optional string from a copied column.
std::optional<std::string> opt(const char *v) {
    return v ? std::optional<std::string>(v) : std::nullopt;
}

// Converts the copied rows into ClaimedJob values (no Postgres calls); jobs
// whose body may not be sent become failed outcomes in cycle.refused.
void take_claims(const RawClaims &raw, CycleOutput &cycle) {
    std::vector<ClaimedJob> &out = cycle.claimed;
    std::vector<std::int64_t> &due_us = cycle.claimed_due_us;
    std::vector<Outcome> &refused = cycle.refused;
    out.reserve(out.size() + raw.count);
    due_us.reserve(due_us.size() + raw.count);
    for (int i = 0; i < raw.count; i++) {
        char **r = raw.rows[i];
        ClaimedJob j;
        j.id = r[0] ? r[0] : "";
        j.job_name = r[1] ? r[1] : "";
        j.user_id = opt(r[2]);
        j.user_role = opt(r[3]);
        j.user_email = opt(r[4]);
        j.attempt = r[5] ? atoi(r[5]) : 0;
        j.body = r[6] ? r[6] : "";
        j.url = opt(r[8]);
        if (r[9]) {
            std::string_view all(r[9]);
            while (!all.empty()) {
                std::size_t nl = all.find('\n');
                j.headers.emplace_back(all.substr(0, nl));
                all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
            }
        }
        j.timeout_ms = r[10] ? strtoll(r[10], nullptr, 10) : 300000;
        j.traceparent = opt(r[11]);
        j.tracestate = opt(r[12]);
        if (r[13]) j.retry_cap_ms = strtoll(r[13], nullptr, 10);
        // No body: one too large to read (see _claim). A body over the
        // limit is never sent: the attempt fails, with the reason in the
        // job's log, and is retried (the limit may be raised meanwhile).
        std::int64_t limit = static_cast<std::int64_t>(guc_max_request_kb) * 1024;
        std::int64_t size = r[6] ? static_cast<std::int64_t>(j.body.size())
                                 : (r[7] ? strtoll(r[7], nullptr, 10) : 0);
        if (r[6] == nullptr || size > limit) {
            refused.push_back(
                outcome_from_error(j, "request body is " + std::to_string(size) +
                                          " bytes, more than jobrunner.max_request_size (" +
                                          std::to_string(guc_max_request_kb) + "kB)"));
            cycle.refused_job_names.push_back(j.job_name);
            continue;
        }
        out.push_back(std::move(j));
        due_us.push_back(raw.due_us[i]);
    }
}

// The version of pg_jobrunner installed in this database into out ("" when
// it is not installed), read from the catalog as get_extension_oid() does.
void installed_version(char *out, size_t len) {
    out[0] = '\0';
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                CStringGetDatum("pg_jobrunner"));
    SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
    HeapTuple tuple = systable_getnext(scan);
    if (HeapTupleIsValid(tuple)) {
        bool isnull = true;
        Datum v = heap_getattr(tuple, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
        if (!isnull) text_to_cstring_buffer(DatumGetTextPP(v), out, len);
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
}

// What installed_version() means for this library.
Schema schema_of(const char *version) {
    if (version[0] == '\0') return Schema::absent;
    return strcmp(version, JOBRUNNER_VERSION) == 0 ? Schema::current : Schema::other_version;
}

}  // namespace

const char *library_version() { return JOBRUNNER_VERSION; }

bool db_cycle(const CycleInput &in, CycleOutput &out) {
    RawClaims raw;
    raw.cxt = cycle_context();
    char version[NAMEDATALEN] = {0};
    char foreign[512] = {0};
    bool read_only = false;
    int64 next_ms = -1;
    int purged = 0;
    XactError err;
    bool ok = run_in_xact(
        "pg_jobrunner: record and claim",
        [&] {
            installed_version(version, sizeof(version));
            if (schema_of(version) != Schema::current) return;
            // Read-only mode (a full disk, say): nothing can be written, so
            // nothing is tried; the caller pauses until it is lifted.
            read_only = XactReadOnly;
            if (read_only) return;
            if (in.outcomes != nullptr && !in.outcomes->empty()) {
                record_outcomes(in.worker_id, *in.outcomes, raw);
            }
            if (in.expire_leases) {
                static KeptStatement expire("SELECT jobrunner._expire_leases(1000)", 0, nullptr);
                select_int(expire);
            }
            if (in.purge) {
                static KeptStatement purge(
                    "SELECT jobrunner._purge(pg_catalog.make_interval(secs => $1), "
                    "pg_catalog.make_interval(secs => $2), 1000)",
                    2, kTwoInts);
                Datum retention[2] = {Int32GetDatum(in.retention_s),
                                      Int32GetDatum(in.failed_retention_s)};
                purged = (int)select_int(purge, retention);
            }
            // A queue restored or cloned from elsewhere dispatches nothing
            // until an administrator says so (see sql/functions/backup.sql).
            if (in.claim_limit > 0) {
                static KeptStatement origin("SELECT jobrunner._foreign_origin()", 0, nullptr);
                int rc = origin.run(nullptr, nullptr, 1);
                if (rc != SPI_OK_SELECT || SPI_processed != 1)
                    elog(ERROR, "checking the origin failed");
                char *reason = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
                if (reason != nullptr) {
                    strlcpy(foreign, reason, sizeof(foreign));
                } else {
                    claim_jobs(in.worker_id, in.claim_limit, in.claim_bytes, in.held_back, raw);
                }
            }
            if (!in.next_wakeup) return;
            // NULL (nothing dated) stays NULL: GREATEST alone would turn it
            // into 0. Every operator is pg_catalog's: the worker is a
            // superuser, and a name it resolves through a schema someone
            // else can write would run their code with its rights.
            static KeptStatement next_wakeup(
                "SELECT CASE WHEN w IS NOT NULL THEN GREATEST(0, pg_catalog.ceil("
                "EXTRACT(epoch FROM w OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) "
                "OPERATOR(pg_catalog.*) 1000))::pg_catalog.int8 END "
                "FROM jobrunner._next_wakeup() w",
                0, nullptr);
            next_ms = select_int(next_wakeup);
        },
        err);
    out.schema = schema_of(version);
    if (out.schema == Schema::other_version) out.installed_version = version;
    out.read_only = read_only;
    out.foreign_origin = foreign;
    out.purged = purged;
    out.next_wakeup_ms = next_ms;
    if (!ok) {
        out.error = err.message;
        out.sqlstate = err.sqlstate;
        raw.count = 0;  // the claim was rolled back with everything else
        raw.skipped_count = 0;
    }
    take_claims(raw, out);
    for (int i = 0; i < raw.skipped_count; i++) out.skipped.emplace_back(raw.skipped[i]);
    MemoryContextReset(raw.cxt);
    return ok;
}

bool db_recover(std::int64_t worker_id, RecoverOutput &out) {
    XactError err;
    char version[NAMEDATALEN] = {0};
    bool read_only = false;
    int recovered = 0, skipped = 0;
    bool ok = run_in_xact(
        "pg_jobrunner: recover",
        [&] {
            installed_version(version, sizeof(version));
            if (schema_of(version) != Schema::current) return;
            read_only = XactReadOnly;
            if (read_only) return;
            Datum values[1] = {Int64GetDatum(worker_id)};
            int rc =
                SPI_execute_with_args("SELECT recovered, skipped FROM jobrunner._recover($1)", 1,
                                      const_cast<Oid *>(kOneBigint), values, nullptr, false, 1);
            if (rc != SPI_OK_SELECT || SPI_processed != 1)
                elog(ERROR, "recovery failed: SPI code %d", rc);
            bool isnull = false;
            recovered = DatumGetInt32(
                SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
            skipped = DatumGetInt32(
                SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
        },
        err);
    out.schema = schema_of(version);
    if (out.schema == Schema::other_version) out.installed_version = version;
    out.read_only = read_only;
    out.recovered = recovered;
    out.skipped = skipped;
    if (!ok) out.error = err.message;
    return ok && out.schema == Schema::current && !read_only;
}

bool db_refresh_read_only(bool &read_only, std::string &error) {
    XactError err;
    char value[16] = {0};
    bool ok = run_in_xact(
        "pg_jobrunner: read-only mode",
        [&] {
            // The value a new session of this role in this database would
            // start with: the most specific ALTER ROLE / DATABASE setting,
            // else the configuration files, else off.
            static KeptStatement effective(
                "SELECT COALESCE("
                " (SELECT pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1)"
                "    FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c"
                "   WHERE c OPERATOR(pg_catalog.~~) 'default\\_transaction\\_read\\_only=%'"
                "     AND s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[0, $1]::pg_catalog.oid[])"
                "     AND s.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[0, $2]::pg_catalog.oid[])"
                "   ORDER BY (s.setdatabase OPERATOR(pg_catalog.<>) 0 AND s.setrole "
                "OPERATOR(pg_catalog.<>) 0) DESC,"
                "            s.setrole OPERATOR(pg_catalog.<>) 0 DESC, s.setdatabase "
                "OPERATOR(pg_catalog.<>) 0 DESC"
                "   LIMIT 1),"
                " (SELECT f.setting FROM pg_catalog.pg_file_settings f"
                "   WHERE f.name OPERATOR(pg_catalog.=) 'default_transaction_read_only' AND "
                "f.error IS NULL"
                "   ORDER BY f.seqno DESC LIMIT 1),"
                " 'off')",
                2, kTwoOids);
            Datum args[2] = {ObjectIdGetDatum(MyDatabaseId), ObjectIdGetDatum(GetUserId())};
            int rc = effective.run(args, nullptr, 1);
            if (rc != SPI_OK_SELECT || SPI_processed != 1)
                elog(ERROR, "reading read-only mode failed");
            char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
            strlcpy(value, v ? v : "off", sizeof(value));
        },
        err);
    if (!ok) {
        error = err.message;
        return false;
    }
    bool on = false;
    if (!parse_bool(value, &on)) on = false;
    read_only = on;
    // Applied over whatever the session started with, so that the next
    // transaction follows it.
    SetConfigOption("default_transaction_read_only", on ? "on" : "off", PGC_SUSET, PGC_S_OVERRIDE);
    return true;
}

}  // namespace jobrunner
