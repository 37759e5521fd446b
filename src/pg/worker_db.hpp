/*
 * worker_db.hpp — every statement the worker runs, each step in one short
 * transaction. No transaction is ever open while requests are in flight:
 * these functions start and finish theirs before returning.
 */
#pragma once

#include "core/dispatch.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace jobrunner {

struct CycleInput {
    std::int64_t worker_id = 0;
    const std::vector<Outcome> *outcomes = nullptr;  // attempts to record
    int claim_limit = 0;                             // 0: claim nothing
    std::int64_t claim_bytes = 0;  // request bodies the claim may carry (at least one job)
    bool expire_leases = false;
    bool purge = false;
    int retention_s = 0;
    int failed_retention_s = 0;
    bool next_wakeup = true;  // also ask when the queue next needs a look
    // Job names the claim must skip: their destination may not be sent to now.
    std::vector<std::string> held_back;
};

// What the database holds of pg_jobrunner: the extension's version as
// installed in the database the worker serves.
enum class Schema { absent, other_version, current };

struct CycleOutput {
    std::vector<ClaimedJob> claimed;
    // When each claimed job became due (the later of its created_at and
    // next_run_at), in microseconds since the Unix epoch; claimed[i]'s is
    // claimed_due_us[i]. For the commit-to-request histogram.
    std::vector<std::int64_t> claimed_due_us;
    std::vector<Outcome> refused;                // claimed, but their body may not be sent
    std::vector<std::string> refused_job_names;  // refused[i]'s job name
    std::vector<std::string> skipped;  // outcomes (by job id) whose row another session holds
    std::int64_t next_wakeup_ms = -1;  // the queue needs a look in this many ms; -1: no date
    Schema schema = Schema::current;
    std::string installed_version;  // when schema is other_version
    bool read_only = false;         // transactions are read-only: nothing was done
    std::string foreign_origin;     // the claim was skipped: the queue was copied from elsewhere
    int purged = 0;
    std::string error;     // set when the transaction failed (rolled back)
    std::string sqlstate;  // of that error, five characters
};

struct RecoverOutput {
    Schema schema = Schema::current;
    std::string installed_version;
    bool read_only = false;
    int recovered = 0;  // attempts put back to pending
    int skipped = 0;    // left for later: another session holds their row
    std::string error;
};

// One transaction: record outcomes, expire callback leases, purge, claim
// new jobs, and learn when to look again. All or nothing; nothing at all
// unless the installed schema is the one this library was built for.
bool db_cycle(const CycleInput &in, CycleOutput &out);

// Puts attempts left in flight by other (dead) incarnations back to pending;
// with worker_id 0, every in-flight attempt (used when shutting down).
bool db_recover(std::int64_t worker_id, RecoverOutput &out);

// Whether a session of the worker's role in its database would be read-only
// now (default_transaction_read_only, as set for the role, the database or
// the server), applied to the worker's own session so that it follows
// changes made after it connected. False with error set when it cannot tell.
bool db_refresh_read_only(bool &read_only, std::string &error);

// The schema version this library needs.
const char *library_version();

}  // namespace jobrunner
