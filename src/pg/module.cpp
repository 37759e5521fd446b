/*
 * module.cpp — _PG_init: settings, shared memory, the launcher (which starts
 * a dispatcher per database served), the DROP DATABASE hook, and the log
 * filter that keeps the signing secret out of the server log.
 */
#include "pg/prelude.hpp"

#include "pg/guc.hpp"
#include "pg/shmem.hpp"
#include "pg/launcher.hpp"

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

// Whether needle (lowercase ASCII) occurs in haystack, ignoring ASCII case.
// Plain byte work: this runs while an error is being reported.
static bool contains_ascii_nocase(const char *haystack, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = haystack; *p != '\0'; p++) {
        size_t i = 0;
        while (i < n && p[i] != '\0' &&
               pg_ascii_tolower(static_cast<unsigned char>(p[i])) == needle[i])
            i++;
        if (i == n) return true;
    }
    return false;
}

// Whether text names the secret's setting, in any case or quoting ("jwt"
// and "secret" survive quoting and most escapes), so that a statement
// setting it is recognised even when the value is not the loaded secret.
static bool names_secret_setting(const char *text) {
    return text != nullptr && contains_ascii_nocase(text, "jwt") &&
           contains_ascii_nocase(text, "secret");
}

// Keeps the secret out of every log line: the postmaster logs changed
// settings with their values on reload; statements may quote it (a new
// secret in ALTER SYSTEM is not the loaded one, so it is recognised by the
// setting's name); a refused value is quoted in its error.
static void redact_secret(ErrorData *edata) {
    if (edata->message != nullptr &&
        strncmp(edata->message, "parameter \"jobrunner.jwt_secret\"", 32) == 0) {
        edata->message = pstrdup("parameter \"jobrunner.jwt_secret\" changed");
    }
    if (edata->message != nullptr &&
        strncmp(edata->message, "invalid value for parameter \"jobrunner.jwt_secret\"", 51) == 0) {
        edata->message = pstrdup("invalid value for parameter \"jobrunner.jwt_secret\"");
    }
    if (names_secret_setting(debug_query_string)) {
        edata->hide_stmt = true;
        // log_statement and log_min_duration_statement put the statement in
        // the message itself.
        if (edata->message != nullptr && strstr(edata->message, debug_query_string) != nullptr) {
            edata->message = pstrdup(
                "statement: [a statement naming jobrunner.jwt_secret, hidden by pg_jobrunner]");
        }
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
    register_launcher();
    install_drop_database_hook();
}
