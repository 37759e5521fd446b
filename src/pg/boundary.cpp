/*
 * boundary.cpp — raising a C++ failure as a Postgres error, and the frame
 * every SQL-callable function runs in.
 */
#include "pg/boundary.hpp"

extern "C" {
#include "utils/lsyscache.h"
}

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

text *palloc_text(std::string_view bytes) {
    text *out = nullptr;
    pg_call([&] { out = cstring_to_text_with_len(bytes.data(), static_cast<int>(bytes.size())); });
    return out;
}

Datum call_sql_function(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo) {
    sigjmp_buf *const handler = PG_exception_stack;
    ErrorContextCallback *const context = error_context_stack;
    Datum result = static_cast<Datum>(0);
    CppFailure failure;
    cpp_try(failure, [&] { result = body(fcinfo); });
    if (PG_exception_stack != handler || error_context_stack != context) {
        PG_exception_stack = handler;
        error_context_stack = context;
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("pg_jobrunner internal error: %s left the error stack changed",
                               get_func_name(fcinfo->flinfo->fn_oid)),
                        failure.failed ? errdetail("It ended in an exception: %s",
                                                   failure.pg_error ? failure.pg_error->message
                                                                    : failure.message)
                                       : errdetail("It returned normally.")));
    }
    if (failure.failed) raise_failure(failure);
    return result;
}

}  // namespace jobrunner
