/*
 * destinations.hpp — protection of each destination host: a circuit breaker
 * (after a run of failures, stop sending to the host and probe it with one
 * request at growing intervals; close on a success) and shared back-pressure
 * (a 429 or 503 with Retry-After pauses every request to that host, of every
 * job name and user, until then). Other hosts are never affected.
 *
 * Pure C++: no Postgres headers. Times are milliseconds on one clock the
 * caller chooses.
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include "core/http_engine.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace jobrunner {

struct DestinationPolicy {
    int failures_to_open = 5;             // consecutive failures that open the circuit
    std::int64_t first_open_ms = 1000;    // the first wait before a probe
    std::int64_t max_open_ms = 60000;     // the wait doubles up to this
    std::int64_t max_pause_ms = 3600000;  // the longest Retry-After obeyed for a host
};

enum class DestinationState { closed, open, half_open, paused };

// What one request's result says about its host.
enum class Verdict {
    reachable,  // an answer (2xx, 3xx, 4xx, or a 429/503 without Retry-After)
    failure,    // no answer (connection, TLS, timeout) or a 5xx
    throttled,  // a 429 or 503 with Retry-After: back off, as asked
    none,       // says nothing about the host (the request was canceled)
};
Verdict verdict_of(const HttpResult &result);

// "host:port" of an http(s) URL (the port its scheme implies when none is
// given), lowercase; "" when the URL has no host.
std::string destination_of(std::string_view url);

class Destinations {
public:
    explicit Destinations(DestinationPolicy policy = {}) : policy_(policy) {}

    // Whether a request to host may start now. An open circuit whose wait
    // is over lets exactly one request through (the probe) and is half-open
    // until its result comes.
    bool may_send(const std::string &host, std::int64_t now_ms);

    // The result of a request to host.
    void record(const std::string &host, Verdict verdict, std::int64_t now_ms,
                std::optional<std::int64_t> retry_after_ms);

    // When host may be sent to again: now_ms when it may now.
    std::int64_t blocked_until(const std::string &host, std::int64_t now_ms) const;

    // Whether nothing may be sent to host now (not even a probe).
    bool blocked(const std::string &host, std::int64_t now_ms) const {
        return blocked_until(host, now_ms) > now_ms;
    }

    struct View {
        std::string host;
        DestinationState state = DestinationState::closed;
        int consecutive_failures = 0;
        std::int64_t until_ms = 0;  // open: next probe; paused: end of the pause
    };
    // Every host that is not simply closed and healthy.
    std::vector<View> troubled(std::int64_t now_ms) const;

private:
    struct Host {
        int failures = 0;          // consecutive
        std::int64_t open_ms = 0;  // the current wait between probes
        std::int64_t open_until = 0;
        std::int64_t paused_until = 0;
        bool open = false;
        bool probing = false;  // half-open: the probe is on the wire
    };
    DestinationState state_of(const Host &h, std::int64_t now_ms) const;

    DestinationPolicy policy_;
    std::unordered_map<std::string, Host> hosts_;
};

}  // namespace jobrunner
