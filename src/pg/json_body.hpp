/*
 * json_body.hpp — whether a 2xx response body is stored as the job's
 * response: exactly when a jsonb column accepts it, decided by Postgres's
 * own JSON parser so that "valid" and "stored" are one decision.
 */
#pragma once

#include "pg/prelude.hpp"

namespace jobrunner {

// True when data (len bytes, not NUL-terminated) is text of the database's
// encoding that jsonb_in accepts. May raise a Postgres ERROR only for
// resource failures (out of memory): call it through pg_call(). The rare
// body the fast check cannot settle (a number with an exponent or of more
// than 1000 characters, nesting deeper than 256) is given to jsonb_in itself
// in a subtransaction, so the caller must be inside a transaction.
bool jsonb_accepts(const char *data, size_t len);

}  // namespace jobrunner
