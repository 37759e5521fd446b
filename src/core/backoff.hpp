/*
 * backoff.hpp — when a failed attempt is tried again.
 *
 * Pure C++: no Postgres headers.
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include <cstdint>
#include <optional>

namespace jobrunner {

// Delay before the retry that follows failed attempt number `attempt`
// (1-based), in milliseconds. Exponential: base * 2^(attempt-1), capped at
// cap_ms, with "equal jitter": the result lies in [d/2, d] where d is the
// capped exponential, so the schedule still grows while spreading retries.
// `random` is any 64-bit value (the caller supplies entropy, tests fix it).
// A server-given Retry-After (ms) replaces the computed delay, still capped
// (the HTTP engine reads it, see HttpResult::retry_after_ms).
std::int64_t retry_delay_ms(int attempt, std::int64_t base_ms, std::int64_t cap_ms,
                            std::optional<std::int64_t> retry_after_ms, std::uint64_t random);

}  // namespace jobrunner
