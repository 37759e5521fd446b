/*
 * sql_api.cpp — SQL-callable C functions: JWT signing and minting, worker
 * status, the wake-at-commit signal, and thin wrappers that let SQL reuse
 * the C++ validators and backoff (one implementation for both worlds).
 */
#include "core/backoff.hpp"
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

PG_FUNCTION_INFO_V1(jobrunner_outer_role);
PG_FUNCTION_INFO_V1(jobrunner_wake_at_commit);
PG_FUNCTION_INFO_V1(jobrunner_wake_trigger);
PG_FUNCTION_INFO_V1(jobrunner_retry_delay);
PG_FUNCTION_INFO_V1(jobrunner_is_allowed_url);
PG_FUNCTION_INFO_V1(jobrunner_is_valid_header);
PG_FUNCTION_INFO_V1(jobrunner_sign_jwt);
PG_FUNCTION_INFO_V1(jobrunner_mint_user_jwt);
PG_FUNCTION_INFO_V1(jobrunner_worker_status);
PG_FUNCTION_INFO_V1(jobrunner_max_request_bytes);
PG_FUNCTION_INFO_V1(jobrunner_stored_size);
PG_FUNCTION_INFO_V1(jobrunner_here);
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

// Copies a C++ string into a palloc'd text; only called where no C++ object
// would be skipped by an out-of-memory error.
static text *to_text(const char *data, size_t len) {
    return cstring_to_text_with_len(data, (int)len);
}

// Signs claims held in plain storage; token copied into a palloc'd text.
static text *sign_to_text(const char *payload, const char *secret) {
    char *token = nullptr;
    size_t token_len = 0;
    CppFailure failure;
    cpp_try(failure, [&] {
        std::string t = sign_hs256(payload, secret);
        token = static_cast<char *>(malloc(t.size()));
        if (token == nullptr) throw std::bad_alloc();
        memcpy(token, t.data(), t.size());
        token_len = t.size();
        explicit_bzero(t.data(), t.size());
    });
    if (failure.failed) raise_failure(failure);
    char *volatile held = token;
    volatile size_t held_len = token_len;
    text *result = nullptr;
    PG_TRY();
    {
        result = to_text(held, held_len);
    }
    PG_FINALLY();
    {
        explicit_bzero(held, held_len);
        free(held);
    }
    PG_END_TRY();
    return result;
}

}  // namespace jobrunner

using namespace jobrunner;

// The role the session acts as outside SECURITY DEFINER functions: SET ROLE
// is honoured, a definer's identity is not.
extern "C" Datum jobrunner_outer_role(PG_FUNCTION_ARGS) {
    PG_RETURN_OID(GetOuterUserId());
}

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

extern "C" Datum jobrunner_wake_at_commit(PG_FUNCTION_ARGS) {
    arm_wake_at_commit();
    PG_RETURN_VOID();
}

// The same, as a statement trigger: a trigger function is not subject to
// EXECUTE checks when it fires, so whoever may write the table wakes the
// worker without being granted the internal function above.
extern "C" Datum jobrunner_wake_trigger(PG_FUNCTION_ARGS) {
    if (!CALLED_AS_TRIGGER(fcinfo)) {
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("jobrunner._wake_trigger() runs only as a trigger")));
    }
    arm_wake_at_commit();
    return PointerGetDatum(nullptr);
}

extern "C" Datum jobrunner_retry_delay(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2)) PG_RETURN_NULL();
    int attempt = PG_GETARG_INT32(0);
    int64 base_ms = interval_ms(PG_GETARG_INTERVAL_P(1));
    int64 cap_ms = interval_ms(PG_GETARG_INTERVAL_P(2));
    bool have_ra = !PG_ARGISNULL(3);
    int64 ra_ms = have_ra ? PG_GETARG_INT64(3) : 0;
    int64 delay = 0;
    uint64 random = pg_prng_uint64(&pg_global_prng_state);
    cpp_call([&] {
        delay = retry_delay_ms(attempt, base_ms, cap_ms,
                               have_ra ? std::optional<std::int64_t>(ra_ms) : std::nullopt,
                               random);
    });
    Interval *result = static_cast<Interval *>(palloc0(sizeof(Interval)));
    result->time = delay * 1000;
    PG_RETURN_INTERVAL_P(result);
}

extern "C" Datum jobrunner_is_allowed_url(PG_FUNCTION_ARGS) {
    text *url = PG_GETARG_TEXT_PP(0);
    bool ok = false;
    cpp_call([&] { ok = is_allowed_url({VARDATA_ANY(url), VARSIZE_ANY_EXHDR(url)}); });
    PG_RETURN_BOOL(ok);
}

extern "C" Datum jobrunner_is_valid_header(PG_FUNCTION_ARGS) {
    text *name = PG_GETARG_TEXT_PP(0);
    text *value = PG_GETARG_TEXT_PP(1);
    bool ok = false;
    cpp_call([&] {
        ok = is_valid_header_name({VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)}) &&
             is_safe_header_value({VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)});
    });
    PG_RETURN_BOOL(ok);
}

extern "C" Datum jobrunner_sign_jwt(PG_FUNCTION_ARGS) {
    Jsonb *claims = PG_GETARG_JSONB_P(0);
    char *secret = text_to_cstring(PG_GETARG_TEXT_PP(1));
    if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims)) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("JWT claims must be a JSON object")));
    }
    require_secret(secret);
    char *payload = JsonbToCString(nullptr, &claims->root, VARSIZE(claims));
    text *token = sign_to_text(payload, secret);
    explicit_bzero(secret, strlen(secret));
    PG_RETURN_TEXT_P(token);
}

extern "C" Datum jobrunner_mint_user_jwt(PG_FUNCTION_ARGS) {
    // EXECUTE is granted to admins only; this also refuses a non-admin who
    // reaches it through an admin's SECURITY DEFINER function.
    if (!caller_is_admin()) {
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("mint_user_jwt is for administrators")));
    }
    require_secret(guc_jwt_secret);
    char *sub = PG_ARGISNULL(0) ? nullptr
                                : DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
    char *role = PG_ARGISNULL(1) ? pstrdup(guc_system_role)
                                 : text_to_cstring(PG_GETARG_TEXT_PP(1));
    char *email = PG_ARGISNULL(2) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(2));
    int64 ttl_ms = PG_ARGISNULL(3) ? 300000 : interval_ms(PG_GETARG_INTERVAL_P(3));
    if (ttl_ms <= 0 || ttl_ms > 86400000) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("token lifetime must be between 0 and 1 day"),
                        errhint("Tokens minted here are meant to be short-lived.")));
    }
    if (role[0] == '\0') {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("role claim must not be empty")));
    }
    int64 now_s = (int64)time(nullptr);
    char *payload = nullptr;
    CppFailure failure;
    cpp_try(failure, [&] {
        UserClaims c;
        if (sub) c.sub = sub;
        c.role = role;
        if (email) c.email = email;
        c.iat = now_s;
        c.exp = now_s + (ttl_ms + 999) / 1000;
        std::string json = encode_claims(c);
        payload = static_cast<char *>(malloc(json.size() + 1));
        if (payload == nullptr) throw std::bad_alloc();
        memcpy(payload, json.c_str(), json.size() + 1);
    });
    if (failure.failed) raise_failure(failure);
    char *volatile held = payload;
    text *token = nullptr;
    PG_TRY();
    {
        token = sign_to_text(held, guc_jwt_secret);
    }
    PG_FINALLY();
    {
        free(held);
    }
    PG_END_TRY();
    PG_RETURN_TEXT_P(token);
}

extern "C" Datum jobrunner_worker_status(PG_FUNCTION_ARGS) {
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
        strlcpy(reason, "no pg_jobrunner worker serves this database: list it in jobrunner.databases",
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
extern "C" Datum jobrunner_max_request_bytes(PG_FUNCTION_ARGS) {
    PG_RETURN_INT64(static_cast<int64>(guc_max_request_kb) * 1024);
}

// The uncompressed size of a stored value, read from its header: a large
// toasted body is measured without being fetched or decompressed.
extern "C" Datum jobrunner_stored_size(PG_FUNCTION_ARGS) {
    if (PG_ARGISNULL(0)) PG_RETURN_INT64(0);
    PG_RETURN_INT64(static_cast<int64>(toast_raw_datum_size(PG_GETARG_DATUM(0))));
}

// _here(): this cluster's system identifier (unique per initdb, shared by
// its physical standbys) and this database's oid.
extern "C" Datum jobrunner_here(PG_FUNCTION_ARGS) {
    char sysid[32];
    snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
    Datum values[2] = {DirectFunctionCall3(numeric_in, CStringGetDatum(sysid),
                                           ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)),
                       ObjectIdGetDatum(MyDatabaseId)};
    bool nulls[2] = {false, false};
    PG_RETURN_DATUM(result_row(fcinfo, values, nulls));
}
