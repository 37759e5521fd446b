/*
 * guc.cpp — definitions of the jobrunner.* settings.
 *
 * The signing secret is PGC_SUSET, hidden from SHOW ALL, and its show hook
 * masks it for everyone: SHOW and current_setting() never reveal it, so the
 * worker reads the C variable directly.
 */
#include "pg/guc.hpp"

namespace jobrunner {

char *guc_database_name = nullptr;
char *guc_databases = nullptr;
char *guc_jwt_secret = nullptr;
char *guc_base_url = nullptr;
int guc_max_in_flight = 256;
int guc_poll_interval_ms = 1000;
int guc_retention_s = 7 * 24 * 3600;
char *guc_system_role = nullptr;
char *guc_trusted_claim_roles = nullptr;
int guc_max_response_kb = 64;
int guc_max_request_kb = 1024;
int guc_failed_retention_s = 30 * 24 * 3600;

// SHOW and current_setting() print this instead of the secret.
static const char *show_secret() {
    return (guc_jwt_secret != nullptr && guc_jwt_secret[0] != '\0') ? "(hidden)" : "(unset)";
}

// The secret is taken only from the server's configuration files (and the
// command line): a value given by SET, set_config(), ALTER ROLE / DATABASE
// ... SET or a client's connection options would be readable where those
// are (pg_db_role_setting is readable by every role), or chosen by a
// session for its own tokens.
static bool check_secret(char **newval, void **extra, GucSource source) {
    if (source <= PGC_S_ARGV) return true;  // defaults, environment, files, command line
    // Even an empty value: stored for a role or database, it would leave
    // the worker unable to sign anything at its next start.
    GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
    GUC_check_errmsg("jobrunner.jwt_secret can be set only in the server's configuration files");
    GUC_check_errhint("Set it in postgresql.conf (or with ALTER SYSTEM) and reload.");
    return false;
}

// Base URL: empty, or an absolute http(s) URL without a trailing slash.
static bool check_base_url(char **newval, void **extra, GucSource source) {
    const char *v = *newval;
    if (v == nullptr || v[0] == '\0') {
        return true;
    }
    if (pg_strncasecmp(v, "http://", 7) != 0 && pg_strncasecmp(v, "https://", 8) != 0) {
        GUC_check_errdetail("The URL must start with http:// or https://.");
        return false;
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            GUC_check_errdetail("The URL must not contain spaces or control characters.");
            return false;
        }
    }
    return true;
}

void define_gucs() {
    // Which databases are served: read by the launcher on every reload.
    DefineCustomStringVariable(
        "jobrunner.databases", "Databases pg_jobrunner serves (comma-separated).",
        "Each gets a dispatcher of its own. Empty: jobrunner.database_name.", &guc_databases, "",
        PGC_SIGHUP, GUC_LIST_INPUT, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("jobrunner.database_name",
                               "Database pg_jobrunner serves when jobrunner.databases is empty.",
                               nullptr, &guc_database_name, "postgres", PGC_SIGHUP, 0, nullptr,
                               nullptr, nullptr);
    DefineCustomStringVariable(
        "jobrunner.jwt_secret", "HS256 secret for tokens minted for job users (32+ bytes).",
        nullptr, &guc_jwt_secret, "", PGC_SUSET,
        GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL, check_secret,
        nullptr, show_secret);
    DefineCustomStringVariable("jobrunner.base_url",
                               "URL prefix for job names whose job_config has no url.",
                               "A job is POSTed to base_url || '/' || job_name.", &guc_base_url, "",
                               PGC_SUSET, 0, check_base_url, nullptr, nullptr);
    DefineCustomIntVariable("jobrunner.max_in_flight", "HTTP requests in flight at once.", nullptr,
                            &guc_max_in_flight, 256, 1, 10000, PGC_SUSET, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable(
        "jobrunner.poll_interval", "Longest sleep of the worker between looks at the queue.",
        "New jobs wake the worker when their transaction commits.", &guc_poll_interval_ms, 1000, 10,
        3600 * 1000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("jobrunner.retention",
                            "Age after which completed and canceled jobs are purged.", nullptr,
                            &guc_retention_s, 7 * 24 * 3600, 60, INT_MAX, PGC_SUSET, GUC_UNIT_S,
                            nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "jobrunner.system_role", "Role claim of tokens for jobs that have no user.", nullptr,
        &guc_system_role, "service_role", PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "jobrunner.trusted_claim_roles",
        "Login roles whose request.jwt.claims are believed (comma-separated).",
        "Superusers are always believed.", &guc_trusted_claim_roles, "authenticator", PGC_SUSET, 0,
        nullptr, nullptr, nullptr);
    DefineCustomIntVariable("jobrunner.max_response_size",
                            "Response bytes kept per request; the rest is discarded.", nullptr,
                            &guc_max_response_kb, 64, 1, 1024 * 1024, PGC_SUSET, GUC_UNIT_KB,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "jobrunner.max_request_size", "Largest request body a job may carry.",
        "queue_job refuses larger bodies; the worker never reads far larger ones.",
        &guc_max_request_kb, 1024, 1, 256 * 1024, PGC_SUSET, GUC_UNIT_KB, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable("jobrunner.failed_retention", "Age after which failed jobs are purged.",
                            nullptr, &guc_failed_retention_s, 30 * 24 * 3600, 60, INT_MAX,
                            PGC_SUSET, GUC_UNIT_S, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("jobrunner");
}

}  // namespace jobrunner
