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
    int claim_limit = 0;                              // 0: claim nothing
    bool expire_leases = false;
    bool purge = false;
    int retention_s = 0;
    bool next_wakeup = true;  // also ask when the queue next needs a look
    bool short_lock_wait = false;  // give up on a locked row after 50 ms
};

struct CycleOutput {
    std::vector<ClaimedJob> claimed;
    std::int64_t next_wakeup_ms = -1;  // the queue needs a look in this many ms; -1: no date
    bool extension_present = true;
    int purged = 0;
    std::string error;                 // set when the transaction failed (rolled back)
};

// One transaction: record outcomes, expire callback leases, purge, claim
// new jobs, and learn when to look again. All or nothing.
bool db_cycle(const CycleInput &in, CycleOutput &out);

// Puts attempts left in flight by other (dead) incarnations back to pending;
// with worker_id 0, every in-flight attempt (used when shutting down).
bool db_recover(std::int64_t worker_id, int &count, std::string &error);

}  // namespace jobrunner
