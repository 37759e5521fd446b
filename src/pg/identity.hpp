/*
 * identity.hpp — who is calling, as the SQL API judges it: admin rights, the
 * claims to believe, and the identity a completion hook acts with.
 */
#pragma once

#include "pg/prelude.hpp"

namespace jobrunner {

// Superuser or EXECUTE on queue_job_for, judged on the role the session acts
// as (SET ROLE counts, a SECURITY DEFINER owner does not); never inside a
// security-restricted operation (VACUUM, ANALYZE, index builds, hooks).
bool caller_is_admin();

}  // namespace jobrunner
