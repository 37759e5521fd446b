/*
 * dispatch.hpp — from a claimed job to an HTTP request, and from an HTTP
 * result to the outcome written back to the job row.
 *
 * Pure C++: no Postgres headers.
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
#include <vector>

namespace jobrunner {

// A job the worker claimed: everything needed to deliver one attempt.
struct ClaimedJob {
    std::string id;
    std::string job_name;
    std::optional<std::string> user_id;
    std::optional<std::string> user_role;
    std::optional<std::string> user_email;
    int attempt = 0;
    std::string body;                  // JSON text
    std::optional<std::string> url;    // nullopt: no url and no base_url
    std::vector<std::string> headers;  // job_config headers, "Name: value"
    std::int64_t timeout_ms = 300000;
    // The W3C trace the job was queued in (validated at enqueue), if any.
    std::optional<std::string> traceparent;
    std::optional<std::string> tracestate;
    // The longest Retry-After obeyed (job_config.retry_backoff_max), for
    // the job and for the pause of its destination.
    std::int64_t retry_cap_ms = 3600000;
};

// The status of an outcome whose attempt was never sent (its destination
// may not be sent to now): the job goes back to pending for retry_after_ms,
// the attempt not counted.
constexpr int kDeferredStatus = -1;

// What an attempt came to, as the worker records it.
struct Outcome {
    std::string id;
    int attempt = 0;
    int status = 0;     // HTTP status; 0 when none
    std::string error;  // why it failed, as stored for the job's user; empty on 2xx
    // A transport failure in libcurl's words (names the endpoint's host and
    // port): for the server log, never stored where the job's user reads.
    std::string error_detail;
    // A 2xx body, whole: stored as the job's response if jsonb takes it.
    std::optional<std::string> response;
    double duration_ms = 0;
    std::optional<std::int64_t> retry_after_ms;
};

// Everything minting needs besides the job.
struct MintContext {
    std::string_view secret;
    std::string_view system_role;
};

// Builds the POST for one attempt, with a fresh token for the job's user.
// Returns an error message instead when the job must not be sent (no or bad
// URL, unsafe header, unusable secret); the caller records it as a failure.
std::optional<std::string> build_request(const ClaimedJob &job, const MintContext &mint,
                                         std::uint64_t tag, HttpRequest &out);

// Turns an HTTP result into the outcome to record; a 429 or 503 keeps the
// result's Retry-After (the engine measured it from the response's arrival).
Outcome outcome_from_result(const ClaimedJob &job, const HttpResult &result);

// An outcome for an attempt that never left (see build_request).
Outcome outcome_from_error(const ClaimedJob &job, std::string error);

// Valid UTF-8 without NUL, at most max_bytes (cut at a character boundary):
// safe to store in a text column whatever the endpoint sent.
std::string sanitize_text(std::string_view bytes, std::size_t max_bytes);

}  // namespace jobrunner
