/*
 * hooks.cpp — _call_hook(): a completion hook runs the way Postgres runs an
 * index expression during maintenance. Whoever completes the job (the
 * superuser worker, or complete_job's SECURITY DEFINER owner), the hook runs
 * as its own function's owner, inside a security-restricted operation (no
 * SET ROLE, no temporary objects), so owning a hook function never grants
 * more than its owner already has.
 *
 * Meanwhile request.jwt.claims and every request.jwt.claim.* setting
 * describe the job's user and nothing else (PostgREST and Supabase code such
 * as auth.uid() read either), whatever the caller had set; all of them come
 * back when the hook returns. queue_job inside the hook acts for the job's
 * user through hook_claims(), not through settings the hook could change.
 *
 * No C++ object lives in these frames: errors longjmp through them. The user
 * and settings are restored by the enclosing (sub)transaction's abort when
 * the hook raises, as for any function with SET clauses.
 */
#include "pg/hooks.hpp"

#include "pg/boundary.hpp"
#include "pg/worker.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "utils/guc_tables.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
}

namespace jobrunner {

// The running hook's claims (in TopMemoryContext), innermost hook first.
static char *current_hook_claims = nullptr;

const char *hook_claims() { return current_hook_claims; }

constexpr const char kClaimPrefix[] = "request.jwt.claim.";
constexpr const char kHookLockTimeout[] = "100ms";

// Sets one claim setting for the hook's duration (restored at its GUC level).
static void set_claim_setting(const char *name, const char *value) {
    (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                            false);
}

// Empties every request.jwt.claim.* setting the session has: a claim the
// caller chose must not survive into the hook.
static void clear_claim_settings() {
    struct config_generic **vars = get_guc_variables();
    int n = GetNumConfigOptions();
    List *names = NIL;
    for (int i = 0; i < n; i++) {
        if (pg_strncasecmp(vars[i]->name, kClaimPrefix, sizeof(kClaimPrefix) - 1) == 0) {
            names = lappend(names, pstrdup(vars[i]->name));
        }
    }
    ListCell *lc;
    foreach (lc, names) set_claim_setting(static_cast<char *>(lfirst(lc)), "");
}

// request.jwt.claims and one request.jwt.claim.<key> per top-level claim.
static void set_claim_settings(Jsonb *claims) {
    clear_claim_settings();
    set_claim_setting("request.jwt.claims",
                      JsonbToCString(nullptr, &claims->root, VARSIZE(claims)));
    JsonbIterator *it = JsonbIteratorInit(&claims->root);
    JsonbValue v;
    JsonbIteratorToken token;
    char *key = nullptr;
    while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE) {
        if (token == WJB_KEY) {
            key = pnstrdup(v.val.string.val, v.val.string.len);
        } else if (token == WJB_VALUE && key != nullptr) {
            const char *text = nullptr;
            if (v.type == jbvString)
                text = pnstrdup(v.val.string.val, v.val.string.len);
            else if (v.type == jbvBool)
                text = v.val.boolean ? "true" : "false";
            else if (v.type == jbvNumeric)
                text = DatumGetCString(
                    DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
            if (text != nullptr) set_claim_setting(psprintf("%s%s", kClaimPrefix, key), text);
            key = nullptr;
        }
    }
}

// Raises unless hook is a plain function taking exactly one argument of
// type job_type (the hook may have been replaced or dropped since
// job_config was validated).
static Oid hook_owner(Oid hook, Oid job_type) {
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(hook));
    if (!HeapTupleIsValid(tuple)) {
        ereport(
            ERROR,
            (errcode(ERRCODE_UNDEFINED_FUNCTION), errmsg("hook function %u no longer exists", hook),
             errhint("Point job_config.on_complete or on_fail at an existing function.")));
    }
    Form_pg_proc proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
    bool usable = proc->prokind == PROKIND_FUNCTION && !proc->proretset && proc->pronargs == 1 &&
                  proc->proargtypes.values[0] == job_type;
    Oid owner = proc->proowner;
    ReleaseSysCache(tuple);
    if (!usable) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
                        errmsg("hook %s must be a function taking one jobrunner.job",
                               format_procedure(hook))));
    }
    return owner;
}

// Calls the hook with the job as its only argument; its result is ignored.
static void invoke(Oid hook, Datum job) {
    FmgrInfo flinfo;
    fmgr_info(hook, &flinfo);
    LOCAL_FCINFO(call, 1);
    InitFunctionCallInfoData(*call, &flinfo, 1, InvalidOid, nullptr, nullptr);
    call->args[0].value = job;
    call->args[0].isnull = false;
    (void)FunctionCallInvoke(call);
}

}  // namespace jobrunner

using namespace jobrunner;

// _call_hook(hook regprocedure, job jobrunner.job, claims jsonb).
JOBRUNNER_FUNCTION(jobrunner_call_hook) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2)) {
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("_call_hook needs a hook, a job and claims")));
    }
    Oid hook = PG_GETARG_OID(0);
    Datum job = PG_GETARG_DATUM(1);
    Jsonb *claims = PG_GETARG_JSONB_P(2);
    Oid owner = hook_owner(hook, get_fn_expr_argtype(fcinfo->flinfo, 1));

    Oid saved_user;
    int saved_context;
    GetUserIdAndSecContext(&saved_user, &saved_context);
    int guc_level = NewGUCNestLevel();
    set_claim_settings(claims);
    // In the dispatcher, a hook waiting for a row lock an application holds
    // would hold up every other job: it gives up soon (its attempt fails and
    // is retried after a backoff) instead.
    if (running_in_dispatcher) {
        (void)set_config_option("lock_timeout", kHookLockTimeout, PGC_SUSET, PGC_S_SESSION,
                                GUC_ACTION_SAVE, true, 0, false);
    }

    char *outer_claims = current_hook_claims;
    char *mine = MemoryContextStrdup(TopMemoryContext,
                                     JsonbToCString(nullptr, &claims->root, VARSIZE(claims)));
    current_hook_claims = mine;
    PG_TRY();
    {
        SetUserIdAndSecContext(
            owner, saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
        invoke(hook, job);
    }
    PG_FINALLY();
    {
        current_hook_claims = outer_claims;
        pfree(mine);
    }
    PG_END_TRY();
    SetUserIdAndSecContext(saved_user, saved_context);
    // false: every setting the hook changed is undone too, even a plain
    // set_config(..., false). Kept, a hook could leave its search_path, its
    // claims or a lock_timeout of its choice in the session of whoever
    // completed the job — the superuser worker included — as Postgres undoes
    // them after any security-restricted operation.
    AtEOXact_GUC(false, guc_level);
    PG_RETURN_VOID();
}
