/*
 * http_thread.cpp — the HTTP engine's own thread and its two eventfds.
 */
#include "core/http_thread.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace jobrunner {
namespace {

// Adds one to an eventfd counter, making it readable.
void signal_fd(int fd) {
    std::uint64_t one = 1;
    while (::write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

// Resets an eventfd counter to zero (non-blocking).
void drain_fd(int fd) {
    std::uint64_t value;
    while (::read(fd, &value, sizeof(value)) < 0 && errno == EINTR) {
    }
}

}  // namespace

HttpThread::HttpThread(std::size_t max_body_bytes, std::string user_agent)
    : engine_(max_body_bytes, std::move(user_agent)) {
    init_error_ = engine_.init_error();
    if (!init_error_.empty()) return;
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    done_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0 || done_fd_ < 0) {
        init_error_ = std::string("eventfd: ") + std::strerror(errno);
        return;
    }
    // The thread inherits this mask: every signal stays with the main thread.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
        thread_ = std::thread([this] {
            try {
                run();
            } catch (...) {  // out of memory: report, never terminate the process
                failed_.store(true);
                signal_fd(done_fd_);
            }
        });
    } catch (const std::system_error &e) {
        init_error_ = std::string("cannot start the HTTP thread: ") + e.what();
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

HttpThread::~HttpThread() {
    stop();
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (done_fd_ >= 0) ::close(done_fd_);
}

void HttpThread::stop() {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    signal_fd(wake_fd_);
    thread_.join();
}

void HttpThread::submit(std::vector<HttpRequest> &batch) {
    if (batch.empty()) return;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (HttpRequest &r : batch) incoming_.push_back(std::move(r));
    }
    batch.clear();
    signal_fd(wake_fd_);
}

void HttpThread::cancel(std::uint64_t tag) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        cancels_.push_back(tag);
    }
    signal_fd(wake_fd_);
}

void HttpThread::set_max_active(std::size_t n) {
    n = std::max<std::size_t>(1, n);
    if (max_active_.exchange(n) != n) signal_fd(wake_fd_);  // a raised cap starts waiting ones
}

void HttpThread::take_finished(std::vector<HttpResult> &out) {
    drain_fd(done_fd_);
    std::lock_guard<std::mutex> lock(mutex_);
    for (HttpResult &r : finished_) out.push_back(std::move(r));
    finished_.clear();
}

// The thread's loop: wait for sockets, the engine's timer or new requests;
// drive the engine; publish what finished.
void HttpThread::run() {
    std::vector<HttpRequest> taken;
    std::vector<std::uint64_t> cancels;
    std::vector<HttpResult> done;
    std::size_t connections_for = 0;  // the cap the connection cache was sized for
    while (!stopping_.load()) {
        long timeout = engine_.next_timeout_ms();
        pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {engine_.fd(), POLLIN, 0}};
        ::poll(fds, 2, timeout < 0 ? -1 : static_cast<int>(std::min(timeout, 60000L)));
        if (fds[0].revents & POLLIN) {
            drain_fd(wake_fd_);
            std::lock_guard<std::mutex> lock(mutex_);
            taken.swap(incoming_);
            cancels.swap(cancels_);
        }
        for (HttpRequest &r : taken) waiting_.push_back(std::move(r));
        taken.clear();
        // A canceled request still waiting for a slot never starts.
        for (std::uint64_t tag : cancels) {
            auto it = std::find_if(waiting_.begin(), waiting_.end(),
                                   [tag](const HttpRequest &r) { return r.tag == tag; });
            if (it == waiting_.end()) {
                engine_.cancel(tag);
                continue;
            }
            HttpResult r;
            r.tag = tag;
            r.error = r.error_detail = kCanceled;
            waiting_.erase(it);
            done.push_back(std::move(r));
        }
        cancels.clear();
        // Finished transfers free slots for waiting ones, which start in the
        // same turn. Results are handed over on every pass, not once the
        // waiting ones have all started: the worker records and claims while
        // the rest are on the wire, instead of both sides taking turns.
        for (;;) {
            std::size_t cap = max_active_.load();
            if (cap != connections_for) {
                engine_.set_max_connections(cap);
                connections_for = cap;
            }
            while (!waiting_.empty() && engine_.in_flight() < cap) {
                engine_.submit(std::move(waiting_.front()));
                waiting_.pop_front();
            }
            engine_.poll();
            engine_.take_finished(done);
            active_.store(engine_.in_flight());
            if (done.empty()) break;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                for (HttpResult &r : done) finished_.push_back(std::move(r));
            }
            done.clear();
            signal_fd(done_fd_);
            if (waiting_.empty()) break;
        }
    }
    waiting_.clear();
    engine_.abort_all();
}

}  // namespace jobrunner
