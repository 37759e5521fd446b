/*
 * engine_driver.hpp — drives an HttpEngine the way the worker does, for the
 * tests that send real requests through it: wait for fd() to become readable
 * or next_timeout_ms() to pass, then poll(). Every wait has a deadline;
 * nothing sleeps a fixed time.
 */
#pragma once

#include "core/http_engine.hpp"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace jobrunner {
namespace test_support {

constexpr const char *kUserAgent = "pg_jobrunner/test";

// A proxy from the environment would take the loopback requests elsewhere.
inline void unset_proxies() {
    for (const char *v :
         {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
        unsetenv(v);
    }
}

// A POST of body to url with short timeouts.
inline HttpRequest post(const std::string &url, std::uint64_t tag, std::string body = "{}") {
    HttpRequest r;
    r.tag = tag;
    r.url = url;
    r.body = std::move(body);
    r.headers = {"Content-Type: application/json"};
    r.timeout_ms = 5000;
    r.connect_timeout_ms = 2000;
    return r;
}

// Drives the engine like the worker: sleep on fd() or the timer, then poll().
// Returns once done() holds or the deadline passes; counts loop iterations.
// A condition on the server's state needs a slice: the engine has no reason
// to wake when only the server made progress.
struct Driver {
    using milliseconds = std::chrono::milliseconds;

    explicit Driver(HttpEngine &e) : engine(e) {}

    HttpEngine &engine;
    std::vector<HttpResult> results;
    long iterations = 0;

    bool run_until(const std::function<bool()> &done, milliseconds budget = milliseconds(5000),
                   long slice_ms = -1) {
        using Clock = std::chrono::steady_clock;
        const auto deadline = Clock::now() + budget;
        while (!done()) {
            const auto now = Clock::now();
            if (now >= deadline) return false;
            long left = std::chrono::duration_cast<milliseconds>(deadline - now).count() + 1;
            long t = engine.next_timeout_ms();
            if (slice_ms >= 0) left = std::min(left, slice_ms);
            int wait = static_cast<int>(t < 0 ? left : std::min(t, left));
            pollfd p{engine.fd(), POLLIN, 0};
            ::poll(&p, 1, wait);
            engine.poll();
            engine.take_finished(results);
            ++iterations;
        }
        return true;
    }

    // Waits for n results in total.
    bool wait_results(std::size_t n, milliseconds budget = milliseconds(5000)) {
        return run_until([&] { return results.size() >= n; }, budget);
    }
};

}  // namespace test_support
}  // namespace jobrunner
