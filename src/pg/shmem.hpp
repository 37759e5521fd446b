/*
 * shmem.hpp — state shared between the launcher, the dispatchers (one per
 * database served) and every backend: which dispatcher serves which
 * database, how to wake it, and the live figures worker_status() reports.
 */
#pragma once

#include "pg/prelude.hpp"

#include "port/atomics.h"
#include "storage/spin.h"

namespace jobrunner {

// Databases one cluster can serve at once (each dispatcher is a background
// worker: max_worker_processes must leave room for them and the launcher).
constexpr int kMaxDispatchers = 32;

// Why a running dispatcher does not dispatch (for metrics; the words are
// in paused_reason).
enum class PauseCause : int { none, read_only, other_version, copied_queue };

// Attempts canceled while their request ran that a dispatcher has yet to
// abort; more at once are not aborted (their requests run to their end, and
// the job stays canceled).
constexpr int kMaxPendingCancels = 64;

// A job id as text, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and its NUL.
constexpr int kJobIdChars = 37;

// Destinations a dispatcher shows (the troubled ones; more are not shown).
constexpr int kMaxShownDestinations = 32;

// A destination as the dispatcher last saw it (see core/destinations.hpp).
struct ShownDestination {
    char host[128];  // "host:port"
    int state;       // a DestinationState
    int consecutive_failures;
    TimestampTz until;  // next probe, or end of the pause; 0: none
};

// One database's dispatcher.
struct DispatcherSlot {
    slock_t mutex;        // guards the fields up to destination_count
    Latch *worker_latch;  // set while its dispatcher runs
    pid_t worker_pid;
    TimestampTz started_at;
    TimestampTz last_loop_at;
    char paused_reason[160];  // why it does not dispatch; "" while it does
    PauseCause pause_cause;
    // cancel_job committed for these attempts: the dispatcher aborts their
    // requests (cancel_count of them are set).
    char cancel_job_id[kMaxPendingCancels][kJobIdChars];
    int32 cancel_attempt[kMaxPendingCancels];
    int cancel_count;
    ShownDestination destinations[kMaxShownDestinations];
    int destination_count;
    pg_atomic_uint32 wake_pending;  // 1: a commit asked for a look at the queue
    pg_atomic_uint32 in_flight;
    pg_atomic_uint64 dispatched;
    pg_atomic_uint64 completed;
    pg_atomic_uint64 failed;
};

struct SharedState {
    slock_t mutex;  // guards launcher_* and database_oid[]
    Latch *launcher_latch;
    pid_t launcher_pid;
    Oid database_oid[kMaxDispatchers];  // which database each slot serves; InvalidOid: free
    // DROP DATABASE stopped the slot's dispatcher: not restarted before this.
    TimestampTz held_until[kMaxDispatchers];
    DispatcherSlot slots[kMaxDispatchers];
};

// Installs the shmem request/startup hooks (only when preloaded).
void install_shmem_hooks();

// The shared state, or nullptr when the library was not preloaded.
SharedState *shared_state();

// The slot of the dispatcher serving database db, or nullptr.
DispatcherSlot *slot_for_database(Oid db);

// The same slot's index, or -1.
int slot_index_for_database(Oid db);

// Assigns a slot to database db (the one it has, or a free one): its index,
// or -1 when every slot is taken. Only the launcher assigns slots.
int assign_slot(Oid db);

// Frees slot i (its dispatcher has stopped).
void release_slot(int i);

// The database slot i serves (InvalidOid: free).
Oid slot_database(int i);

// Slot i's dispatcher is not to be started again before until.
void hold_slot(int i, TimestampTz until);
TimestampTz slot_held_until(int i);

// Asks this database's dispatcher to look at the queue; cheap and coalescing.
void wake_worker();

// Wakes the launcher: the set of databases to serve may have changed.
void wake_launcher();

// Asks this database's dispatcher to abort the request of this attempt of
// this job (cancel_job committed); false when none serves it or too many
// wait already.
bool request_cancel(const char *job_id, int32 attempt);

// Moves the slot's pending cancels into ids and attempts (room for
// kMaxPendingCancels); how many.
int take_cancels(DispatcherSlot *slot, char (*ids)[kJobIdChars], int32 *attempts);

}  // namespace jobrunner
