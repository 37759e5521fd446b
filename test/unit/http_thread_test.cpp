/*
 * http_thread_test.cpp — HttpThread against a real HTTP/1.1 server: requests
 * handed over in batches come back through fd(), from another thread, with
 * their tags; at most max_active() run at once while the rest wait their
 * turn; the connections of one burst serve the next; stop() abandons what is
 * in flight.
 */
#include "core/http_thread.hpp"
#include "test_http_server.hpp"

#include <gtest/gtest.h>

#include <poll.h>

#include <map>
#include <set>
#include <thread>

namespace jobrunner {
namespace {

using namespace test_support;

HttpRequest post_to(const std::string &url, std::uint64_t tag) {
    HttpRequest r;
    r.tag = tag;
    r.url = url;
    r.body = "{}";
    r.headers = {"Content-Type: application/json"};
    r.timeout_ms = 5000;
    r.connect_timeout_ms = 2000;
    return r;
}

// n POSTs to url, tagged 1..n.
std::vector<HttpRequest> posts_to(const std::string &url, std::uint64_t n) {
    std::vector<HttpRequest> batch;
    for (std::uint64_t i = 1; i <= n; i++) batch.push_back(post_to(url, i));
    return batch;
}

// Waits on fd() like the worker does and collects results until n arrived.
bool collect(HttpThread &http, std::vector<HttpResult> &out, std::size_t n,
             milliseconds budget = milliseconds(5000)) {
    const auto deadline = Clock::now() + budget;
    while (out.size() < n) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{http.fd(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left));
        http.take_finished(out);
    }
    return true;
}

TEST(HttpThreadTest, BatchesComeBackWithTheirTags) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    std::vector<HttpRequest> batch = posts_to(server.url("/ok"), 150);
    http.submit(batch);
    EXPECT_TRUE(batch.empty());  // moved out
    std::vector<HttpResult> results;
    ASSERT_TRUE(collect(http, results, 150));
    std::set<std::uint64_t> tags;
    for (const HttpResult &r : results) {
        EXPECT_EQ(r.status, 200);
        tags.insert(r.tag);
    }
    EXPECT_EQ(tags.size(), 150u);
    EXPECT_EQ(*tags.begin(), 1u);
    EXPECT_EQ(*tags.rbegin(), 150u);
}

TEST(HttpThreadTest, AtMostMaxActiveRunAndTheRestWaitTheirTurn) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    http.set_max_active(4);
    std::vector<HttpRequest> batch = posts_to(server.url("/delay/150"), 12);
    const auto start = Clock::now();
    http.submit(batch);
    // Four at a time: the server sees four, and no more while they are held.
    ASSERT_TRUE(eventually([&] { return server.hits("/delay/150") >= 4; }));
    EXPECT_LE(http.active(), 4u);
    std::vector<HttpResult> results;
    ASSERT_TRUE(collect(http, results, 12));
    // Three waves of 150 ms: the cap held (a lower bound, never flaky).
    EXPECT_GE(Clock::now() - start, milliseconds(3 * 150 - 20));
    EXPECT_LE(server.accepted(), 4);  // connections reused, never more than four
    for (const HttpResult &r : results) EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(http.active(), 0u);
}

TEST(HttpThreadTest, ConnectionsOfOneBurstServeTheNext) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    http.set_max_active(32);
    for (int burst = 0; burst < 2; burst++) {
        std::vector<HttpRequest> batch = posts_to(server.url("/delay/100"), 32);
        http.submit(batch);
        std::vector<HttpResult> results;
        ASSERT_TRUE(collect(http, results, 32));
        for (const HttpResult &r : results) EXPECT_EQ(r.status, 200) << r.error;
        // The first burst runs all 32 at once, on 32 connections.
        if (burst == 0) {
            EXPECT_EQ(server.accepted(), 32);
        }
    }
    // The second burst found them all still open: the idle queue between
    // two bursts costs no new connections.
    EXPECT_EQ(server.accepted(), 32);
}

TEST(HttpThreadTest, RaisingMaxActiveStartsWaitingRequests) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    http.set_max_active(1);
    std::vector<HttpRequest> batch = posts_to(server.url("/delay/2000"), 3);
    http.submit(batch);
    ASSERT_TRUE(eventually([&] { return server.hits("/delay/2000") >= 1; }));
    http.set_max_active(3);
    // The two waiting requests start without waiting for the first to end.
    ASSERT_TRUE(eventually([&] { return server.hits("/delay/2000") >= 3; }, milliseconds(1500)));
    std::vector<HttpResult> results;
    ASSERT_TRUE(collect(http, results, 3));
}

TEST(HttpThreadTest, FdIsQuietWhenNothingFinished) {
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    pollfd p{http.fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 50), 0);
    std::vector<HttpResult> results;
    http.take_finished(results);
    EXPECT_TRUE(results.empty());
}

TEST(HttpThreadTest, StopAbandonsSlowRequestsPromptly) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    std::vector<HttpRequest> batch{post_to(server.url("/slow"), 1)};
    http.submit(batch);
    ASSERT_TRUE(eventually([&] { return server.hits("/slow") >= 1; }));
    const auto start = Clock::now();
    http.stop();
    EXPECT_LT(Clock::now() - start, milliseconds(1000));
    std::vector<HttpResult> results;
    http.take_finished(results);
    EXPECT_TRUE(results.empty());
    EXPECT_FALSE(http.failed());
}

TEST(HttpThreadTest, CancelEndsARunningRequestAndDropsAWaitingOne) {
    TestServer server;
    HttpThread http(1 << 16, "pg_jobrunner/test");
    ASSERT_EQ(http.init_error(), "");
    http.set_max_active(1);
    std::vector<HttpRequest> batch;
    batch.push_back(post_to(server.url("/delay/5000"), 1));
    batch.push_back(post_to(server.url("/ok"), 2));
    batch.push_back(post_to(server.url("/ok"), 3));
    const auto start = Clock::now();
    http.submit(batch);
    const auto deadline = start + milliseconds(3000);
    while (server.accepted() < 1 && Clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(5));
    }
    ASSERT_EQ(server.accepted(), 1);
    http.cancel(3);  // still waiting for the one slot
    http.cancel(1);  // on the wire
    std::vector<HttpResult> results;
    ASSERT_TRUE(collect(http, results, 3, milliseconds(3000)));
    std::map<std::uint64_t, HttpResult> by_tag;
    for (HttpResult &r : results) by_tag[r.tag] = std::move(r);
    EXPECT_EQ(by_tag[1].status, 0);
    EXPECT_EQ(by_tag[1].error, kCanceled);
    EXPECT_LT(by_tag[1].duration_ms, 3000.0);
    EXPECT_EQ(by_tag[2].status, 200);  // took the freed slot
    EXPECT_EQ(by_tag[3].status, 0);
    EXPECT_EQ(by_tag[3].error, kCanceled);
    EXPECT_LT(Clock::now() - start, milliseconds(3000));  // nobody waited for /delay/5000
    // The endpoint sees the canceled request's connection go away.
    while (server.closed() < 1 && Clock::now() < start + milliseconds(5000)) {
        std::this_thread::sleep_for(milliseconds(5));
    }
    EXPECT_GE(server.closed(), 1);
    // A tag that finished already: nothing happens.
    http.cancel(2);
    std::vector<HttpRequest> again = posts_to(server.url("/ok"), 1);
    http.submit(again);
    std::vector<HttpResult> more;
    ASSERT_TRUE(collect(http, more, 1));
    EXPECT_EQ(more.size(), 1u);
    EXPECT_EQ(more[0].status, 200);
}

}  // namespace
}  // namespace jobrunner
