/*
 * sql_api.cpp — SQL-callable C functions: JWT signing and minting, worker
 * status, the wake-at-commit signal, and thin wrappers that let SQL reuse
 * the C++ validators and backoff (one implementation for both worlds).
 * Each is a JOBRUNNER_FUNCTION: its C++ never throws into Postgres.
 */
#include "core/backoff.hpp"
#include "core/destinations.hpp"
#include "core/jwt.hpp"
#include "core/text_checks.hpp"

#include "pg/boundary.hpp"
#include "pg/guc.hpp"
#include "pg/identity.hpp"
#include "pg/result_row.hpp"
#include "pg/shmem.hpp"

#include <string>

extern "C" {
#include "access/detoast.h"
#include "commands/dbcommands.h"
#include "access/xlog.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "funcapi.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"
}

namespace jobrunner {

// Whole milliseconds in an interval (a month counts 30 days).
static int64 interval_ms(const Interval *iv) {
    return iv->time / 1000 + (int64)iv->day * 86400000 + (int64)iv->month * 30 * 86400000;
}

// Raises unless the configured secret can sign; never prints the secret.
static void require_secret(const char *secret) {
    if (secret == nullptr || strlen(secret) < kMinSecretBytes) {
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("signing secret is missing or shorter than %d bytes", (int)kMinSecretBytes),
                 errhint("Set jobrunner.jwt_secret in postgresql.conf to at least %d bytes and "
                         "reload.",
                         (int)kMinSecretBytes)));
    }
}

// A string wiped when it goes: tokens do not linger in freed memory.
struct WipedString {
    std::string s;
    ~WipedString() { explicit_bzero(s.data(), s.size()); }
};

}  // namespace jobrunner

using namespace jobrunner;

// The role the session acts as outside SECURITY DEFINER functions: SET ROLE
// is honoured, a definer's identity is not.
JOBRUNNER_FUNCTION(jobrunner_outer_role) { PG_RETURN_OID(GetOuterUserId()); }

static bool wake_callback_registered = false;

// Wakes the worker when the transaction that queued work commits; nothing
// happens on abort. Registered once per backend, armed once per transaction.
static bool wake_armed = false;
static void wake_xact_callback(XactEvent event, void *arg) {
    switch (event) {
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            if (wake_armed) wake_worker();
            wake_armed = false;
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            wake_armed = false;
            break;
        default:
            break;
    }
}

static void arm_wake_at_commit() {
    if (!wake_callback_registered) {
        RegisterXactCallback(wake_xact_callback, nullptr);
        wake_callback_registered = true;
    }
    wake_armed = true;
}

JOBRUNNER_FUNCTION(jobrunner_wake_at_commit) {
    arm_wake_at_commit();
    PG_RETURN_VOID();
}

// The same, as a statement trigger: a trigger function is not subject to
// EXECUTE checks when it fires, so whoever may write the table wakes the
// worker without being granted the internal function above.
JOBRUNNER_FUNCTION(jobrunner_wake_trigger) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("jobrunner._wake_trigger() runs only as a trigger")));
    }
    arm_wake_at_commit();
    return PointerGetDatum(nullptr);
}

JOBRUNNER_FUNCTION(jobrunner_retry_delay) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2)) PG_RETURN_NULL();
    int attempt = PG_GETARG_INT32(0);
    int64 base_ms = interval_ms(PG_GETARG_INTERVAL_P(1));
    int64 cap_ms = interval_ms(PG_GETARG_INTERVAL_P(2));
    bool have_ra = !PG_ARGISNULL(3);
    int64 ra_ms = have_ra ? PG_GETARG_INT64(3) : 0;
    uint64 random = pg_prng_uint64(&pg_global_prng_state);
    int64 delay =
        retry_delay_ms(attempt, base_ms, cap_ms,
                       have_ra ? std::optional<std::int64_t>(ra_ms) : std::nullopt, random);
    Interval *result = static_cast<Interval *>(palloc0(sizeof(Interval)));
    result->time = delay * 1000;
    PG_RETURN_INTERVAL_P(result);
}

JOBRUNNER_FUNCTION(jobrunner_is_allowed_url) {
    text *url = PG_GETARG_TEXT_PP(0);
    PG_RETURN_BOOL(is_allowed_url({VARDATA_ANY(url), VARSIZE_ANY_EXHDR(url)}));
}

JOBRUNNER_FUNCTION(jobrunner_is_valid_header) {
    text *name = PG_GETARG_TEXT_PP(0);
    text *value = PG_GETARG_TEXT_PP(1);
    PG_RETURN_BOOL(is_valid_header_name({VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)}) &&
                   is_safe_header_value({VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)}));
}

JOBRUNNER_FUNCTION(jobrunner_sign_jwt) {
    Jsonb *claims = PG_GETARG_JSONB_P(0);
    char *secret = text_to_cstring(PG_GETARG_TEXT_PP(1));
    if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims)) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("JWT claims must be a JSON object")));
    }
    require_secret(secret);
    char *payload = JsonbToCString(nullptr, &claims->root, VARSIZE(claims));
    WipedString token{sign_hs256(payload, secret)};
    explicit_bzero(secret, strlen(secret));
    PG_RETURN_TEXT_P(palloc_text(token.s));
}

JOBRUNNER_FUNCTION(jobrunner_mint_user_jwt) {
    // EXECUTE is granted to admins only; this also refuses a non-admin who
    // reaches it through an admin's SECURITY DEFINER function.
    if (!caller_is_admin()) {
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("mint_user_jwt is for administrators")));
    }
    require_secret(guc_jwt_secret);
    char *sub = PG_ARGISNULL(0)
                    ? nullptr
                    : DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
    char *role = PG_ARGISNULL(1) ? pstrdup(guc_system_role) : text_to_cstring(PG_GETARG_TEXT_PP(1));
    char *email = PG_ARGISNULL(2) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(2));
    int64 ttl_ms = PG_ARGISNULL(3) ? 300000 : interval_ms(PG_GETARG_INTERVAL_P(3));
    if (ttl_ms <= 0 || ttl_ms > 86400000) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("token lifetime must be between 0 and 1 day"),
                        errhint("Tokens minted here are meant to be short-lived.")));
    }
    if (role[0] == '\0') {
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("role claim must not be empty")));
    }
    UserClaims c;
    if (sub) c.sub = sub;
    c.role = role;
    if (email) c.email = email;
    c.iat = static_cast<int64>(time(nullptr));
    c.exp = c.iat + (ttl_ms + 999) / 1000;
    WipedString token{sign_hs256(encode_claims(c), guc_jwt_secret)};
    PG_RETURN_TEXT_P(palloc_text(token.s));
}

JOBRUNNER_FUNCTION(jobrunner_worker_status) {
    Datum values[10];
    bool nulls[10];
    memset(nulls, 0, sizeof(nulls));
    // The dispatcher serving the database this is asked in.
    DispatcherSlot *s = slot_for_database(MyDatabaseId);
    pid_t pid = 0;
    TimestampTz started = 0, last_loop = 0;
    char reason[sizeof(s->paused_reason)] = "";
    if (s != nullptr) {
        SpinLockAcquire(&s->mutex);
        pid = s->worker_pid;
        started = s->started_at;
        last_loop = s->last_loop_at;
        memcpy(reason, s->paused_reason, sizeof(reason));
        SpinLockRelease(&s->mutex);
    }
    // Said by the server, whatever a worker last published: a standby's
    // worker does not run, and the library may not be preloaded at all.
    if (RecoveryInProgress()) {
        strlcpy(reason, "standby: only the primary dispatches jobs", sizeof(reason));
    } else if (shared_state() == nullptr) {
        strlcpy(reason, "pg_jobrunner is not in shared_preload_libraries", sizeof(reason));
    } else if (s == nullptr) {
        strlcpy(reason,
                "no pg_jobrunner worker serves this database: list it in jobrunner.databases",
                sizeof(reason));
    } else if (pid == 0 && reason[0] == '\0') {
        strlcpy(reason, "the worker is not running", sizeof(reason));
    }
    values[0] = BoolGetDatum(pid != 0);
    values[1] = Int32GetDatum(pid);
    nulls[1] = pid == 0;
    values[2] = TimestampTzGetDatum(started);
    nulls[2] = pid == 0;
    values[3] = Int32GetDatum(s ? (int32)pg_atomic_read_u32(&s->in_flight) : 0);
    values[4] = Int64GetDatum(s ? (int64)pg_atomic_read_u64(&s->dispatched) : 0);
    values[5] = Int64GetDatum(s ? (int64)pg_atomic_read_u64(&s->completed) : 0);
    values[6] = Int64GetDatum(s ? (int64)pg_atomic_read_u64(&s->failed) : 0);
    values[7] = TimestampTzGetDatum(last_loop);
    nulls[7] = pid == 0 || last_loop == 0;
    char *database = get_database_name(MyDatabaseId);
    values[8] = CStringGetTextDatum(database ? database : "");
    values[9] = CStringGetTextDatum(reason);
    nulls[9] = reason[0] == '\0';
    PG_RETURN_DATUM(result_row(fcinfo, values, nulls));
}

// jobrunner.max_request_size in bytes, for SQL.
JOBRUNNER_FUNCTION(jobrunner_max_request_bytes) {
    PG_RETURN_INT64(static_cast<int64>(guc_max_request_kb) * 1024);
}

// The uncompressed size of a stored value, read from its header: a large
// toasted body is measured without being fetched or decompressed.
JOBRUNNER_FUNCTION(jobrunner_stored_size) {
    if (PG_ARGISNULL(0)) PG_RETURN_INT64(0);
    PG_RETURN_INT64(static_cast<int64>(toast_raw_datum_size(PG_GETARG_DATUM(0))));
}

// _here(): this cluster's system identifier (unique per initdb, shared by
// its physical standbys) and this database's oid.
JOBRUNNER_FUNCTION(jobrunner_here) {
    char sysid[32];
    snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
    Datum values[2] = {DirectFunctionCall3(numeric_in, CStringGetDatum(sysid),
                                           ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)),
                       ObjectIdGetDatum(MyDatabaseId)};
    bool nulls[2] = {false, false};
    PG_RETURN_DATUM(result_row(fcinfo, values, nulls));
}

// _destination_of(url): "host:port", as the worker keys destinations.
JOBRUNNER_FUNCTION(jobrunner_destination_of) {
    text *url = PG_GETARG_TEXT_PP(0);
    std::string host = destination_of({VARDATA_ANY(url), VARSIZE_ANY_EXHDR(url)});
    if (host.empty()) PG_RETURN_NULL();
    PG_RETURN_TEXT_P(palloc_text(host));
}

// _destinations(): what this database's dispatcher last published.
JOBRUNNER_FUNCTION(jobrunner_destinations) {
    static const char *const kStates[] = {"closed", "open", "half_open", "paused"};
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    DispatcherSlot *s = slot_for_database(MyDatabaseId);
    if (s == nullptr) return (Datum)0;
    ShownDestination shown[kMaxShownDestinations];
    SpinLockAcquire(&s->mutex);
    int n = s->destination_count;
    memcpy(shown, s->destinations, sizeof(shown[0]) * n);
    SpinLockRelease(&s->mutex);
    for (int i = 0; i < n; i++) {
        Datum values[4];
        bool nulls[4] = {false, false, false, shown[i].until == 0};
        values[0] = CStringGetTextDatum(shown[i].host);
        int state = shown[i].state;
        values[1] = CStringGetTextDatum(state >= 0 && state < 4 ? kStates[state] : "unknown");
        values[2] = Int32GetDatum(shown[i].consecutive_failures);
        values[3] = TimestampTzGetDatum(shown[i].until);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum)0;
}
