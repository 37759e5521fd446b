/*
 * identity.cpp — the facts _caller() is built from, decided in C because
 * SQL cannot see them: whether the code runs inside a security-restricted
 * operation, on whose behalf, and whether a pg_jobrunner hook is running.
 *
 * Inside a security-restricted operation (VACUUM, ANALYZE or an index build
 * evaluating a table owner's expressions, or one of our hooks) the session's
 * user and settings are not those of the code running: claims the session
 * set are not believed and nobody is an admin. A hook is told the identity
 * of the job it runs for by hooks.cpp, through hook_claims().
 */
#include "pg/identity.hpp"

#include "pg/boundary.hpp"
#include "pg/guc.hpp"
#include "pg/hooks.hpp"
#include "pg/result_row.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "funcapi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/varlena.h"
}

namespace jobrunner {

// jobrunner.queue_job_for's oid: EXECUTE on it is what makes an admin. The
// current signature has _on_duplicate last; 0.1.0's, without it, is what
// this library finds until ALTER EXTENSION ... UPDATE has run, so admins
// stay admins in between.
static Oid queue_job_for_oid() {
    Oid types[11] = {UUIDOID,        TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT4OID,
                     TIMESTAMPTZOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
    List *name = list_make2(makeString(pstrdup("jobrunner")), makeString(pstrdup("queue_job_for")));
    Oid fn = LookupFuncName(name, 11, types, true);
    return OidIsValid(fn) ? fn : LookupFuncName(name, 10, types, true);
}

bool caller_is_admin() {
    if (InSecurityRestrictedOperation()) return false;
    Oid outer = GetOuterUserId();
    if (superuser_arg(outer)) return true;
    Oid fn = queue_job_for_oid();
    return OidIsValid(fn) && pg_proc_aclcheck(fn, outer, ACL_EXECUTE) == ACLCHECK_OK;
}

// Whether request.jwt.claims set in this session may be believed: the login
// role is a superuser or one of jobrunner.trusted_claim_roles.
static bool session_claims_believed() {
    if (InSecurityRestrictedOperation()) return false;
    Oid login = GetSessionUserId();
    if (superuser_arg(login)) return true;
    if (guc_trusted_claim_roles == nullptr || guc_trusted_claim_roles[0] == '\0') return false;
    char *login_name = GetUserNameFromId(login, false);
    char *list = pstrdup(guc_trusted_claim_roles);
    List *names = NIL;
    if (!SplitGUCList(list, ',', &names)) return false;
    ListCell *lc;
    foreach (lc, names) {
        if (strcmp(static_cast<char *>(lfirst(lc)), login_name) == 0) return true;
    }
    return false;
}

}  // namespace jobrunner

using namespace jobrunner;

// _caller_context(): is_admin, the claims to believe (NULL: none), and
// whether they are those of the job a running hook acts for.
JOBRUNNER_FUNCTION(jobrunner_caller_context) {
    Datum values[3];
    bool nulls[3] = {false, true, false};
    const char *claims = nullptr;
    bool from_hook = false;
    if (InSecurityRestrictedOperation()) {
        claims = hook_claims();  // nullptr unless one of our hooks runs
        from_hook = claims != nullptr;
    } else if (session_claims_believed()) {
        claims = GetConfigOption("request.jwt.claims", true, false);
    }
    values[0] = BoolGetDatum(caller_is_admin());
    if (claims != nullptr) {
        values[1] = CStringGetTextDatum(claims);
        nulls[1] = false;
    }
    values[2] = BoolGetDatum(from_hook);
    PG_RETURN_DATUM(result_row(fcinfo, values, nulls));
}
