/*
 * metrics.cpp — the per-job-name figures in shared memory (see metrics.hpp):
 * their allocation, the dispatcher's counting, the finished-job counts that
 * wait for their transaction to commit, and the SQL functions that read
 * them (jobrunner.metrics(), jobrunner.metrics_worker()).
 *
 * Everything here is plain C-style code over shared memory: no C++ object
 * is alive while a Postgres call may raise.
 */
#include "pg/metrics.hpp"

#include "pg/boundary.hpp"
#include "pg/result_row.hpp"
#include "pg/shmem.hpp"

extern "C" {
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
}

namespace jobrunner {

namespace {

DatabaseMetrics *all_metrics = nullptr;  // kMaxDispatchers of them, by slot

void zero_histogram(LatencyHistogram &h) {
    for (pg_atomic_uint64 &b : h.bucket) pg_atomic_init_u64(&b, 0);
    pg_atomic_init_u64(&h.sum_us, 0);
}

void zero_entry(JobNameMetrics &m) {
    memset(m.job_name, 0, sizeof(m.job_name));
    pg_atomic_init_u64(&m.attempts, 0);
    pg_atomic_init_u64(&m.retries, 0);
    pg_atomic_init_u64(&m.completed, 0);
    pg_atomic_init_u64(&m.failed, 0);
    for (pg_atomic_uint64 &o : m.outcomes) pg_atomic_init_u64(&o, 0);
    zero_histogram(m.wait);
    zero_histogram(m.duration);
}

// Starts a slot's figures afresh for database db. Caller holds d.mutex.
void reset_for(DatabaseMetrics &d, Oid db) {
    for (JobNameMetrics &m : d.names) zero_entry(m);
    zero_entry(d.other);
    strlcpy(d.other.job_name, kOtherJobName, sizeof(d.other.job_name));
    pg_atomic_write_u32(&d.names_used, 0);
    d.database = db;
}

// The entry named name among the first n, or nullptr.
JobNameMetrics *find_entry(DatabaseMetrics &d, uint32 n, const char *name, size_t len) {
    for (uint32 i = 0; i < n; i++) {
        if (strncmp(d.names[i].job_name, name, len) == 0 && d.names[i].job_name[len] == '\0') {
            return &d.names[i];
        }
    }
    return nullptr;
}

}  // namespace

Size metrics_shmem_size() { return MAXALIGN(sizeof(DatabaseMetrics) * kMaxDispatchers); }

void metrics_shmem_init() {
    bool found = false;
    all_metrics = static_cast<DatabaseMetrics *>(
        ShmemInitStruct("pg_jobrunner metrics", metrics_shmem_size(), &found));
    if (found) return;
    for (int i = 0; i < kMaxDispatchers; i++) {
        DatabaseMetrics &d = all_metrics[i];
        SpinLockInit(&d.mutex);
        pg_atomic_init_u32(&d.names_used, 0);
        reset_for(d, InvalidOid);
    }
}

// Names are only ever appended, each written in full before names_used
// counts it, so lookups read without the lock; adding one takes it.
JobNameMetrics *metrics_for(int slot, Oid db, const char *job_name, size_t len) {
    if (all_metrics == nullptr || slot < 0 || slot >= kMaxDispatchers) return nullptr;
    DatabaseMetrics &d = all_metrics[slot];
    if (len > kMetricJobNameBytes) return &d.other;
    if (d.database == db) {
        uint32 n = pg_atomic_read_u32(&d.names_used);
        pg_read_barrier();
        if (JobNameMetrics *m = find_entry(d, n, job_name, len)) return m;
    }
    JobNameMetrics *m = nullptr;
    SpinLockAcquire(&d.mutex);
    // The slot served another database before: its figures are not ours.
    if (d.database != db) reset_for(d, db);
    uint32 n = pg_atomic_read_u32(&d.names_used);
    m = find_entry(d, n, job_name, len);
    if (m == nullptr && n < static_cast<uint32>(kMetricJobNames)) {
        m = &d.names[n];
        memcpy(m->job_name, job_name, len);
        m->job_name[len] = '\0';
        pg_write_barrier();
        pg_atomic_write_u32(&d.names_used, n + 1);
    }
    SpinLockRelease(&d.mutex);
    return m != nullptr ? m : &d.other;
}

void count_attempt(JobNameMetrics *m, int attempt_number) {
    if (m == nullptr) return;
    pg_atomic_fetch_add_u64(&m->attempts, 1);
    if (attempt_number > 1) pg_atomic_fetch_add_u64(&m->retries, 1);
}

void count_outcome(JobNameMetrics *m, long status) {
    if (m == nullptr) return;
    OutcomeClass c = status == 0                      ? kTransport
                     : status >= 200 && status <= 299 ? k2xx
                     : status >= 300 && status <= 399 ? k3xx
                     : status >= 400 && status <= 499 ? k4xx
                     : status >= 500 && status <= 599 ? k5xx
                                                      : kOtherStatus;
    pg_atomic_fetch_add_u64(&m->outcomes[c], 1);
}

void count_unsent(JobNameMetrics *m) {
    if (m != nullptr) pg_atomic_fetch_add_u64(&m->outcomes[kUnsent], 1);
}

void observe(LatencyHistogram &h, int64 us) {
    if (us < 0) us = 0;  // clocks read on two threads: never below zero
    int b = 0;
    while (b < kLatencyBuckets && us > kLatencyBoundsUs[b]) b++;
    pg_atomic_fetch_add_u64(&h.bucket[b], 1);
    pg_atomic_fetch_add_u64(&h.sum_us, static_cast<uint64>(us));
}

// --- finished jobs, counted at commit -----------------------------------------

namespace {

// Finished jobs counted by a transaction that has not ended yet; level is
// the subtransaction that counted them, so that a rolled-back savepoint (a
// hook that raised) takes its counts with it.
struct PendingFinish {
    JobNameMetrics *entry;
    int level;
    uint32 completed;
    uint32 failed;
};
PendingFinish *pending = nullptr;  // in TopMemoryContext
int pending_n = 0;
int pending_cap = 0;
bool callbacks_registered = false;

// Commit adds what the transaction counted; abort and PREPARE drop it (a
// prepared transaction commits in another session, which cannot know).
// Only memory work here: a commit callback must not raise.
void on_xact(XactEvent event, void *arg) {
    if (event == XACT_EVENT_COMMIT) {
        for (int i = 0; i < pending_n; i++) {
            if (pending[i].completed)
                pg_atomic_fetch_add_u64(&pending[i].entry->completed, pending[i].completed);
            if (pending[i].failed)
                pg_atomic_fetch_add_u64(&pending[i].entry->failed, pending[i].failed);
        }
        pending_n = 0;
    } else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
               event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT) {
        pending_n = 0;
    }
}

// A savepoint released hands its counts to its parent; one rolled back
// drops them (and those of every level under it).
void on_subxact(SubXactEvent event, SubTransactionId mine, SubTransactionId parent, void *arg) {
    int level = GetCurrentTransactionNestLevel();
    if (event == SUBXACT_EVENT_COMMIT_SUB) {
        for (int i = 0; i < pending_n; i++) {
            if (pending[i].level >= level) pending[i].level = level - 1;
        }
    } else if (event == SUBXACT_EVENT_ABORT_SUB) {
        int kept = 0;
        for (int i = 0; i < pending_n; i++) {
            if (pending[i].level < level) pending[kept++] = pending[i];
        }
        pending_n = kept;
    }
}

// Adds to the transaction's pending counts, merging with the last entry
// when it is the same name at the same level (a batch sorted by name
// takes one entry per name).
void add_pending(JobNameMetrics *entry, bool completed) {
    int level = GetCurrentTransactionNestLevel();
    if (pending_n > 0 && pending[pending_n - 1].entry == entry &&
        pending[pending_n - 1].level == level) {
        (completed ? pending[pending_n - 1].completed : pending[pending_n - 1].failed)++;
        return;
    }
    if (pending_n == pending_cap) {
        int cap = pending_cap == 0 ? 16 : pending_cap * 2;
        pending = static_cast<PendingFinish *>(
            pending == nullptr ? MemoryContextAlloc(TopMemoryContext, sizeof(PendingFinish) * cap)
                               : repalloc(pending, sizeof(PendingFinish) * cap));
        pending_cap = cap;
    }
    pending[pending_n++] = PendingFinish{entry, level, completed ? 1u : 0u, completed ? 0u : 1u};
}

// Text elements of a one-dimensional text[] (NULL elements as nullptr).
void deconstruct_text(ArrayType *a, Datum **values, bool **nulls, int *n) {
    deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, values, nulls, n);
}

// Copies histogram h into result columns: upper bounds (seconds),
// cumulative counts per bound, sum (seconds) and count.
void histogram_columns(const LatencyHistogram &h, Datum *values) {
    Datum bounds[kLatencyBuckets];
    Datum cumulative[kLatencyBuckets];
    uint64 running = 0;
    for (int b = 0; b < kLatencyBuckets; b++) {
        running += pg_atomic_read_u64(const_cast<pg_atomic_uint64 *>(&h.bucket[b]));
        bounds[b] = Float8GetDatum(static_cast<double>(kLatencyBoundsUs[b]) / 1e6);
        cumulative[b] = Int64GetDatum(static_cast<int64>(running));
    }
    running += pg_atomic_read_u64(const_cast<pg_atomic_uint64 *>(&h.bucket[kLatencyBuckets]));
    values[0] = PointerGetDatum(
        construct_array(bounds, kLatencyBuckets, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    values[1] = PointerGetDatum(
        construct_array(cumulative, kLatencyBuckets, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    values[2] = Float8GetDatum(
        static_cast<double>(pg_atomic_read_u64(const_cast<pg_atomic_uint64 *>(&h.sum_us))) / 1e6);
    values[3] = Int64GetDatum(static_cast<int64>(running));
}

constexpr int kMetricsCols = 6 + kOutcomeClasses + 8;

// One row of jobrunner.metrics() for entry m.
void metrics_row(ReturnSetInfo *rsinfo, const char *database, JobNameMetrics &m) {
    Datum values[kMetricsCols];
    bool nulls[kMetricsCols];
    memset(nulls, 0, sizeof(nulls));
    auto read = [](pg_atomic_uint64 &a) {
        return Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&a)));
    };
    values[0] = CStringGetTextDatum(database);
    values[1] = CStringGetTextDatum(m.job_name);
    values[2] = read(m.attempts);
    values[3] = read(m.retries);
    values[4] = read(m.completed);
    values[5] = read(m.failed);
    for (int c = 0; c < kOutcomeClasses; c++) values[6 + c] = read(m.outcomes[c]);
    histogram_columns(m.wait, &values[6 + kOutcomeClasses]);
    histogram_columns(m.duration, &values[10 + kOutcomeClasses]);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

}  // namespace

}  // namespace jobrunner

using namespace jobrunner;

// jobrunner._count_finished(job_names, states): counts the jobs whose new
// state is 'completed' or 'failed' (others are ignored) for the dispatcher
// serving this database, when this transaction commits. Nothing is counted
// where no dispatcher serves the database.
JOBRUNNER_FUNCTION(jobrunner_count_finished) {
    int slot = slot_index_for_database(MyDatabaseId);
    if (slot < 0) PG_RETURN_INT32(0);
    if (!callbacks_registered) {
        RegisterXactCallback(on_xact, nullptr);
        RegisterSubXactCallback(on_subxact, nullptr);
        callbacks_registered = true;
    }
    Datum *names, *states;
    bool *name_nulls, *state_nulls;
    int n_names, n_states;
    deconstruct_text(PG_GETARG_ARRAYTYPE_P(0), &names, &name_nulls, &n_names);
    deconstruct_text(PG_GETARG_ARRAYTYPE_P(1), &states, &state_nulls, &n_states);
    if (n_names != n_states) {
        ereport(ERROR,
                (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                 errmsg("job names and states differ in length (%d and %d)", n_names, n_states)));
    }
    int counted = 0;
    text *last_name = nullptr;
    JobNameMetrics *last = nullptr;
    for (int i = 0; i < n_names; i++) {
        if (name_nulls[i] || state_nulls[i]) continue;
        text *state = DatumGetTextPP(states[i]);
        const char *s = VARDATA_ANY(state);
        size_t slen = VARSIZE_ANY_EXHDR(state);
        bool completed = slen == 9 && memcmp(s, "completed", 9) == 0;
        bool failed = slen == 6 && memcmp(s, "failed", 6) == 0;
        if (!completed && !failed) continue;
        text *name = DatumGetTextPP(names[i]);
        if (last == nullptr || VARSIZE_ANY_EXHDR(name) != VARSIZE_ANY_EXHDR(last_name) ||
            memcmp(VARDATA_ANY(name), VARDATA_ANY(last_name), VARSIZE_ANY_EXHDR(name)) != 0) {
            last = metrics_for(slot, MyDatabaseId, VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));
            last_name = name;
        }
        if (last == nullptr) continue;
        add_pending(last, completed);
        counted++;
    }
    PG_RETURN_INT32(counted);
}

// jobrunner.metrics(): one row per job name counted in this database (and
// the overflow row once the cap is reached).
JOBRUNNER_FUNCTION(jobrunner_metrics) {
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    int slot = slot_index_for_database(MyDatabaseId);
    if (slot < 0 || all_metrics == nullptr) return (Datum)0;
    DatabaseMetrics &d = all_metrics[slot];
    if (d.database != MyDatabaseId) return (Datum)0;  // nothing counted here yet
    char *database = get_database_name(MyDatabaseId);
    uint32 n = pg_atomic_read_u32(&d.names_used);
    pg_read_barrier();
    for (uint32 i = 0; i < n; i++) metrics_row(rsinfo, database ? database : "", d.names[i]);
    if (n == static_cast<uint32>(kMetricJobNames))
        metrics_row(rsinfo, database ? database : "", d.other);
    return (Datum)0;
}

// jobrunner.metrics_worker(): the dispatcher of this database as gauges.
JOBRUNNER_FUNCTION(jobrunner_metrics_worker) {
    constexpr int kCols = 10;
    Datum values[kCols];
    bool nulls[kCols];
    memset(nulls, 0, sizeof(nulls));
    int slot = slot_index_for_database(MyDatabaseId);
    DispatcherSlot *s = slot < 0 ? nullptr : &shared_state()->slots[slot];
    pid_t pid = 0;
    TimestampTz started = 0, last_loop = 0;
    bool paused = false;
    PauseCause cause = PauseCause::none;
    if (s != nullptr) {
        SpinLockAcquire(&s->mutex);
        pid = s->worker_pid;
        started = s->started_at;
        last_loop = s->last_loop_at;
        paused = s->paused_reason[0] != '\0';
        cause = s->pause_cause;
        SpinLockRelease(&s->mutex);
    }
    bool standby = RecoveryInProgress();
    bool up = pid != 0 && !standby;
    uint32 names = 0;
    if (slot >= 0 && all_metrics != nullptr && all_metrics[slot].database == MyDatabaseId) {
        names = pg_atomic_read_u32(&all_metrics[slot].names_used);
    }
    char *database = get_database_name(MyDatabaseId);
    values[0] = CStringGetTextDatum(database ? database : "");
    values[1] = BoolGetDatum(up);
    values[2] = BoolGetDatum(up && paused);
    values[3] = BoolGetDatum(up && paused && cause == PauseCause::read_only);
    values[4] = BoolGetDatum(standby);
    values[5] = Int32GetDatum(up ? static_cast<int32>(pg_atomic_read_u32(&s->in_flight)) : 0);
    // Seconds since the Unix epoch, as Prometheus's *_start_time_seconds.
    values[6] = Float8GetDatum(static_cast<double>(started - SetEpochTimestamp()) / 1e6);
    nulls[6] = !up || started == 0;
    values[7] = Float8GetDatum(static_cast<double>(GetCurrentTimestamp() - last_loop) / 1e6);
    nulls[7] = !up || last_loop == 0;
    values[8] = Int32GetDatum(static_cast<int32>(names));
    values[9] = Int32GetDatum(kMetricJobNames);
    PG_RETURN_DATUM(result_row(fcinfo, values, nulls));
}
