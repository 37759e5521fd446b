/*
 * http_thread.hpp — the HTTP engine on a thread of its own.
 *
 * The worker's database work (claiming, recording) and the network work
 * (sending, parsing responses) then overlap instead of taking turns: while
 * one batch is being recorded, the next is already on the wire. The thread
 * runs only this file and the engine — plain C++, never a Postgres call —
 * with every signal blocked, so Postgres signal handling stays on the main
 * thread. The two sides meet through mutex-guarded queues and two eventfds:
 * one wakes the HTTP thread for new requests, the other (fd()) wakes the
 * worker for finished ones.
 *
 * Pure C++: no Postgres headers. No method throws except std::bad_alloc
 * and std::system_error (thread creation).
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include "core/http_engine.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace jobrunner {

class HttpThread {
public:
    HttpThread(std::size_t max_body_bytes, std::string user_agent);
    ~HttpThread();  // aborts what is in flight and joins the thread
    HttpThread(const HttpThread &) = delete;
    HttpThread &operator=(const HttpThread &) = delete;

    // Empty when usable; otherwise why not.
    const std::string &init_error() const { return init_error_; }

    // Readable while finished results wait in take_finished().
    int fd() const { return done_fd_; }

    // Hands requests to the HTTP thread (moved out of `batch`). At most
    // max_active() transfers run at once; the rest wait, first in first out,
    // and start as running ones finish.
    void submit(std::vector<HttpRequest> &batch);

    void set_max_active(std::size_t n);
    // Transfers running now (at most max_active()), not counting waiting ones.
    std::size_t active() const { return active_.load(); }

    // Moves finished transfers into out (appends) and re-arms fd().
    void take_finished(std::vector<HttpResult> &out);

    // Ends the transfer with this tag, running or waiting for a slot: its
    // result (error kCanceled) comes through take_finished(). Nothing
    // happens when it has finished already.
    void cancel(std::uint64_t tag);

    // Drops every transfer without results and stops the thread.
    void stop();

    // True once the thread has died (out of memory); the worker restarts.
    bool failed() const { return failed_.load(); }

private:
    void run();

    HttpEngine engine_;
    std::string init_error_;
    int wake_fd_ = -1;  // main -> HTTP thread: new requests or stop
    int done_fd_ = -1;  // HTTP thread -> main: results ready
    std::mutex mutex_;
    std::vector<HttpRequest> incoming_;   // guarded by mutex_
    std::vector<std::uint64_t> cancels_;  // guarded by mutex_
    std::vector<HttpResult> finished_;    // guarded by mutex_
    std::deque<HttpRequest> waiting_;     // HTTP thread only: not started yet
    std::atomic<std::size_t> max_active_{256};
    std::atomic<std::size_t> active_{0};
    std::atomic<bool> stopping_{false};
    std::atomic<bool> failed_{false};
    std::thread thread_;
};

}  // namespace jobrunner
