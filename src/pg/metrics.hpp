/*
 * metrics.hpp — the figures Prometheus reads through postgres_exporter
 * (monitoring/postgres_exporter.yml): per database and job name, counters
 * and fixed-bucket latency histograms, kept in shared memory.
 *
 * Nothing here writes a table. The dispatcher counts attempts, HTTP outcome
 * classes and latencies as it claims, sends and harvests (plain atomic
 * adds, no lock); jobs that finish are counted by whoever finishes them
 * (the worker's _record, complete_job, fail_job, lease expiry), at commit,
 * through jobrunner._count_finished, so a rolled-back completion counts
 * nothing. Counters only grow while the cluster runs: they start at zero
 * when the cluster starts (crash restarts included) and when a dispatcher
 * slot begins serving another database; a dispatcher that restarts keeps
 * them. Prometheus's rate() reads a drop to zero as a counter reset.
 *
 * Each database served has kMetricJobNames job names counted by name, in
 * the order they first appear; every later name is counted under
 * kOtherJobName, which no job name can be (job_config allows only
 * [A-Za-z0-9._-]).
 */
#pragma once

#include "pg/prelude.hpp"

#include "port/atomics.h"
#include "storage/spin.h"

namespace jobrunner {

// Job names counted by name per database served.
constexpr int kMetricJobNames = 64;
// Longest job name (job_config's check allows 128 bytes).
constexpr int kMetricJobNameBytes = 128;
// Where job names past the cap are counted.
constexpr const char *kOtherJobName = "(other)";

// Histogram buckets: finite upper bounds, in microseconds; one more bucket
// holds what is above the last (Prometheus's +Inf). The same bounds for
// both histograms: 1 ms to 5 minutes (the default attempt timeout).
constexpr int kLatencyBuckets = 16;
constexpr int64 kLatencyBoundsUs[kLatencyBuckets] = {
    1000,   2500,    5000,    10000,   25000,    50000,    100000,   250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 300000000};

// How an attempt ended, as counted.
enum OutcomeClass { k2xx, k3xx, k4xx, k5xx, kOtherStatus, kTransport, kUnsent, kOutcomeClasses };

struct LatencyHistogram {
    pg_atomic_uint64 bucket[kLatencyBuckets + 1];  // per bucket, not cumulative
    pg_atomic_uint64 sum_us;
};

// One job name's figures.
struct JobNameMetrics {
    char job_name[kMetricJobNameBytes + 1];
    pg_atomic_uint64 attempts;   // attempts claimed
    pg_atomic_uint64 retries;    // of those, not a job's first (attempt number > 1)
    pg_atomic_uint64 completed;  // jobs that became completed (committed)
    pg_atomic_uint64 failed;     // jobs that failed for good (committed)
    pg_atomic_uint64 outcomes[kOutcomeClasses];
    LatencyHistogram wait;      // from when the job became due to its request's start
    LatencyHistogram duration;  // the request, start to end
};

// A database's figures, one per dispatcher slot.
struct DatabaseMetrics {
    slock_t mutex;                // guards adding names, and database
    Oid database;                 // whose figures these are (InvalidOid: none yet)
    pg_atomic_uint32 names_used;  // names[0 .. names_used) have their name set
    JobNameMetrics names[kMetricJobNames];
    JobNameMetrics other;  // every job name past the cap
};

// Shared memory the figures need, and its initialisation (from the shmem
// request and startup hooks).
Size metrics_shmem_size();
void metrics_shmem_init();

// The figures of job_name in dispatcher slot `slot` (which serves database
// db), adding the name if there is room; the overflow entry otherwise.
// Plain memory work: never raises. nullptr when not preloaded.
JobNameMetrics *metrics_for(int slot, Oid db, const char *job_name, size_t len);

// Counting, from the dispatcher (atomic adds; never raise).
void count_attempt(JobNameMetrics *m, int attempt_number);
void count_outcome(JobNameMetrics *m, long http_status);
void count_unsent(JobNameMetrics *m);
void observe(LatencyHistogram &h, int64 us);

}  // namespace jobrunner
