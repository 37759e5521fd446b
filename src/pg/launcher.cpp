/*
 * launcher.cpp — the launcher keeps one dispatcher running for each database
 * listed in jobrunner.databases (or, when that is empty, the one named by
 * jobrunner.database_name): it starts them, starts one again a few seconds
 * after it exits, and stops one whose database is no longer listed or no
 * longer exists. Changes take effect on reload. It connects to no database
 * (it reads only pg_database, a shared catalog), so it holds up no DROP
 * DATABASE; a dispatcher is connected to its database, so DROP DATABASE of a
 * served database stops that dispatcher first (the ProcessUtility hook
 * below), and the launcher does not start it again while the drop goes on.
 *
 * Plain C style: no C++ object lives in these frames, so Postgres errors may
 * longjmp through them.
 */
#include "pg/launcher.hpp"

#include "pg/guc.hpp"
#include "pg/shmem.hpp"
#include "pg/worker.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "nodes/parsenodes.h"
#include "postmaster/interrupt.h"
#include "utils/acl.h"
#include "utils/syscache.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"
}

namespace jobrunner {

namespace {

// A dispatcher that exits is started again after this (as a static
// background worker would be), so a failing one does not flood the log.
constexpr int64 kRestartDelayUs = 5 * 1000 * 1000;
// DROP DATABASE stops a dispatcher and holds it off for this long.
constexpr int64 kDropHoldUs = 10 * 1000 * 1000;
constexpr long kLookEveryMs = 1000;

// The launcher's own view of each slot.
struct Launched {
    BackgroundWorkerHandle *handle;  // nullptr: not started (or forgotten)
    TimestampTz stopped_at;          // when its dispatcher was seen stopped; 0: running
    bool terminating;                // asked to stop for good
};
Launched launched[kMaxDispatchers];

// Names already reported as missing, so each is said once.
List *reported_missing = NIL;

// The databases to serve, as listed (names, in the current transaction's
// memory: SplitGUCList points into its copy of the setting).
List *listed_databases() {
    const char *setting =
        (guc_databases != nullptr && guc_databases[0] != '\0') ? guc_databases : guc_database_name;
    List *names = NIL;
    char *copy = pstrdup(setting != nullptr ? setting : "");
    if (!SplitGUCList(copy, ',', &names)) {
        ereport(WARNING, (errmsg("pg_jobrunner: jobrunner.databases is not a list of names: \"%s\"",
                                 setting)));
        return NIL;
    }
    return names;
}

// The oid of the database named name (InvalidOid: none). A plain scan of
// pg_database, as the logical replication launcher reads its catalog: a
// backend of no database cannot build the relcache entries of indexes.
Oid find_database(const char *name) {
    Oid found = InvalidOid;
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
    HeapTuple tuple;
    while (!OidIsValid(found) && (tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
        Form_pg_database db = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
        if (strcmp(NameStr(db->datname), name) == 0) found = db->oid;
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    return found;
}

// The pid slot i's dispatcher published (0: none runs).
pid_t published_pid(int i) {
    DispatcherSlot &slot = shared_state()->slots[i];
    SpinLockAcquire(&slot.mutex);
    pid_t pid = slot.worker_pid;
    SpinLockRelease(&slot.mutex);
    return pid;
}

// Starts slot i's dispatcher for database db; false when no background
// worker slot is free (max_worker_processes).
bool start_dispatcher(int i, Oid db, const char *name) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;  // the launcher does it
    strlcpy(worker.bgw_library_name, "pg_jobrunner", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "jobrunner_worker_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "pg_jobrunner worker for %s", name);
    strlcpy(worker.bgw_type, "pg_jobrunner worker", BGW_MAXLEN);
    worker.bgw_main_arg = Int32GetDatum(i);
    DispatcherTarget target;
    memset(&target, 0, sizeof(target));
    target.database_oid = db;
    strlcpy(target.database_name, name, sizeof(target.database_name));
    memcpy(worker.bgw_extra, &target, sizeof(target));
    worker.bgw_notify_pid = MyProcPid;  // SIGUSR1 (our latch) when it stops
    BackgroundWorkerHandle *handle = nullptr;
    // The handle outlives this transaction.
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    bool started = RegisterDynamicBackgroundWorker(&worker, &handle);
    MemoryContextSwitchTo(old);
    if (!started) return false;
    launched[i].handle = handle;
    launched[i].stopped_at = 0;
    launched[i].terminating = false;
    return true;
}

// Whether slot i's dispatcher runs (or is starting); notes when it stopped.
// One started by a previous launcher (no handle here) is followed by the
// pid it published.
bool dispatcher_running(int i, TimestampTz now) {
    if (launched[i].handle == nullptr) {
        if (published_pid(i) != 0) return true;
        if (launched[i].stopped_at == 0) launched[i].stopped_at = now - kRestartDelayUs;
        return false;
    }
    pid_t pid = 0;
    if (GetBackgroundWorkerPid(launched[i].handle, &pid) == BGWH_STOPPED) {
        pfree(launched[i].handle);
        launched[i].handle = nullptr;
        launched[i].stopped_at = now;
        return false;
    }
    return true;
}

// Asks slot i's dispatcher to stop (it hands its jobs back and exits).
void stop_dispatcher(int i) {
    if (launched[i].handle != nullptr) {
        TerminateBackgroundWorker(launched[i].handle);
    } else if (pid_t pid = published_pid(i); pid != 0) {
        kill(pid, SIGTERM);
    }
    launched[i].terminating = true;
}

// Brings the dispatchers in line with the list: one per listed database that
// exists, none for anything else. Runs in a transaction (catalog reads).
void reconcile() {
    TimestampTz now = GetCurrentTimestamp();
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    List *names = listed_databases();
    Oid wanted[kMaxDispatchers];
    char *wanted_name[kMaxDispatchers];
    int n_wanted = 0;
    ListCell *lc;
    foreach (lc, names) {
        char *name = static_cast<char *>(lfirst(lc));
        Oid db = find_database(name);
        if (!OidIsValid(db)) {
            if (!list_member(reported_missing, makeString(name))) {
                ereport(LOG, (errmsg("pg_jobrunner: database \"%s\" does not exist; it is served "
                                     "once it is created",
                                     name)));
                MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
                reported_missing = lappend(reported_missing, makeString(pstrdup(name)));
                MemoryContextSwitchTo(old);
            }
            continue;
        }
        bool duplicate = false;
        for (int k = 0; k < n_wanted; k++) duplicate = duplicate || wanted[k] == db;
        if (duplicate) continue;
        if (n_wanted == kMaxDispatchers) {
            ereport(WARNING,
                    (errmsg("pg_jobrunner serves at most %d databases; \"%s\" is not served",
                            kMaxDispatchers, name)));
            break;
        }
        wanted[n_wanted] = db;
        wanted_name[n_wanted] = name;
        n_wanted++;
    }

    // Slots in use: keep, restart, or stop and free.
    bool has_slot[kMaxDispatchers] = {false};
    for (int i = 0; i < kMaxDispatchers; i++) {
        Oid db = slot_database(i);
        if (!OidIsValid(db)) continue;
        int w = -1;
        for (int k = 0; k < n_wanted && w < 0; k++) {
            if (wanted[k] == db) w = k;
        }
        bool running = dispatcher_running(i, now);
        if (w < 0) {  // no longer listed, or its database is gone
            if (running && !launched[i].terminating) stop_dispatcher(i);
            if (!running) {
                release_slot(i);
                launched[i] = Launched{nullptr, 0, false};
            }
            continue;
        }
        has_slot[w] = true;
        if (running || now < slot_held_until(i) || now - launched[i].stopped_at < kRestartDelayUs)
            continue;
        if (!start_dispatcher(i, db, wanted_name[w])) {
            ereport(WARNING,
                    (errmsg("pg_jobrunner: no background worker slot to serve database \"%s\"",
                            wanted_name[w]),
                     errhint("Raise max_worker_processes: pg_jobrunner needs one for its launcher "
                             "and one per database it serves.")));
        }
    }
    // Listed databases without a slot yet.
    for (int k = 0; k < n_wanted; k++) {
        if (has_slot[k]) continue;
        int i = assign_slot(wanted[k]);
        if (i < 0) continue;  // every slot taken (reported above)
        launched[i] = Launched{nullptr, 0, false};
        if (!start_dispatcher(i, wanted[k], wanted_name[k])) {
            release_slot(i);
            ereport(WARNING,
                    (errmsg("pg_jobrunner: no background worker slot to serve database \"%s\"",
                            wanted_name[k]),
                     errhint("Raise max_worker_processes: pg_jobrunner needs one for its launcher "
                             "and one per database it serves.")));
        }
    }
    CommitTransactionCommand();
}

// reconcile(), an error in it logged and rolled back: the launcher goes on.
void reconcile_or_log() {
    MemoryContext caller = CurrentMemoryContext;
    PG_TRY();
    { reconcile(); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);
        EmitErrorReport();
        FlushErrorState();
        AbortCurrentTransaction();
    }
    PG_END_TRY();
}

ProcessUtility_hook_type prev_process_utility = nullptr;

// DROP DATABASE of a database a dispatcher serves: the dispatcher is
// stopped (and held off) before the drop looks for other sessions, which it
// would otherwise wait for and then refuse. Only for a caller who may drop
// it, outside a transaction block, as DROP DATABASE itself requires: nobody
// else can make a dispatcher stop.
void stop_dispatcher_for_drop(const char *dbname) {
    Oid db = get_database_oid(dbname, true);
    if (!OidIsValid(db) || db == MyDatabaseId || IsTransactionBlock()) return;
    if (!pg_database_ownercheck(db, GetUserId())) return;
    SharedState *state = shared_state();
    for (int i = 0; i < kMaxDispatchers; i++) {
        if (slot_database(i) != db) continue;
        hold_slot(i, GetCurrentTimestamp() + kDropHoldUs);
        DispatcherSlot &slot = state->slots[i];
        for (int tries = 0; tries < 500; tries++) {  // up to 5 s
            SpinLockAcquire(&slot.mutex);
            pid_t pid = slot.worker_pid;
            SpinLockRelease(&slot.mutex);
            if (pid == 0) break;
            if (tries == 0) kill(pid, SIGTERM);
            pg_usleep(10 * 1000L);
            CHECK_FOR_INTERRUPTS();
        }
        wake_launcher();
    }
}

void process_utility(PlannedStmt *pstmt, const char *query, bool read_only_tree,
                     ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *env,
                     DestReceiver *dest, QueryCompletion *qc) {
    Node *statement = pstmt->utilityStmt;
    if (statement != nullptr && IsA(statement, DropdbStmt)) {
        stop_dispatcher_for_drop(reinterpret_cast<DropdbStmt *>(statement)->dbname);
    }
    if (prev_process_utility != nullptr) {
        prev_process_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    } else {
        standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    }
}

}  // namespace

void register_launcher() {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    // A database connection to none in particular: pg_database only.
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    strlcpy(worker.bgw_library_name, "pg_jobrunner", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "jobrunner_launcher_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "pg_jobrunner launcher", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "pg_jobrunner launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

void install_drop_database_hook() {
    prev_process_utility = ProcessUtility_hook;
    ProcessUtility_hook = process_utility;
}

}  // namespace jobrunner

using namespace jobrunner;

void jobrunner_launcher_main(Datum main_arg) {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    // SIGTERM: stop launching (the postmaster stops the dispatchers itself).
    pqsignal(SIGTERM, handle_sigterm);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
    pgstat_report_appname("pg_jobrunner launcher");
    SharedState *state = shared_state();
    SpinLockAcquire(&state->mutex);
    state->launcher_latch = MyLatch;
    state->launcher_pid = MyProcPid;
    SpinLockRelease(&state->mutex);
    // Dispatchers a previous launcher started may still run: they are
    // followed by the pid they published (see dispatcher_running).
    for (int i = 0; i < kMaxDispatchers; i++) launched[i] = Launched{nullptr, 0, false};
    while (!got_sigterm) {
        reconcile_or_log();
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kLookEveryMs,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        absorb_interrupts();
    }
    SpinLockAcquire(&state->mutex);
    state->launcher_latch = nullptr;
    state->launcher_pid = 0;
    SpinLockRelease(&state->mutex);
    proc_exit(0);
}
