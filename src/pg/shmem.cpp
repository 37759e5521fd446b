/*
 * shmem.cpp — allocation of the shared state, slot bookkeeping and the
 * wake-up signals.
 */
#include "pg/shmem.hpp"

#include "pg/metrics.hpp"

namespace jobrunner {

static SharedState *state = nullptr;
static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

// Reserves our slice of shared memory before the postmaster sizes it.
static void request_shmem() {
    if (prev_shmem_request_hook) prev_shmem_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
    RequestAddinShmemSpace(metrics_shmem_size());
}

// Finds or initializes the shared state, once per cluster start.
static void startup_shmem() {
    if (prev_shmem_startup_hook) prev_shmem_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    state =
        static_cast<SharedState *>(ShmemInitStruct("pg_jobrunner", sizeof(SharedState), &found));
    if (!found) {
        memset(state, 0, sizeof(SharedState));
        SpinLockInit(&state->mutex);
        for (DispatcherSlot &slot : state->slots) {
            SpinLockInit(&slot.mutex);
            pg_atomic_init_u32(&slot.wake_pending, 0);
            pg_atomic_init_u32(&slot.in_flight, 0);
            pg_atomic_init_u64(&slot.dispatched, 0);
            pg_atomic_init_u64(&slot.completed, 0);
            pg_atomic_init_u64(&slot.failed, 0);
        }
    }
    metrics_shmem_init();
    LWLockRelease(AddinShmemInitLock);
}

void install_shmem_hooks() {
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
}

SharedState *shared_state() { return state; }

int slot_index_for_database(Oid db) {
    if (state == nullptr || !OidIsValid(db)) return -1;
    int found = -1;
    SpinLockAcquire(&state->mutex);
    for (int i = 0; i < kMaxDispatchers && found < 0; i++) {
        if (state->database_oid[i] == db) found = i;
    }
    SpinLockRelease(&state->mutex);
    return found;
}

DispatcherSlot *slot_for_database(Oid db) {
    int i = slot_index_for_database(db);
    return i < 0 ? nullptr : &state->slots[i];
}

int assign_slot(Oid db) {
    int chosen = -1;
    SpinLockAcquire(&state->mutex);
    for (int i = 0; i < kMaxDispatchers && chosen < 0; i++) {
        if (state->database_oid[i] == db) chosen = i;
    }
    for (int i = 0; i < kMaxDispatchers && chosen < 0; i++) {
        if (!OidIsValid(state->database_oid[i])) {
            state->database_oid[i] = db;
            chosen = i;
        }
    }
    SpinLockRelease(&state->mutex);
    return chosen;
}

void release_slot(int i) {
    DispatcherSlot &slot = state->slots[i];
    SpinLockAcquire(&slot.mutex);
    slot.worker_latch = nullptr;
    slot.worker_pid = 0;
    slot.paused_reason[0] = '\0';
    slot.pause_cause = PauseCause::none;
    slot.cancel_count = 0;
    slot.destination_count = 0;
    SpinLockRelease(&slot.mutex);
    SpinLockAcquire(&state->mutex);
    state->database_oid[i] = InvalidOid;
    state->held_until[i] = 0;
    SpinLockRelease(&state->mutex);
}

void hold_slot(int i, TimestampTz until) {
    SpinLockAcquire(&state->mutex);
    state->held_until[i] = until;
    SpinLockRelease(&state->mutex);
}

TimestampTz slot_held_until(int i) {
    SpinLockAcquire(&state->mutex);
    TimestampTz until = state->held_until[i];
    SpinLockRelease(&state->mutex);
    return until;
}

Oid slot_database(int i) {
    SpinLockAcquire(&state->mutex);
    Oid db = state->database_oid[i];
    SpinLockRelease(&state->mutex);
    return db;
}

// Sets the dispatcher's latch unless a wake-up is already pending, so a
// burst of commits costs one signal.
void wake_worker() {
    DispatcherSlot *slot = slot_for_database(MyDatabaseId);
    if (slot == nullptr) return;
    if (pg_atomic_exchange_u32(&slot->wake_pending, 1) != 0) return;
    SpinLockAcquire(&slot->mutex);
    Latch *latch = slot->worker_latch;
    SpinLockRelease(&slot->mutex);
    if (latch != nullptr) SetLatch(latch);
}

bool request_cancel(const char *job_id, int32 attempt) {
    DispatcherSlot *slot = slot_for_database(MyDatabaseId);
    if (slot == nullptr) return false;
    bool queued = false;
    SpinLockAcquire(&slot->mutex);
    if (slot->cancel_count < kMaxPendingCancels) {
        strlcpy(slot->cancel_job_id[slot->cancel_count], job_id, kJobIdChars);
        slot->cancel_attempt[slot->cancel_count] = attempt;
        slot->cancel_count++;
        queued = true;
    }
    Latch *latch = slot->worker_latch;
    SpinLockRelease(&slot->mutex);
    if (latch != nullptr) SetLatch(latch);
    return queued;
}

int take_cancels(DispatcherSlot *slot, char (*ids)[kJobIdChars], int32 *attempts) {
    SpinLockAcquire(&slot->mutex);
    int n = slot->cancel_count;
    memcpy(ids, slot->cancel_job_id, sizeof(slot->cancel_job_id[0]) * n);
    memcpy(attempts, slot->cancel_attempt, sizeof(slot->cancel_attempt[0]) * n);
    slot->cancel_count = 0;
    SpinLockRelease(&slot->mutex);
    return n;
}

void wake_launcher() {
    if (state == nullptr) return;
    SpinLockAcquire(&state->mutex);
    Latch *latch = state->launcher_latch;
    SpinLockRelease(&state->mutex);
    if (latch != nullptr) SetLatch(latch);
}

}  // namespace jobrunner
