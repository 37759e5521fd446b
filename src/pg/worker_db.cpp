/*
 * worker_db.cpp — the worker's transactions, through SPI.
 *
 * The C++ containers live in the caller's frame; inside PG_TRY only Postgres
 * calls run and only plain memory is written (values are copied into a
 * memory context), so an ERROR never longjmps over a C++ object. The copies
 * become C++ objects after the transaction has ended.
 */
#include "core/dispatch.hpp"

#include "pg/prelude.hpp"
#include "pg/worker_db.hpp"

extern "C" {
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
}

namespace jobrunner {

namespace {

constexpr int kClaimCols = 10;

// Claimed rows copied out of SPI, in plain memory, until the C++ side takes them.
struct RawClaims {
    MemoryContext cxt = nullptr;
    char ***rows = nullptr;  // rows[i][col], nullptr for SQL NULL
    int count = 0;
};

// Memory for one cycle's copies; reset after every cycle.
MemoryContext cycle_context() {
    static MemoryContext cxt = nullptr;
    if (cxt == nullptr) {
        cxt = AllocSetContextCreate(TopMemoryContext, "pg_jobrunner cycle",
                                    ALLOCSET_DEFAULT_SIZES);
    }
    return cxt;
}

// Runs body in its own transaction with SPI connected; on ERROR rolls back
// and returns false with the message in errbuf.
template <typename F>
bool run_in_xact(const char *activity, F &&body, char *errbuf, size_t errlen) {
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
        strlcpy(errbuf, edata->message ? edata->message : "unknown error", errlen);
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
            if (plan == nullptr) elog(ERROR, "preparing \"%s\" failed: SPI code %d", sql_, SPI_result);
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
constexpr Oid kClaimTypes[2] = {INT4OID, INT8OID};
constexpr Oid kOneInt[1] = {INT4OID};
constexpr Oid kOneBigint[1] = {INT8OID};

// SELECT jobrunner._record(...) for the outcomes; Postgres calls only.
void record_outcomes(std::int64_t worker_id, const std::vector<Outcome> &outcomes) {
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
        response_nulls[i] = !o.response.has_value();
        responses[i] = o.response ? text_datum(*o.response) : (Datum)0;
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
    static KeptStatement record("SELECT jobrunner._record($1, $2::uuid[], $3, $4, $5, $6, $7, $8)",
                                8, kRecordTypes);
    int rc = record.run(values, nullptr, 1);
    if (rc != SPI_OK_SELECT) elog(ERROR, "recording outcomes failed: SPI code %d", rc);
}

// SELECT * FROM jobrunner._claim(...), rows copied into raw.
void claim_jobs(std::int64_t worker_id, int limit, RawClaims &raw) {
    static KeptStatement claim(
        "SELECT id::text, job_name, user_id::text, user_role, user_email, attempt::text, "
        "request_body, url, headers, timeout_ms::text FROM jobrunner._claim($1, $2)",
        2, kClaimTypes);
    Datum values[2] = {Int32GetDatum(limit), Int64GetDatum(worker_id)};
    int rc = claim.run(values, nullptr, 0);
    if (rc != SPI_OK_SELECT) elog(ERROR, "claiming jobs failed: SPI code %d", rc);
    raw.count = (int)SPI_processed;
    raw.rows = (char ***)MemoryContextAllocZero(raw.cxt, sizeof(char **) * (raw.count + 1));
    for (int i = 0; i < raw.count; i++) {
        raw.rows[i] = (char **)MemoryContextAllocZero(raw.cxt, sizeof(char *) * kClaimCols);
        for (int c = 0; c < kClaimCols; c++) {
            char *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1);
            raw.rows[i][c] = v ? MemoryContextStrdup(raw.cxt, v) : nullptr;
        }
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

// Converts the copied rows into ClaimedJob values (no Postgres calls).
void take_claims(const RawClaims &raw, std::vector<ClaimedJob> &out) {
    out.reserve(out.size() + raw.count);
    for (int i = 0; i < raw.count; i++) {
        char **r = raw.rows[i];
        ClaimedJob j;
        j.id = r[0] ? r[0] : "";
        j.job_name = r[1] ? r[1] : "";
        j.user_id = opt(r[2]);
        j.user_role = opt(r[3]);
        j.user_email = opt(r[4]);
        j.attempt = r[5] ? atoi(r[5]) : 0;
        j.body = r[6] ? r[6] : "{}";
        j.url = opt(r[7]);
        if (r[8]) {
            std::string_view all(r[8]);
            while (!all.empty()) {
                std::size_t nl = all.find('\n');
                j.headers.emplace_back(all.substr(0, nl));
                all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
            }
        }
        j.timeout_ms = r[9] ? strtoll(r[9], nullptr, 10) : 300000;
        out.push_back(std::move(j));
    }
}

}  // namespace

bool db_cycle(const CycleInput &in, CycleOutput &out) {
    RawClaims raw;
    raw.cxt = cycle_context();
    bool present = true;
    int64 next_ms = -1;
    int purged = 0;
    char errbuf[1024] = {0};
    bool ok = run_in_xact(
        "pg_jobrunner: record and claim",
        [&] {
            present = OidIsValid(get_extension_oid("pg_jobrunner", true));
            if (!present) return;
            if (in.short_lock_wait) {
                SPI_execute("SET LOCAL lock_timeout = '50ms'", false, 0);
            }
            if (in.outcomes != nullptr && !in.outcomes->empty()) {
                record_outcomes(in.worker_id, *in.outcomes);
            }
            if (in.expire_leases) {
                static KeptStatement expire("SELECT jobrunner._expire_leases(1000)", 0, nullptr);
                select_int(expire);
            }
            if (in.purge) {
                static KeptStatement purge(
                    "SELECT jobrunner._purge(make_interval(secs => $1), 1000)", 1, kOneInt);
                Datum retention = Int32GetDatum(in.retention_s);
                purged = (int)select_int(purge, &retention);
            }
            if (in.claim_limit > 0) claim_jobs(in.worker_id, in.claim_limit, raw);
            if (!in.next_wakeup) return;
            // NULL (nothing dated) stays NULL: GREATEST alone would turn it into 0.
            static KeptStatement next_wakeup(
                "SELECT CASE WHEN w IS NOT NULL THEN GREATEST(0, ceil(EXTRACT(epoch FROM w - "
                "clock_timestamp()) * 1000))::bigint END FROM jobrunner._next_wakeup() w",
                0, nullptr);
            next_ms = select_int(next_wakeup);
        },
        errbuf, sizeof(errbuf));
    out.extension_present = present;
    out.purged = purged;
    out.next_wakeup_ms = next_ms;
    if (!ok) {
        out.error = errbuf;
        raw.count = 0;  // the claim was rolled back with everything else
    }
    take_claims(raw, out.claimed);
    MemoryContextReset(raw.cxt);
    return ok;
}

bool db_recover(std::int64_t worker_id, int &count, std::string &error) {
    char errbuf[1024] = {0};
    int64 n = 0;
    bool present = true;
    bool ok = run_in_xact(
        "pg_jobrunner: recover",
        [&] {
            present = OidIsValid(get_extension_oid("pg_jobrunner", true));
            if (!present) return;
            Datum values[1] = {Int64GetDatum(worker_id)};
            int rc = SPI_execute_with_args("SELECT jobrunner._recover($1)", 1,
                                           const_cast<Oid *>(kOneBigint), values, nullptr, false, 1);
            if (rc != SPI_OK_SELECT) elog(ERROR, "recovery failed: SPI code %d", rc);
            bool isnull = false;
            n = DatumGetInt32(
                SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        },
        errbuf, sizeof(errbuf));
    count = (int)n;
    if (!ok) error = errbuf;
    return ok && present;
}

}  // namespace jobrunner
