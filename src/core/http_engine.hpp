/*
 * http_engine.hpp — many HTTP POSTs in flight over one libcurl multi handle.
 *
 * The engine owns an epoll descriptor holding every socket libcurl wants
 * watched. Whoever drives it (the HTTP thread, src/core/http_thread.hpp)
 * waits on that single descriptor, so requests progress without busy loops
 * or per-loop fd registration.
 *
 * Pure C++: no Postgres headers. No method throws except std::bad_alloc.
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace jobrunner {

struct HttpRequest {
    std::uint64_t tag = 0;  // caller's handle, returned in the result
    std::string url;        // validated by the caller
    std::string body;
    std::vector<std::string> headers;  // "Name: value", validated by the caller
    long timeout_ms = 300000;          // whole transfer
    long connect_timeout_ms = 10000;
    // A header computed as the transfer starts rather than when the request
    // is built: a request may wait for a free slot, and a token's lifetime
    // must count from when it is sent. Gets the Unix time in seconds. When it
    // is "Authorization: Bearer <token>", the token is kept out of the result
    // (see HttpResult::body) and wiped when the transfer is freed.
    std::function<std::string(std::int64_t now_s)> header_at_start;
};

struct HttpResult {
    std::uint64_t tag = 0;
    long status = 0;  // HTTP status; 0 when no response arrived
    // Why no response arrived, in words a job's user may read ("connection
    // refused", "timed out after 300 ms"): never a host, address, port or
    // URL. Empty when a response arrived.
    std::string error;
    // The same failure in libcurl's own words, which name the host and port:
    // for the server log only, never for a stored row.
    std::string error_detail;
    // At most max_body_bytes. Every copy of the token header_at_start minted
    // is replaced with "[token removed]", so an endpoint that echoes its
    // Authorization header cannot get the token stored.
    std::string body;
    bool body_truncated = false;
    // When the final response's Retry-After says to come back, in
    // milliseconds from its arrival: libcurl reads delay-seconds and all
    // three HTTP-date formats. nullopt when absent, not understood, zero or
    // in the past.
    std::optional<std::int64_t> retry_after_ms;
    double duration_ms = 0;
};

// The error of a transfer ended by cancel().
inline constexpr const char *kCanceled = "canceled";

class HttpEngine {
public:
    // max_body_bytes: response bytes kept per request; the rest is discarded
    // inside the write callback. user_agent: User-Agent header value.
    HttpEngine(std::size_t max_body_bytes, std::string user_agent);
    ~HttpEngine();
    HttpEngine(const HttpEngine &) = delete;
    HttpEngine &operator=(const HttpEngine &) = delete;

    // Empty when the engine is usable; otherwise why not.
    const std::string &init_error() const;

    // Descriptor that becomes readable when sockets need service.
    int fd() const;

    // Starts a request. Only http and https; redirects are never followed;
    // TLS peers are verified; connect and total timeouts always apply.
    void submit(HttpRequest request);

    // Services ready sockets and expired timers without blocking.
    void poll();

    // Milliseconds until poll() must run even without socket activity;
    // -1 when no timer is pending.
    long next_timeout_ms() const;

    // Moves finished transfers into out (appends).
    void take_finished(std::vector<HttpResult> &out);

    std::size_t in_flight() const;

    // Keeps up to n idle connections open between bursts (libcurl's default
    // follows the number of running transfers, so a queue that drains
    // closes most of them, and the next burst pays for new connections).
    void set_max_connections(std::size_t n);

    // Ends the transfer with this tag at once (its connection closes, so
    // the endpoint sees the request go away); its result, status 0 and error
    // kCanceled, comes through take_finished(). False when no transfer has
    // the tag (it finished already).
    bool cancel(std::uint64_t tag);

    // Drops every transfer without results (used at shutdown).
    void abort_all();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace jobrunner
