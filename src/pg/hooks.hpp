/*
 * hooks.hpp — running a job's on_complete / on_fail hook with no more rights
 * than its owner, and the identity it acts with meanwhile.
 */
#pragma once

#include "pg/prelude.hpp"

namespace jobrunner {

// The claims of the job whose hook is running (JSON text), or nullptr when
// no pg_jobrunner hook runs in this backend.
const char *hook_claims();

}  // namespace jobrunner
