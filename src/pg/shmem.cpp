/*
 * shmem.cpp — allocation of the shared state and the wake-up signal.
 */
#include "pg/shmem.hpp"

namespace jobrunner {

static SharedState *state = nullptr;
static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

// Reserves our slice of shared memory before the postmaster sizes it.
static void request_shmem() {
    if (prev_shmem_request_hook) prev_shmem_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
}

// Finds or initializes the shared state, once per cluster start.
static void startup_shmem() {
    if (prev_shmem_startup_hook) prev_shmem_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    state = static_cast<SharedState *>(
        ShmemInitStruct("pg_jobrunner", sizeof(SharedState), &found));
    if (!found) {
        memset(state, 0, sizeof(SharedState));
        SpinLockInit(&state->mutex);
        pg_atomic_init_u32(&state->wake_pending, 0);
        pg_atomic_init_u32(&state->in_flight, 0);
        pg_atomic_init_u64(&state->dispatched, 0);
        pg_atomic_init_u64(&state->completed, 0);
        pg_atomic_init_u64(&state->failed, 0);
    }
    LWLockRelease(AddinShmemInitLock);
}

void install_shmem_hooks() {
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
}

SharedState *shared_state() { return state; }

// Sets the worker's latch unless a wake-up is already pending, so a burst of
// commits costs one signal.
void wake_worker() {
    if (state == nullptr) return;
    if (pg_atomic_exchange_u32(&state->wake_pending, 1) != 0) return;
    SpinLockAcquire(&state->mutex);
    Latch *latch = state->worker_latch;
    SpinLockRelease(&state->mutex);
    if (latch != nullptr) SetLatch(latch);
}

void set_paused_reason(const char *reason) {
    if (state == nullptr) return;
    SpinLockAcquire(&state->mutex);
    strlcpy(state->paused_reason, reason ? reason : "", sizeof(state->paused_reason));
    SpinLockRelease(&state->mutex);
}

}  // namespace jobrunner
