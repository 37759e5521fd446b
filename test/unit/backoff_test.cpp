/*
 * backoff_test.cpp — GoogleTest cases for src/core/backoff.cpp: jittered
 * exponential schedule, caps, overflow, Retry-After override.
 */
#include "core/backoff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <vector>

namespace jobrunner {
namespace {

constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

// A spread of "random" inputs, including the extremes.
std::vector<std::uint64_t> sample_randoms() {
    std::vector<std::uint64_t> r = {0, 1, 2, 999, 1000, 12345, 1ull << 32, kU64Max - 1, kU64Max};
    std::mt19937_64 rng(1234);
    for (int i = 0; i < 200; ++i) r.push_back(rng());
    return r;
}

// Asserts the equal-jitter contract: ceil(d/2) <= delay <= d.
void expect_within_jitter(std::int64_t delay, std::int64_t d) {
    EXPECT_GE(delay, d - d / 2) << "d = " << d;
    EXPECT_LE(delay, d) << "d = " << d;
}

// --- retry_delay_ms ------------------------------------------------------

TEST(Backoff, ScheduleBoundsForAttempts1To10) {
    const std::int64_t base = 1000;
    for (int attempt = 1; attempt <= 10; ++attempt) {
        const std::int64_t d = base << (attempt - 1);
        for (const auto r : sample_randoms()) {
            expect_within_jitter(retry_delay_ms(attempt, base, 3600000, std::nullopt, r), d);
        }
    }
}

TEST(Backoff, JitterReachesBothEnds) {
    // d = 8000 at attempt 4: random 0 gives the floor, d/2 gives the top.
    EXPECT_EQ(retry_delay_ms(4, 1000, 3600000, std::nullopt, 0), 4000);
    EXPECT_EQ(retry_delay_ms(4, 1000, 3600000, std::nullopt, 4000), 8000);
    EXPECT_EQ(retry_delay_ms(4, 1000, 3600000, std::nullopt, 4001), 4000);
    // Odd d: the lower bound rounds up, so the delay never drops below d/2.
    EXPECT_EQ(retry_delay_ms(1, 5, 1000, std::nullopt, 0), 3);
    EXPECT_EQ(retry_delay_ms(1, 5, 1000, std::nullopt, 2), 5);
}

TEST(Backoff, JitterActuallyVaries) {
    std::set<std::int64_t> seen;
    for (const auto r : sample_randoms())
        seen.insert(retry_delay_ms(6, 1000, 3600000, std::nullopt, r));
    EXPECT_GT(seen.size(), 50u);
}

TEST(Backoff, ScheduleNeverShrinks) {
    // Until the cap is reached (500 * 2^10 < 600000), the worst case for
    // growth — attempt n at its top, attempt n+1 at its bottom — still grows.
    const auto randoms = sample_randoms();
    for (int attempt = 1; attempt <= 10; ++attempt) {
        std::int64_t top = 0, bottom_next = kI64Max;
        for (const auto r : randoms) {
            top = std::max(top, retry_delay_ms(attempt, 500, 600000, std::nullopt, r));
            bottom_next =
                std::min(bottom_next, retry_delay_ms(attempt + 1, 500, 600000, std::nullopt, r));
        }
        EXPECT_LE(top, bottom_next) << "attempt " << attempt;
        EXPECT_GT(top, 0);
    }
}

TEST(Backoff, CapBoundsTheDelay) {
    const std::int64_t cap = 5000;
    for (const auto r : sample_randoms()) {
        expect_within_jitter(retry_delay_ms(3, 1000, cap, std::nullopt, r), 4000);
        expect_within_jitter(retry_delay_ms(4, 1000, cap, std::nullopt, r), cap);
        expect_within_jitter(retry_delay_ms(30, 1000, cap, std::nullopt, r), cap);
    }
    // A base above the cap is capped from the first attempt on.
    EXPECT_EQ(retry_delay_ms(1, 10000, cap, std::nullopt, cap / 2), cap);
}

TEST(Backoff, NoOverflowAtHugeAttemptsAndBases) {
    for (const auto r : sample_randoms()) {
        expect_within_jitter(retry_delay_ms(100, 1000, 86400000, std::nullopt, r), 86400000);
        expect_within_jitter(retry_delay_ms(INT_MAX, 1000, 86400000, std::nullopt, r), 86400000);
        expect_within_jitter(retry_delay_ms(64, 1, kI64Max, std::nullopt, r), kI64Max);
        expect_within_jitter(retry_delay_ms(63, 1, kI64Max, std::nullopt, r),
                             std::int64_t{1} << 62);
        expect_within_jitter(retry_delay_ms(2, kI64Max / 2 + 1, kI64Max, std::nullopt, r), kI64Max);
        expect_within_jitter(retry_delay_ms(100, kI64Max, kI64Max, std::nullopt, r), kI64Max);
    }
}

TEST(Backoff, AttemptBelowOneCountsAsOne) {
    for (const auto r : sample_randoms()) {
        const auto first = retry_delay_ms(1, 1000, 60000, std::nullopt, r);
        EXPECT_EQ(retry_delay_ms(0, 1000, 60000, std::nullopt, r), first);
        EXPECT_EQ(retry_delay_ms(-5, 1000, 60000, std::nullopt, r), first);
        EXPECT_EQ(retry_delay_ms(INT_MIN, 1000, 60000, std::nullopt, r), first);
    }
}

TEST(Backoff, ZeroOrNegativeInputsGiveZeroDelay) {
    for (const auto r : sample_randoms()) {
        EXPECT_EQ(retry_delay_ms(3, 0, 60000, std::nullopt, r), 0);
        EXPECT_EQ(retry_delay_ms(3, -1000, 60000, std::nullopt, r), 0);
        EXPECT_EQ(retry_delay_ms(3, 1000, 0, std::nullopt, r), 0);
        EXPECT_EQ(retry_delay_ms(3, 1000, -1, std::nullopt, r), 0);
        EXPECT_EQ(retry_delay_ms(3, 1000, INT64_MIN, std::nullopt, r), 0);
    }
}

TEST(Backoff, RetryAfterReplacesComputedDelay) {
    for (const auto r : sample_randoms()) {
        EXPECT_EQ(retry_delay_ms(1, 1000, 600000, 30000, r), 30000);
        // Shorter than the computed backoff (d = 16000): still honoured.
        EXPECT_EQ(retry_delay_ms(5, 1000, 600000, 2000, r), 2000);
        EXPECT_EQ(retry_delay_ms(0, 0, 600000, 45000, r), 45000);
    }
}

TEST(Backoff, RetryAfterIsCapped) {
    EXPECT_EQ(retry_delay_ms(1, 1000, 60000, 120000, 7), 60000);
    EXPECT_EQ(retry_delay_ms(1, 1000, 60000, 60000, 7), 60000);
    EXPECT_EQ(retry_delay_ms(1, 1000, 60000, kI64Max, 7), 60000);
    EXPECT_EQ(retry_delay_ms(1, 1000, 0, 5000, 7), 0);
    EXPECT_EQ(retry_delay_ms(1, 1000, -5, 5000, 7), 0);
}

TEST(Backoff, RetryAfterZeroOrNegativeMeansNow) {
    EXPECT_EQ(retry_delay_ms(5, 1000, 60000, 0, 7), 0);
    EXPECT_EQ(retry_delay_ms(5, 1000, 60000, -3000, 7), 0);
    EXPECT_EQ(retry_delay_ms(5, 1000, 60000, INT64_MIN, 7), 0);
}

}  // namespace
}  // namespace jobrunner
