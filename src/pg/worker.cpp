/*
 * worker.cpp — the dispatcher: one background worker that claims due jobs,
 * POSTs them through one libcurl multi handle, and records the outcomes.
 *
 * One loop, one wait: the latch (commits wake us), postmaster death, and the
 * HTTP thread's "results ready" descriptor share a WaitEventSet, so a slow
 * endpoint never delays a fast one and an idle worker sleeps until something
 * happens. Requests travel on the HTTP thread (src/core/http_thread.hpp)
 * while this thread records and claims, so network and database work
 * overlap. Recording finished attempts and claiming new ones share a
 * transaction, so a busy worker commits once per round trip, not twice.
 */
#include "core/destinations.hpp"
#include "core/dispatch.hpp"
#include "core/http_thread.hpp"

#include "pg/boundary.hpp"
#include "pg/guc.hpp"
#include "pg/metrics.hpp"
#include "pg/shmem.hpp"
#include "pg/launcher.hpp"
#include "pg/worker.hpp"
#include "pg/worker_db.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" {
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "utils/wait_event.h"
}

#ifndef JOBRUNNER_VERSION
#define JOBRUNNER_VERSION "dev"
#endif

namespace jobrunner {

volatile sig_atomic_t got_sigterm = false;

// Sets got_sigterm and wakes the process's loop.
void handle_sigterm(SIGNAL_ARGS) {
    int save_errno = errno;
    got_sigterm = true;
    SetLatch(MyLatch);
    errno = save_errno;
}

namespace {

// Most jobs held at once (claimed, not yet answered), and so the most one
// transaction claims.
constexpr int kMaxClaim = 1000;
// How often callback leases are checked and old jobs purged.
constexpr int64 kLeaseCheckUs = 200 * 1000;
constexpr int64 kPurgeEveryUs = 60 * 1000 * 1000;
// Pause after a failed transaction before trying again.
constexpr int64 kErrorPauseUs = 1000 * 1000;
// Request bodies held at once (claimed, not yet answered); a claim may pass
// it by one job, so one large body is always sent.
constexpr std::int64_t kMaxHeldBodyBytes = 64 * 1024 * 1024;
// How often the worker re-reads whether its database is in read-only mode
// (while dispatching, and while paused by it), and retries outcomes and
// recoveries left for later because another session held their rows.
constexpr int64 kReadOnlyCheckUs = 2 * 1000 * 1000;
constexpr int64 kReadOnlyPausedCheckUs = 1000 * 1000;
constexpr int64 kLockedRetryUs = 200 * 1000;
constexpr int64 kDetailLogEveryUs = 10 * 1000 * 1000;
constexpr const char *kReadOnlyReason =
    "the database is in read-only mode (default_transaction_read_only is on); dispatch resumes "
    "by itself when it is lifted";

// This dispatcher's slot in shared memory (the launcher chose it).
DispatcherSlot *my_slot = nullptr;
int my_slot_index = -1;

// Clears the published pid and latch when the worker exits, however it exits.
void unpublish(int code, Datum arg) {
    if (my_slot == nullptr) return;
    SpinLockAcquire(&my_slot->mutex);
    my_slot->worker_latch = nullptr;
    my_slot->worker_pid = 0;
    SpinLockRelease(&my_slot->mutex);
    pg_atomic_write_u32(&my_slot->in_flight, 0);
}

// Publishes why the worker does not dispatch (nullptr or "": it does).
void set_paused_reason(PauseCause cause, const char *reason) {
    SpinLockAcquire(&my_slot->mutex);
    strlcpy(my_slot->paused_reason, reason ? reason : "", sizeof(my_slot->paused_reason));
    my_slot->pause_cause = cause;
    SpinLockRelease(&my_slot->mutex);
}

// Now, in microseconds since the Unix epoch; read on either thread.
std::int64_t unix_now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A claimed attempt until its answer is taken: the job, and what the
// commit-to-request histogram needs. started_us is written by the HTTP
// thread when the request starts, and read here once its result is in
// (the result's hand-over orders the two); shared, so that a request the
// HTTP thread starts while the worker exits never writes freed memory.
struct Held {
    ClaimedJob job;
    std::int64_t due_us = 0;  // when the job became due (0: unknown)
    std::shared_ptr<std::atomic<std::int64_t>> started_us;
};

}  // namespace

bool running_in_dispatcher = false;

// Reloads the configuration when asked, and answers what other backends wait
// for: a ProcSignalBarrier (DROP DATABASE anywhere in the cluster waits until
// every backend has absorbed it) or a stray cancel, which has nothing to
// cancel between transactions and is dropped.
void absorb_interrupts() {
    if (ConfigReloadPending) {
        ConfigReloadPending = false;
        pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
    }
    try {
        pg_call([] { CHECK_FOR_INTERRUPTS(); });
    } catch (const PgError &e) {
        ereport(LOG,
                (errmsg("pg_jobrunner: interrupt ignored between transactions: %s", e.what())));
    }
}

namespace {

// Every request in flight holds a socket, and the usual soft limit on open
// files (1024) is below what jobrunner.max_in_flight allows: without this,
// requests past the limit fail to connect. Raised to the hard limit, which
// only root can lift; a limit still too low is reported once.
void raise_open_files_limit() {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    // Postgres keeps up to max_files_per_process descriptors of its own.
    rlim_t wanted =
        static_cast<rlim_t>(guc_max_in_flight) + static_cast<rlim_t>(max_files_per_process);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < wanted) {
        ereport(WARNING, (errmsg("pg_jobrunner: the open files limit (%lu) is below what "
                                 "jobrunner.max_in_flight = %d needs (about %lu)",
                                 static_cast<unsigned long>(rl.rlim_cur), guc_max_in_flight,
                                 static_cast<unsigned long>(wanted)),
                          errhint("Raise the hard limit on open files (ulimit -Hn, LimitNOFILE=) "
                                  "for the PostgreSQL server, or lower jobrunner.max_in_flight.")));
    }
}

// Makes the worker findable: its latch for wake-ups, pid and start time.
void publish() {
    SpinLockAcquire(&my_slot->mutex);
    my_slot->worker_latch = MyLatch;
    my_slot->worker_pid = MyProcPid;
    my_slot->started_at = GetCurrentTimestamp();
    my_slot->last_loop_at = 0;
    my_slot->paused_reason[0] = '\0';
    my_slot->pause_cause = PauseCause::none;
    SpinLockRelease(&my_slot->mutex);
    pg_atomic_write_u64(&my_slot->dispatched, 0);
    pg_atomic_write_u64(&my_slot->completed, 0);
    pg_atomic_write_u64(&my_slot->failed, 0);
    on_shmem_exit(unpublish, 0);
}

class Dispatcher {
public:
    Dispatcher()
        : http_(static_cast<std::size_t>(guc_max_response_kb) * 1024,
                "pg_jobrunner/" JOBRUNNER_VERSION),
          worker_id_(GetCurrentTimestamp()) {}

    void run();

private:
    void recover_at_start();
    void recover_left_over(TimestampTz now);
    bool schema_usable(Schema schema, const std::string &installed);
    bool read_only_paused(TimestampTz now);
    enum class Pause { none, read_only, version, origin };
    void pause(Pause cause, const std::string &reason);
    void resume(Pause cause, const char *log_line);
    void harvest();
    void abort_canceled();
    void held_back(std::int64_t now_ms, std::vector<std::string> &names) const;
    void log_failure_detail(const std::string &job_name, const Outcome &outcome);
    bool ready_to_claim() const;
    // Jobs held at once: jobrunner.max_in_flight on the wire and twice as
    // many waiting on the HTTP thread, which starts them as running ones
    // finish. The network then stays busy while this thread records and
    // claims, and each transaction carries more jobs: with only as many
    // again waiting, a 10,000-job burst ran at 0.87x of the worker's own
    // SQL ceiling, with twice as many at 1.0x.
    static int claim_budget() { return std::min(kMaxClaim, 3 * guc_max_in_flight); }
    // Jobs the next claim may take.
    int claim_room() const { return claim_budget() - static_cast<int>(held_.size()); }
    void step(TimestampTz now);
    void dispatch(std::vector<ClaimedJob> &claimed, const std::vector<std::int64_t> &due_us);
    JobNameMetrics *metrics(const std::string &job_name);
    void record_one_by_one(std::vector<Outcome> &list);
    void keep_for_later(std::vector<Outcome> &recorded, const std::vector<std::string> &skipped);
    void wait(TimestampTz now);
    void shutdown();
    void publish_figures(TimestampTz now);

    HttpThread http_;
    int64 worker_id_;
    // Claimed attempts not yet answered: on the wire or waiting for a slot.
    std::unordered_map<std::uint64_t, Held> held_;
    // Each job name's figures in shared memory (they stay put while the
    // dispatcher runs).
    std::unordered_map<std::string, JobNameMetrics *> metrics_;
    std::vector<Outcome> outcomes_;
    std::vector<Outcome> stuck_;  // another session held their rows: tried again later
    TimestampTz stuck_retry_at_ = 0;
    std::int64_t held_body_bytes_ = 0;
    bool recover_again_ = false;      // recovery is due: rows were skipped, or the schema changed
    bool schema_was_current_ = true;  // the last cycle found this library's version installed
    TimestampTz recover_again_at_ = 0;
    bool read_only_ = false;  // paused: the database is in read-only mode
    TimestampTz read_only_checked_at_ = 0;
    Pause pause_cause_ = Pause::none;  // why dispatch is paused
    std::string paused_;               // that, in words ("" while it dispatches)
    // When a transport failure's detail was last logged, per job name.
    std::unordered_map<std::string, TimestampTz> detail_logged_at_;
    Destinations destinations_;
    // The destination of each job name, as its last claimed job had it.
    std::unordered_map<std::string, std::string> destination_of_name_;
    std::vector<HttpResult> results_;
    std::vector<HttpRequest> requests_;
    std::uint64_t next_tag_ = 1;
    bool want_claim_ = true;
    bool backlog_ = false;  // the last claim was full: more jobs are due
    TimestampTz next_look_ = 0;
    TimestampTz paused_until_ = 0;  // after a failed transaction: no retry before
    TimestampTz last_lease_check_ = 0;
    TimestampTz last_purge_ = 0;
    WaitEventSet *events_ = nullptr;
};

// Stops dispatching and says why, once, in the log and in worker_status().
void Dispatcher::pause(Pause cause, const std::string &reason) {
    if (pause_cause_ == cause && paused_ == reason) return;
    pause_cause_ = cause;
    paused_ = reason;
    set_paused_reason(cause == Pause::read_only ? PauseCause::read_only
                      : cause == Pause::version ? PauseCause::other_version
                      : cause == Pause::origin  ? PauseCause::copied_queue
                                                : PauseCause::none,
                      reason.c_str());
    ereport(LOG, (errmsg("pg_jobrunner: dispatch paused: %s", reason.c_str())));
}

// Dispatches again once what paused it is over, saying so once.
void Dispatcher::resume(Pause cause, const char *log_line) {
    if (pause_cause_ != cause) return;
    pause_cause_ = Pause::none;
    paused_.clear();
    set_paused_reason(PauseCause::none, nullptr);
    ereport(LOG, (errmsg("pg_jobrunner: %s", log_line)));
    want_claim_ = true;
}

// Whether the installed SQL is what this library runs; otherwise the worker
// idles and says what to do. After a package upgrade the new library runs
// against the old SQL until ALTER EXTENSION ... UPDATE: failing every cycle
// would flood the log and could misuse functions whose meaning changed.
bool Dispatcher::schema_usable(Schema schema, const std::string &installed) {
    if (schema == Schema::current) {
        // The extension was created or updated under a running worker: what
        // another worker left running there is recovered, as at start.
        if (!schema_was_current_) {
            schema_was_current_ = true;
            recover_again_ = true;
            recover_again_at_ = 0;
        }
        resume(Pause::version, "dispatch resumed: the installed version matches the library");
        return true;
    }
    schema_was_current_ = false;
    if (schema == Schema::other_version) {
        pause(Pause::version, "pg_jobrunner " + installed +
                                  " is installed in this database, but the library is " +
                                  library_version() + ": run ALTER EXTENSION pg_jobrunner UPDATE");
    }
    return false;
}

// Puts attempts of a previous incarnation back to pending before anything
// else, retrying until the database lets us (or we are told to stop): the
// extension may not be created yet, be of another version, or the database
// be in read-only mode.
void Dispatcher::recover_at_start() {
    while (!got_sigterm) {
        publish_figures(GetCurrentTimestamp());  // alive, if idle
        RecoverOutput out;
        bool read_only = false;
        std::string error;
        if (db_refresh_read_only(read_only, error) && !read_only && read_only_) {
            read_only_ = false;
            resume(Pause::read_only, "dispatch resumed: the database is writable again");
        }
        if (db_recover(worker_id_, out)) {
            if (out.recovered > 0) {
                ereport(LOG, (errmsg("pg_jobrunner: %d interrupted attempts put back to pending",
                                     out.recovered)));
            }
            recover_again_ = out.skipped > 0;
            return;
        }
        if (out.read_only || read_only) {
            read_only_ = true;
            pause(Pause::read_only, kReadOnlyReason);
        } else if (!out.error.empty()) {
            ereport(WARNING, (errmsg("pg_jobrunner: recovery failed: %s", out.error.c_str())));
        } else {
            (void)schema_usable(out.schema, out.installed_version);
        }
        // Extension missing or recovery not possible yet: idle, then try again.
        pg_call([&] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                            std::max(guc_poll_interval_ms, 1000), PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        });
        absorb_interrupts();
    }
}

// Recovery skipped attempts whose rows another session held: tries again
// until none is left, so that no attempt of a dead worker stays running.
void Dispatcher::recover_left_over(TimestampTz now) {
    if (!recover_again_ || now < recover_again_at_) return;
    RecoverOutput out;
    if (db_recover(worker_id_, out)) {
        if (out.recovered > 0) {
            ereport(LOG, (errmsg("pg_jobrunner: %d interrupted attempts put back to pending",
                                 out.recovered)));
        }
        recover_again_ = out.skipped > 0;
        if (out.recovered > 0) want_claim_ = true;
    }
    recover_again_at_ = now + kLockedRetryUs;
}

// Follows read-only mode: checked every few seconds while dispatching, every
// second while paused by it. Returns whether dispatch is paused.
bool Dispatcher::read_only_paused(TimestampTz now) {
    int64 every = read_only_ ? kReadOnlyPausedCheckUs : kReadOnlyCheckUs;
    if (now - read_only_checked_at_ < every) return read_only_;
    read_only_checked_at_ = now;
    bool on = false;
    std::string error;
    if (!db_refresh_read_only(on, error)) {
        ereport(WARNING,
                (errmsg("pg_jobrunner: could not read the read-only mode: %s", error.c_str())));
        return read_only_;
    }
    if (on && !read_only_) {
        read_only_ = true;
        pause(Pause::read_only, kReadOnlyReason);
    } else if (!on && read_only_) {
        read_only_ = false;
        resume(Pause::read_only, "dispatch resumed: the database is writable again");
    }
    return read_only_;
}

// A transport failure's detail (where the request went, libcurl's words)
// is for administrators: the job row says only what failed. At most one
// line per job name every kDetailLogEveryUs, so an endpoint that is down
// does not flood the log.
void Dispatcher::log_failure_detail(const std::string &job_name, const Outcome &outcome) {
    if (outcome.error_detail.empty()) return;
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz &last = detail_logged_at_[job_name];
    if (last != 0 && now - last < kDetailLogEveryUs) return;
    last = now;
    ereport(LOG, (errmsg("pg_jobrunner: attempt %d of job %s (%s) failed: %s", outcome.attempt,
                         outcome.id.c_str(), job_name.c_str(), outcome.error_detail.c_str())));
}

// A job name's figures (see metrics.hpp), looked up once per name.
JobNameMetrics *Dispatcher::metrics(const std::string &job_name) {
    auto it = metrics_.find(job_name);
    if (it != metrics_.end()) return it->second;
    JobNameMetrics *m = metrics_for(my_slot_index, MyDatabaseId, job_name.data(), job_name.size());
    metrics_.emplace(job_name, m);
    return m;
}

// Moves finished transfers into outcomes, counting each in its job name's
// figures: outcome class, request duration, and commit to request.
void Dispatcher::harvest() {
    if (http_.failed()) throw std::runtime_error("the HTTP thread stopped: out of memory");
    results_.clear();
    http_.take_finished(results_);
    if (results_.empty()) return;
    const std::int64_t now_ms = GetCurrentTimestamp() / 1000;
    std::uint64_t ok = 0, bad = 0;
    for (const HttpResult &r : results_) {
        auto it = held_.find(r.tag);
        if (it == held_.end()) continue;
        const ClaimedJob &job = it->second.job;
        if (job.url) {
            // A Retry-After pauses the host as long as this job obeys it.
            std::optional<std::int64_t> pause = r.retry_after_ms;
            if (pause) pause = std::min(*pause, job.retry_cap_ms);
            destinations_.record(destination_of(*job.url), verdict_of(r), now_ms, pause);
        }
        outcomes_.push_back(outcome_from_result(job, r));
        // An aborted request (cancel_job) is neither an outcome of the
        // endpoint's nor a failure to report: it only gives the slot back.
        const bool aborted = r.status == 0 && r.error == kCanceled;
        if (!aborted) {
            log_failure_detail(job.job_name, outcomes_.back());
            (r.status >= 200 && r.status <= 299 ? ok : bad)++;
        }
        if (JobNameMetrics *m = aborted ? nullptr : metrics(job.job_name)) {
            count_outcome(m, r.status);
            observe(m->duration, static_cast<int64>(r.duration_ms * 1000.0));
            std::int64_t started = it->second.started_us->load(std::memory_order_relaxed);
            if (started != 0 && it->second.due_us != 0)
                observe(m->wait, started - it->second.due_us);
        }
        held_body_bytes_ -= static_cast<std::int64_t>(job.body.size());
        held_.erase(it);
    }
    pg_atomic_fetch_add_u64(&my_slot->completed, ok);
    pg_atomic_fetch_add_u64(&my_slot->failed, bad);
}

// Aborts the requests of attempts whose job cancel_job canceled (the
// endpoint sees the connection close); their outcomes, error "canceled",
// only give the jobs' slots back. Attempts that finished meanwhile are not
// held any more and are skipped.
void Dispatcher::abort_canceled() {
    char ids[kMaxPendingCancels][kJobIdChars];
    int32 attempts[kMaxPendingCancels];
    int n = take_cancels(my_slot, ids, attempts);
    for (int i = 0; i < n; i++) {
        for (const auto &[tag, held] : held_) {
            if (held.job.attempt == attempts[i] && held.job.id == ids[i]) {
                http_.cancel(tag);
                break;
            }
        }
    }
}

// The job names whose destination may not be sent to now.
void Dispatcher::held_back(std::int64_t now_ms, std::vector<std::string> &names) const {
    names.clear();
    for (const auto &[name, host] : destination_of_name_) {
        if (destinations_.blocked(host, now_ms)) names.push_back(name);
    }
}

// Starts an attempt for every claimed job; jobs that cannot be sent become
// failed outcomes right away. due_us[i] is when claimed[i] became due.
void Dispatcher::dispatch(std::vector<ClaimedJob> &claimed,
                          const std::vector<std::int64_t> &due_us) {
    MintContext mint;
    mint.secret = guc_jwt_secret ? guc_jwt_secret : "";
    mint.system_role = guc_system_role ? guc_system_role : "service_role";
    std::uint64_t sent = 0;
    const std::int64_t now_ms = GetCurrentTimestamp() / 1000;
    for (std::size_t i = 0; i < claimed.size(); i++) {
        ClaimedJob &job = claimed[i];
        // A destination that may not be sent to now (circuit open, a probe
        // out, or paused by Retry-After): the job goes back, not counted as
        // an attempt, until it may; its job name is left out of the claims
        // meanwhile.
        const std::string host = job.url ? destination_of(*job.url) : std::string();
        if (job.url) {
            destination_of_name_[job.job_name] = host;
            if (!destinations_.may_send(host, now_ms)) {
                Outcome o = outcome_from_error(job, "its destination is unavailable");
                o.status = kDeferredStatus;
                o.retry_after_ms =
                    std::max<std::int64_t>(destinations_.blocked_until(host, now_ms) - now_ms, 100);
                outcomes_.push_back(std::move(o));
                continue;
            }
        }
        std::uint64_t tag = next_tag_++;
        HttpRequest request;
        if (auto error = build_request(job, mint, tag, request)) {
            // Not sent: if it was to be a half-open destination's probe,
            // the next request may be the probe.
            if (job.url) destinations_.record(host, Verdict::none, now_ms, {});
            count_unsent(metrics(job.job_name));
            outcomes_.push_back(outcome_from_error(job, std::move(*error)));
            continue;
        }
        // The request's start is noted as its token is minted, on the HTTP
        // thread: it may wait for a free slot first.
        auto started = std::make_shared<std::atomic<std::int64_t>>(0);
        request.header_at_start = [mint_header = std::move(request.header_at_start),
                                   started](std::int64_t now_s) {
            started->store(unix_now_us(), std::memory_order_relaxed);
            return mint_header ? mint_header(now_s) : std::string();
        };
        requests_.push_back(std::move(request));
        held_body_bytes_ += static_cast<std::int64_t>(job.body.size());
        held_.emplace(tag,
                      Held{std::move(job), i < due_us.size() ? due_us[i] : 0, std::move(started)});
        sent++;
    }
    http_.submit(requests_);
    pg_atomic_fetch_add_u64(&my_slot->dispatched, sent);
}

// After a failed batch: records outcomes one at a time so that one bad row
// cannot hold the others back (a body jsonb refuses is dropped on a second
// try). What still fails waits in stuck_ and is tried again later.
void Dispatcher::record_one_by_one(std::vector<Outcome> &list) {
    for (Outcome &o : list) {
        std::vector<Outcome> one{o};
        CycleInput in;
        in.worker_id = worker_id_;
        in.outcomes = &one;
        in.next_wakeup = false;
        CycleOutput out;
        bool ok = db_cycle(in, out);
        if (!ok && one[0].response) {
            one[0].response.reset();
            out = CycleOutput();
            ok = db_cycle(in, out);
        }
        if (ok) {
            keep_for_later(one, out.skipped);
            continue;
        }
        ereport(WARNING, (errmsg("pg_jobrunner: could not record attempt %d of job %s yet: %s",
                                 o.attempt, o.id.c_str(), out.error.c_str())));
        stuck_.push_back(std::move(o));
    }
    list.clear();
}

// Outcomes _record skipped because another session held their row (say, an
// endpoint's open transaction that called complete_job) wait in stuck_ and
// go with a later batch: nothing waits for that lock meanwhile.
void Dispatcher::keep_for_later(std::vector<Outcome> &recorded,
                                const std::vector<std::string> &skipped) {
    if (skipped.empty()) return;
    for (Outcome &o : recorded) {
        if (std::find(skipped.begin(), skipped.end(), o.id) != skipped.end())
            stuck_.push_back(std::move(o));
    }
}

// Whether a claim should run now. While a backlog drains, claims wait for a
// quarter of the claim budget to be free, so each transaction carries many
// jobs (and the loop sleeps on the HTTP thread meanwhile); otherwise at once.
bool Dispatcher::ready_to_claim() const {
    int batch = backlog_ && !held_.empty() ? std::max(1, claim_budget() / 4) : 1;
    return want_claim_ && claim_room() >= batch;
}

// One turn of the loop's database side: record, expire, purge, claim.
void Dispatcher::step(TimestampTz now) {
    if (pg_atomic_exchange_u32(&my_slot->wake_pending, 0) != 0) want_claim_ = true;
    if (now >= next_look_) want_claim_ = true;
    if (now < paused_until_) return;
    // Paused by read-only mode: outcomes wait in memory until they can be
    // written; nothing is claimed.
    if (read_only_paused(now)) return;
    recover_left_over(now);
    bool lease_due = now - last_lease_check_ >= kLeaseCheckUs;
    bool purge_due = now - last_purge_ >= kPurgeEveryUs;
    // Paused for another version, the extension reports so itself; for a
    // copied queue, the claim checks the origin first: both get a look.
    bool claim = ready_to_claim() && !read_only_;
    if (!stuck_.empty() && now >= stuck_retry_at_) {
        outcomes_.insert(outcomes_.end(), std::make_move_iterator(stuck_.begin()),
                         std::make_move_iterator(stuck_.end()));
        stuck_.clear();
        stuck_retry_at_ = now + kLockedRetryUs;
    }
    if (outcomes_.empty() && !claim && !(want_claim_ && (lease_due || purge_due))) return;

    CycleInput in;
    in.worker_id = worker_id_;
    in.outcomes = &outcomes_;
    in.claim_limit = claim ? claim_room() : 0;
    in.claim_bytes = kMaxHeldBodyBytes - held_body_bytes_;
    if (in.claim_bytes <= 0) in.claim_limit = 0;
    in.expire_leases = lease_due;
    in.purge = purge_due;
    in.retention_s = guc_retention_s;
    in.failed_retention_s = guc_failed_retention_s;
    in.next_wakeup = !claim || !backlog_;
    held_back(now / 1000, in.held_back);
    CycleOutput out;
    if (!db_cycle(in, out)) {
        if (out.sqlstate == "25006") {  // read_only_sql_transaction: set meanwhile
            read_only_checked_at_ = 0;
            return;
        }
        ereport(WARNING,
                (errmsg("pg_jobrunner: worker transaction failed: %s", out.error.c_str())));
        // One outcome the batch could not take (say, a trigger a user put
        // on job refuses it) is recorded on its own, and the others with it:
        // when that settles them all, the next turn goes on at once.
        // Otherwise the database itself is failing: pause before trying.
        std::size_t stuck_before = stuck_.size();
        bool had_outcomes = !outcomes_.empty();
        if (had_outcomes) record_one_by_one(outcomes_);
        if (had_outcomes && stuck_.size() == stuck_before) {
            want_claim_ = true;
            return;
        }
        next_look_ = now + kErrorPauseUs;
        paused_until_ = next_look_;
        want_claim_ = false;
        return;
    }
    if (out.read_only) {
        read_only_checked_at_ = 0;  // look at once: the next turn pauses
        return;
    }
    if (!schema_usable(out.schema, out.installed_version)) {
        // Extension absent or of another version: nothing was done; what
        // was answered meanwhile waits in memory.
        want_claim_ = false;
        next_look_ = now + static_cast<int64>(guc_poll_interval_ms) * 1000;
        return;
    }
    if (!out.foreign_origin.empty()) {
        pause(Pause::origin, out.foreign_origin);
    } else if (claim) {
        resume(Pause::origin,
               "dispatch resumed: resume_dispatch() confirmed this database dispatches");
    }
    if (lease_due) last_lease_check_ = now;
    if (purge_due) last_purge_ = now;
    bool recorded = !outcomes_.empty();
    keep_for_later(outcomes_, out.skipped);
    outcomes_.clear();
    int got = static_cast<int>(out.claimed.size() + out.refused.size());
    // Every claim is an attempt; a refused one (its body may not be sent)
    // never leaves.
    for (const ClaimedJob &job : out.claimed) count_attempt(metrics(job.job_name), job.attempt);
    for (std::size_t i = 0; i < out.refused.size(); i++) {
        JobNameMetrics *m = metrics(out.refused_job_names[i]);
        count_attempt(m, out.refused[i].attempt);
        count_unsent(m);
        outcomes_.push_back(std::move(out.refused[i]));
    }
    dispatch(out.claimed, out.claimed_due_us);
    // A full claim suggests more is due; recorded outcomes free slots.
    if (claim) backlog_ = got == in.claim_limit;
    want_claim_ = (claim && backlog_) || (recorded && !claim) || !outcomes_.empty();
    if (pause_cause_ == Pause::origin) want_claim_ = false;  // a commit (resume_dispatch) wakes it
    int64 look_in_us = static_cast<int64>(guc_poll_interval_ms) * 1000;
    if (out.next_wakeup_ms >= 0)
        look_in_us = std::min<int64>(look_in_us, out.next_wakeup_ms * 1000);
    next_look_ = now + look_in_us;
}

// Sleeps until the latch, finished requests or the next look is due.
void Dispatcher::wait(TimestampTz now) {
    long timeout_ms;
    if (now < paused_until_) {
        timeout_ms = (paused_until_ - now + 999) / 1000;  // after a failure: pause
    } else if (!paused_.empty()) {
        timeout_ms = kReadOnlyPausedCheckUs / 1000;  // paused: look again every second
    } else if (!outcomes_.empty() || (ready_to_claim() && paused_.empty())) {
        timeout_ms = 0;
    } else if (want_claim_) {
        timeout_ms = 1;  // waiting for slots while a backlog drains: look again soon
    } else {
        timeout_ms = std::max<int64>(0, (next_look_ - now + 999) / 1000);
    }
    if (!stuck_.empty()) {
        timeout_ms =
            std::min<long>(timeout_ms, std::max<int64>(0, (stuck_retry_at_ - now + 999) / 1000));
    }
    if (recover_again_) {
        timeout_ms =
            std::min<long>(timeout_ms, std::max<int64>(0, (recover_again_at_ - now + 999) / 1000));
    }
    // Read-only mode is followed even when nothing else happens.
    int64 check_every = read_only_ ? kReadOnlyPausedCheckUs : kReadOnlyCheckUs;
    timeout_ms = std::min<long>(
        timeout_ms, std::max<int64>(0, (read_only_checked_at_ + check_every - now + 999) / 1000));
    WaitEvent event;
    pg_call([&] {
        int n = WaitEventSetWait(events_, timeout_ms, &event, 1, PG_WAIT_EXTENSION);
        if (n > 0 && (event.events & WL_LATCH_SET)) ResetLatch(MyLatch);
    });
    absorb_interrupts();
}

// Updates what worker_status() shows.
void Dispatcher::publish_figures(TimestampTz now) {
    std::vector<Destinations::View> troubled = destinations_.troubled(now / 1000);
    int shown = std::min<int>(static_cast<int>(troubled.size()), kMaxShownDestinations);
    SpinLockAcquire(&my_slot->mutex);
    my_slot->last_loop_at = now;
    for (int i = 0; i < shown; i++) {
        ShownDestination &d = my_slot->destinations[i];
        strlcpy(d.host, troubled[i].host.c_str(), sizeof(d.host));
        d.state = static_cast<int>(troubled[i].state);
        d.consecutive_failures = troubled[i].consecutive_failures;
        d.until = troubled[i].until_ms * 1000;
    }
    my_slot->destination_count = shown;
    SpinLockRelease(&my_slot->mutex);
    pg_atomic_write_u32(&my_slot->in_flight, static_cast<uint32>(http_.active()));
}

// Records what has finished, drops what is in flight, and hands those jobs
// back to pending so no job is left running.
void Dispatcher::shutdown() {
    harvest();
    http_.stop();
    held_.clear();
    if (!outcomes_.empty()) {
        CycleInput in;
        in.worker_id = worker_id_;
        in.outcomes = &outcomes_;
        CycleOutput out;
        (void)db_cycle(in, out);
    }
    RecoverOutput out;
    if (db_recover(0, out) && out.recovered > 0) {
        ereport(LOG, (errmsg("pg_jobrunner: %d in-flight attempts put back to pending at shutdown",
                             out.recovered)));
    }
}

void Dispatcher::run() {
    if (!http_.init_error().empty()) {
        throw std::runtime_error("HTTP engine unusable: " + http_.init_error());
    }
    pg_call([&] {
        events_ = CreateWaitEventSet(TopMemoryContext, 3);
        AddWaitEventToSet(events_, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(events_, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(events_, WL_SOCKET_READABLE, http_.fd(), nullptr, nullptr);
    });
    recover_at_start();
    while (!got_sigterm) {
        TimestampTz now = GetCurrentTimestamp();
        publish_figures(now);
        http_.set_max_active(static_cast<std::size_t>(guc_max_in_flight));
        abort_canceled();
        harvest();
        step(now);
        harvest();
        wait(GetCurrentTimestamp());
    }
    shutdown();
}

}  // namespace

}  // namespace jobrunner

using namespace jobrunner;

void jobrunner_worker_main(Datum main_arg) {
    // The launcher chose the slot (main_arg) and the database (bgw_extra).
    DispatcherTarget target;
    memcpy(&target, MyBgworkerEntry->bgw_extra, sizeof(target));
    my_slot_index = DatumGetInt32(main_arg);
    my_slot = &shared_state()->slots[my_slot_index];
    running_in_dispatcher = true;
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    // SIGTERM: finish the current step, hand in-flight jobs back, exit.
    pqsignal(SIGTERM, handle_sigterm);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(target.database_oid, InvalidOid, 0);
    SetConfigOption("application_name", "pg_jobrunner worker", PGC_SUSET, PGC_S_OVERRIDE);
    // The worker is a superuser: no name it resolves may lead through a
    // schema someone else can write ("$user", public), for its whole life.
    SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
    pgstat_report_appname("pg_jobrunner worker");
    // Claims and completions must survive a crash the moment they commit;
    // a hook must not hold the worker forever on a row lock.
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
    SetConfigOption("lock_timeout", "1s", PGC_SUSET, PGC_S_OVERRIDE);
    // Its statements are short and planned for a few rows at a time; JIT
    // would compile (and load LLVM) for nothing when tables grow large.
    SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
    // The claim relies on READ COMMITTED row re-checks, whatever the default.
    SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
    raise_open_files_limit();
    publish();
    ereport(LOG, (errmsg("pg_jobrunner worker started for database \"%s\"", target.database_name)));

    CppFailure failure;
    cpp_try(failure, [] {
        Dispatcher dispatcher;
        dispatcher.run();
    });
    if (failure.failed) raise_failure(failure);
    proc_exit(1);  // the launcher starts it again while its database is listed
}
