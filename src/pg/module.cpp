/*
 * module.cpp — _PG_init: settings, shared memory, the background worker and
 * the log filter that keeps the signing secret out of the server log.
 */
#include "pg/prelude.hpp"

#include "pg/guc.hpp"
#include "pg/shmem.hpp"
#include "pg/worker.hpp"

#include <cstring>

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

namespace jobrunner {

static emit_log_hook_type prev_emit_log_hook = nullptr;

// Replaces every occurrence-bearing field with a placeholder.
static void redact_field(char **field, const char *secret) {
    if (*field != nullptr && strstr(*field, secret) != nullptr) {
        *field = pstrdup("[value hidden by pg_jobrunner]");
    }
}

// Keeps the secret out of every log line: the postmaster logs changed
// settings with their values on reload, and statements may quote it.
static void redact_secret(ErrorData *edata) {
    if (edata->message != nullptr &&
        strncmp(edata->message, "parameter \"jobrunner.jwt_secret\"", 32) == 0) {
        edata->message = pstrdup("parameter \"jobrunner.jwt_secret\" changed");
    }
    const char *secret = guc_jwt_secret;
    if (secret != nullptr && strlen(secret) >= 4) {
        redact_field(&edata->message, secret);
        redact_field(&edata->detail, secret);
        redact_field(&edata->detail_log, secret);
        redact_field(&edata->hint, secret);
        redact_field(&edata->context, secret);
        redact_field(&edata->internalquery, secret);
        if (debug_query_string != nullptr && strstr(debug_query_string, secret) != nullptr) {
            edata->hide_stmt = true;
        }
    }
    if (prev_emit_log_hook) prev_emit_log_hook(edata);
}

// Registers the one background worker. After a crash the postmaster restarts
// it at once with everything else; after an orderly exit (say, the database
// does not exist yet) it tries again every few seconds, without flooding the log.
static void register_worker() {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    strlcpy(worker.bgw_library_name, "pg_jobrunner", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "jobrunner_worker_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pg_jobrunner worker", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pg_jobrunner worker", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

}  // namespace jobrunner

// Loaded by shared_preload_libraries (worker, shared memory) or on first use
// of a function (settings only: the SQL API works, jobs stay pending).
void _PG_init(void) {
    using namespace jobrunner;
    if (IsBinaryUpgrade) return;
    define_gucs();
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = redact_secret;
    if (!process_shared_preload_libraries_in_progress) return;
    install_shmem_hooks();
    register_worker();
}
