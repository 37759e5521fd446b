/*
 * result_row.hpp — returning one row from a SQL-callable C function.
 */
#pragma once

#include "pg/prelude.hpp"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
}

namespace jobrunner {

// The row a function with OUT parameters returns, from its values and null
// flags (as many as it declares).
inline Datum result_row(FunctionCallInfo fcinfo, Datum *values, bool *nulls) {
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE) {
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("function returning a row called in a context that cannot accept one")));
    }
    return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
}

}  // namespace jobrunner
