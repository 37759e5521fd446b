/*
 * backoff.cpp — when a failed attempt is tried again: capped exponential
 * backoff with equal jitter, or the server's Retry-After (which libcurl
 * parses, see http_engine.cpp).
 *
 * Pure C++: no Postgres headers. Every computation saturates instead of
 * overflowing, whatever the configuration or the server sends.
 */
#include "core/backoff.hpp"

namespace jobrunner {

namespace {

// base * 2^(attempt-1), clamped to cap without ever overflowing.
std::int64_t capped_exponential(int attempt, std::int64_t base_ms, std::int64_t cap_ms) {
    const int shift = attempt - 1;
    if (base_ms == 0) return 0;
    if (shift >= 63 || base_ms > (cap_ms >> shift)) return cap_ms;
    return base_ms << shift;
}

// Equal jitter: half of d is kept, the other half is random, so the result
// lies in [ceil(d/2), d] and retries from many jobs spread out.
std::int64_t equal_jitter(std::int64_t d, std::uint64_t random) {
    const std::int64_t fixed = d - d / 2;
    const auto span = static_cast<std::uint64_t>(d / 2) + 1;
    return fixed + static_cast<std::int64_t>(random % span);
}

}  // namespace

// The worker reschedules a failed attempt; the delay must grow, stay
// bounded, and not synchronize many jobs' retries.
std::int64_t retry_delay_ms(int attempt, std::int64_t base_ms, std::int64_t cap_ms,
                            std::optional<std::int64_t> retry_after_ms, std::uint64_t random) {
    if (cap_ms < 0) cap_ms = 0;
    if (retry_after_ms) {
        if (*retry_after_ms <= 0) return 0;
        return *retry_after_ms < cap_ms ? *retry_after_ms : cap_ms;
    }
    if (attempt < 1) attempt = 1;
    if (base_ms < 0) base_ms = 0;
    return equal_jitter(capped_exponential(attempt, base_ms, cap_ms), random);
}

}  // namespace jobrunner
