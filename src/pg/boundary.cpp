/*
 * boundary.cpp — raising a C++ failure as a Postgres error.
 */
#include "pg/boundary.hpp"

namespace jobrunner {

// Re-raises a caught Postgres error unchanged, or reports a C++ exception as
// an internal error; never returns.
void raise_failure(const CppFailure &failure) {
    if (failure.pg_error != nullptr) {
        ReThrowError(failure.pg_error);
    }
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                    errmsg("pg_jobrunner internal error: %s", failure.message)));
}

}  // namespace jobrunner
