/*
 * shmem.hpp — state shared between the worker and every backend: how to wake
 * the worker, and the live figures worker_status() reports.
 */
#pragma once

#include "pg/prelude.hpp"

#include "port/atomics.h"
#include "storage/spin.h"

namespace jobrunner {

struct SharedState {
    slock_t mutex;               // guards the fields up to last_loop_at
    Latch *worker_latch;         // set while a worker runs
    pid_t worker_pid;
    TimestampTz started_at;
    TimestampTz last_loop_at;
    char paused_reason[160];     // why the worker does not dispatch; "" while it does
    pg_atomic_uint32 wake_pending;  // 1: a commit asked for a look at the queue
    pg_atomic_uint32 in_flight;
    pg_atomic_uint64 dispatched;
    pg_atomic_uint64 completed;
    pg_atomic_uint64 failed;
};

// Installs the shmem request/startup hooks (only when preloaded).
void install_shmem_hooks();

// The shared state, or nullptr when the library was not preloaded.
SharedState *shared_state();

// Asks the worker to look at the queue; cheap and coalescing.
void wake_worker();

// Publishes why the worker does not dispatch (nullptr or "": it does).
void set_paused_reason(const char *reason);

}  // namespace jobrunner
