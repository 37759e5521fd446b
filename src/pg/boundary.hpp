/*
 * boundary.hpp — where C++ and Postgres errors meet.
 *
 * Two rules hold everywhere in src/pg:
 *  - no C++ exception leaves a function Postgres calls: SQL-callable
 *    functions are declared with JOBRUNNER_FUNCTION, whose body runs inside
 *    a catch-all, and the Postgres error is raised only after the C++ frames
 *    are gone (other entry points use cpp_call() the same way);
 *  - no Postgres error longjmps over a live C++ object: Postgres calls made
 *    while C++ objects are alive go through pg_call(), which turns the
 *    longjmp into a PgError exception that unwinds normally.
 */
#pragma once

#include "pg/prelude.hpp"

#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace jobrunner {

// A Postgres error caught by pg_call(); carries the copied ErrorData so it
// can be re-raised unchanged once no C++ frame needs unwinding.
class PgError : public std::exception {
public:
    explicit PgError(ErrorData *edata) : edata_(edata) {}
    const char *what() const noexcept override {
        return edata_ && edata_->message ? edata_->message : "postgres error";
    }
    ErrorData *edata() const { return edata_; }

private:
    ErrorData *edata_;
};

// Runs a Postgres call (a void lambda; results go out through captures); an
// ERROR it raises becomes a PgError exception. Never return from inside the
// PG_TRY block: that would leave the error stack pointing at a dead frame.
template <typename F>
void pg_call(F &&f) {
    MemoryContext caller_cxt = CurrentMemoryContext;
    ErrorData *volatile edata = nullptr;
    PG_TRY();
    { f(); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_cxt);
        edata = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (edata != nullptr) {
        throw PgError(edata);
    }
}

// Why a C++ body failed, kept in plain storage so that raising it needs no
// C++ object alive.
struct CppFailure {
    ErrorData *pg_error = nullptr;  // re-raised as is
    char message[512] = {0};        // otherwise: internal error with this text
    bool failed = false;
};

// Runs a C++ body, catching every exception into `failure`.
template <typename F>
void cpp_try(CppFailure &failure, F &&body) noexcept {
    try {
        body();
    } catch (const PgError &e) {
        failure.failed = true;
        failure.pg_error = e.edata();
    } catch (const std::exception &e) {
        failure.failed = true;
        strlcpy(failure.message, e.what(), sizeof(failure.message));
    } catch (...) {
        failure.failed = true;
        strlcpy(failure.message, "unknown C++ exception", sizeof(failure.message));
    }
}

// Raises the Postgres error for a failure; call only from a frame that owns
// no C++ objects.
void raise_failure(const CppFailure &failure);

// Runs body in C++ land and raises any failure as a Postgres ERROR; the
// body's C++ objects are destroyed before the error is raised.
template <typename F>
void cpp_call(F &&body) {
    CppFailure failure;
    cpp_try(failure, std::forward<F>(body));
    if (failure.failed) {
        raise_failure(failure);
    }
}

// A palloc'd text holding bytes. An out-of-memory ERROR comes back as a
// PgError, so the caller's C++ objects (a token, say) unwind and wipe.
text *palloc_text(std::string_view bytes);

// Runs a SQL-callable function's body (see JOBRUNNER_FUNCTION). A C++
// exception becomes an ERROR raised once the body's frames are gone; a body
// that leaves Postgres's error stack changed (a return inside PG_TRY, or an
// exception thrown through one) is reported as an internal error instead of
// leaving Postgres a handler in a dead frame.
Datum call_sql_function(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo);

}  // namespace jobrunner

// Declares a SQL-callable C function whose body is C++:
//
//   JOBRUNNER_FUNCTION(jobrunner_thing) {
//       ... PG_GETARG_*, ereport, PG_RETURN_* as in any V1 function ...
//   }
//
// The body may raise an ERROR directly only while it owns no C++ object
// with a destructor; once it does, Postgres calls go through pg_call().
#define JOBRUNNER_FUNCTION(name)                                    \
    extern "C" {                                                    \
    PG_FUNCTION_INFO_V1(name);                                      \
    }                                                               \
    static Datum name##_body(FunctionCallInfo fcinfo);              \
    extern "C" Datum name(PG_FUNCTION_ARGS) {                       \
        return ::jobrunner::call_sql_function(name##_body, fcinfo); \
    }                                                               \
    static Datum name##_body(FunctionCallInfo fcinfo)
