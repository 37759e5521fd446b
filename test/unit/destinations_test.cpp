/*
 * destinations_test.cpp — GoogleTest cases for src/core/destinations.cpp:
 * which results count against a host, the circuit opening after a run of
 * failures, one probe at doubling intervals, closing on a success,
 * Retry-After pausing a whole host, and hosts kept apart.
 */
#include "core/destinations.hpp"

#include <gtest/gtest.h>

namespace jobrunner {
namespace {

HttpResult result(long status, std::optional<std::int64_t> retry_after = std::nullopt,
                  std::string error = "") {
    HttpResult r;
    r.status = status;
    r.retry_after_ms = retry_after;
    r.error = std::move(error);
    return r;
}

TEST(Destinations, VerdictOfEachKindOfResult) {
    EXPECT_EQ(verdict_of(result(200)), Verdict::reachable);
    EXPECT_EQ(verdict_of(result(404)), Verdict::reachable);
    EXPECT_EQ(verdict_of(result(429)), Verdict::reachable);
    EXPECT_EQ(verdict_of(result(429, 2000)), Verdict::throttled);
    EXPECT_EQ(verdict_of(result(503, 2000)), Verdict::throttled);
    EXPECT_EQ(verdict_of(result(503)), Verdict::failure);
    EXPECT_EQ(verdict_of(result(500)), Verdict::failure);
    EXPECT_EQ(verdict_of(result(0, std::nullopt, "connection refused")), Verdict::failure);
    EXPECT_EQ(verdict_of(result(0, std::nullopt, kCanceled)), Verdict::none);
}

TEST(Destinations, HostAndPortOfAUrl) {
    EXPECT_EQ(destination_of("https://API.example.com/x?y"), "api.example.com:443");
    EXPECT_EQ(destination_of("http://api.example.com"), "api.example.com:80");
    EXPECT_EQ(destination_of("http://127.0.0.1:8080/jobs"), "127.0.0.1:8080");
    EXPECT_EQ(destination_of("http://[::1]:9000/a"), "[::1]:9000");
    EXPECT_EQ(destination_of("http://[::1]/a"), "[::1]:80");
    EXPECT_EQ(destination_of("ftp://example.com/"), "");
    EXPECT_EQ(destination_of("http:///nohost"), "");
}

TEST(Destinations, OpensAfterARunOfFailuresAndProbesOnceAtDoublingIntervals) {
    Destinations d(DestinationPolicy{3, 1000, 4000, 60000});
    const std::string h = "down:80";
    for (int i = 0; i < 2; i++) {
        ASSERT_TRUE(d.may_send(h, 0));
        d.record(h, Verdict::failure, 0, std::nullopt);
    }
    EXPECT_FALSE(d.blocked(h, 0));  // two failures: still closed
    d.record(h, Verdict::failure, 10, std::nullopt);
    EXPECT_TRUE(d.blocked(h, 10));  // third: open for 1 s
    EXPECT_FALSE(d.may_send(h, 500));
    EXPECT_EQ(d.blocked_until(h, 500), 1010);
    // The wait is over: one probe, nothing beside it.
    EXPECT_TRUE(d.may_send(h, 1010));
    EXPECT_FALSE(d.may_send(h, 1011));
    EXPECT_TRUE(d.blocked(h, 1011));
    // It fails: twice the wait, then 4 s, capped.
    d.record(h, Verdict::failure, 1100, std::nullopt);
    EXPECT_EQ(d.blocked_until(h, 1100), 3100);
    EXPECT_TRUE(d.may_send(h, 3100));
    d.record(h, Verdict::failure, 3200, std::nullopt);
    EXPECT_EQ(d.blocked_until(h, 3200), 7200);
    EXPECT_TRUE(d.may_send(h, 7200));
    d.record(h, Verdict::failure, 7300, std::nullopt);
    EXPECT_EQ(d.blocked_until(h, 7300), 11300);  // capped at 4 s
    // A late failure of a request sent before the circuit opened changes nothing.
    d.record(h, Verdict::failure, 7400, std::nullopt);
    EXPECT_EQ(d.blocked_until(h, 7400), 11300);
    // A probe that succeeds closes it.
    EXPECT_TRUE(d.may_send(h, 11300));
    d.record(h, Verdict::reachable, 11400, std::nullopt);
    EXPECT_FALSE(d.blocked(h, 11400));
    EXPECT_TRUE(d.may_send(h, 11400));
    EXPECT_TRUE(d.troubled(11400).empty());
}

TEST(Destinations, AnAnswerInBetweenResetsTheRun) {
    Destinations d(DestinationPolicy{3, 1000, 4000, 60000});
    const std::string h = "flaky:80";
    d.record(h, Verdict::failure, 0, std::nullopt);
    d.record(h, Verdict::failure, 0, std::nullopt);
    d.record(h, Verdict::reachable, 0, std::nullopt);
    d.record(h, Verdict::failure, 0, std::nullopt);
    d.record(h, Verdict::failure, 0, std::nullopt);
    EXPECT_FALSE(d.blocked(h, 0));
}

TEST(Destinations, RetryAfterPausesTheWholeHostUntilThen) {
    Destinations d;
    const std::string h = "busy:443";
    d.record(h, Verdict::throttled, 1000, 2000);
    EXPECT_FALSE(d.may_send(h, 2999));
    EXPECT_EQ(d.blocked_until(h, 1500), 3000);
    auto view = d.troubled(1500);
    ASSERT_EQ(view.size(), 1u);
    EXPECT_EQ(view[0].state, DestinationState::paused);
    EXPECT_EQ(view[0].until_ms, 3000);
    EXPECT_TRUE(d.may_send(h, 3000));
    // A shorter Retry-After does not shorten a pause; a huge one is capped.
    d.record(h, Verdict::throttled, 3000, 10000);
    d.record(h, Verdict::throttled, 3100, 100);
    EXPECT_EQ(d.blocked_until(h, 3100), 13000);
    d.record(h, Verdict::throttled, 3200, std::int64_t(1) << 50);
    EXPECT_EQ(d.blocked_until(h, 3200), 3200 + DestinationPolicy{}.max_pause_ms);
}

TEST(Destinations, HostsAreKeptApart) {
    Destinations d(DestinationPolicy{1, 1000, 4000, 60000});
    d.record("down:80", Verdict::failure, 0, std::nullopt);
    d.record("busy:80", Verdict::throttled, 0, 5000);
    EXPECT_TRUE(d.blocked("down:80", 10));
    EXPECT_TRUE(d.blocked("busy:80", 10));
    EXPECT_TRUE(d.may_send("up:80", 10));
    EXPECT_FALSE(d.blocked("up:80", 10));
    EXPECT_EQ(d.troubled(10).size(), 2u);
}

TEST(Destinations, ACanceledProbeFreesTheProbeSlot) {
    Destinations d(DestinationPolicy{1, 1000, 4000, 60000});
    const std::string h = "down:80";
    d.record(h, Verdict::failure, 0, std::nullopt);
    ASSERT_TRUE(d.may_send(h, 1000));
    d.record(h, Verdict::none, 1100, std::nullopt);
    EXPECT_TRUE(d.may_send(h, 1100));  // another probe may go
}

}  // namespace
}  // namespace jobrunner
