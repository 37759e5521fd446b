/*
 * http_engine_test.cpp — HttpEngine against a real HTTP/1.1 server.
 *
 * The server runs on 127.0.0.1 (ephemeral port) on its own thread: plain
 * sockets and poll(), keep-alive, and endpoints that misbehave on purpose
 * (slow, reset, hang-up, cut short, redirect, huge). The engine is driven
 * only the way the worker drives it (engine_driver.hpp). Every wait has a
 * deadline; nothing sleeps a fixed time.
 */
#include "core/http_engine.hpp"
#include "engine_driver.hpp"
#include "test_http_server.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace jobrunner {
namespace {

using namespace test_support;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class HttpEngineTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { unset_proxies(); }

    // One request through a fresh engine; the single result.
    HttpResult one(HttpRequest req, std::size_t cap = 1 << 20) {
        HttpEngine engine(cap, kUserAgent);
        EXPECT_EQ(engine.init_error(), "");
        engine.submit(std::move(req));
        Driver d(engine);
        EXPECT_TRUE(d.wait_results(1));
        EXPECT_EQ(engine.in_flight(), 0u);
        return d.results.empty() ? HttpResult{} : d.results[0];
    }

    TestServer server;
};

TEST_F(HttpEngineTest, IdleEngineHasNoTimerAndNoWork) {
    HttpEngine engine(1024, kUserAgent);
    EXPECT_EQ(engine.init_error(), "");
    EXPECT_GE(engine.fd(), 0);
    EXPECT_EQ(engine.next_timeout_ms(), -1);
    EXPECT_EQ(engine.in_flight(), 0u);
    pollfd p{engine.fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0);  // nothing readable: the worker may sleep
    engine.poll();
    std::vector<HttpResult> out;
    engine.take_finished(out);
    EXPECT_TRUE(out.empty());
}

TEST_F(HttpEngineTest, OkReturnsStatusAndBody) {
    HttpResult r = one(post(server.url("/ok"), 17));
    EXPECT_EQ(r.tag, 17u);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.body, "{\"ok\":true}");
    EXPECT_FALSE(r.body_truncated);
    EXPECT_FALSE(r.retry_after_ms.has_value());
    EXPECT_GT(r.duration_ms, 0.0);
    EXPECT_LT(r.duration_ms, 5000.0);
}

TEST_F(HttpEngineTest, ErrorStatusKeepsRetryAfter) {
    HttpResult r = one(post(server.url("/status/503"), 1));
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.body, "busy");
    EXPECT_EQ(r.retry_after_ms, std::optional<std::int64_t>(7000));
}

TEST_F(HttpEngineTest, InformationalHeadersAreForgotten) {
    HttpResult r = one(post(server.url("/hints"), 1));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{}");
    EXPECT_FALSE(r.retry_after_ms.has_value());  // only the 103 had one
}

TEST_F(HttpEngineTest, SendsExactlyTheGivenHeadersAndBody) {
    HttpRequest req = post(server.url("/echo"), 5, "{\"job\":42}");
    req.headers = {"Content-Type: application/json",
                   "Authorization: Bearer aaa.bbb.ccc",
                   "X-Job: true",
                   "X-Correlation-ID: 42",
                   "X-Job-Name: nightly",
                   "X-Job-Attempt: 3",
                   "Idempotency-Key: 42"};
    HttpResult r = one(std::move(req));
    ASSERT_EQ(r.status, 200) << r.error;
    std::size_t split = r.body.find("\r\n\r\n");
    ASSERT_NE(split, std::string::npos);
    EXPECT_EQ(r.body.substr(split + 4), "{\"job\":42}");

    std::string head = r.body.substr(0, split);
    std::size_t eol = head.find("\r\n");
    EXPECT_EQ(head.substr(0, eol), "POST /echo HTTP/1.1");
    std::multimap<std::string, std::string> got;
    while (eol != std::string::npos) {
        std::size_t next = head.find("\r\n", eol + 2);
        std::string line = head.substr(eol + 2, next == std::string::npos ? next : next - eol - 2);
        std::size_t colon = line.find(':');
        ASSERT_NE(colon, std::string::npos) << line;
        std::size_t v = line.find_first_not_of(' ', colon + 1);
        got.emplace(lower(line.substr(0, colon)), v == std::string::npos ? "" : line.substr(v));
        eol = next;
    }
    std::multimap<std::string, std::string> want = {
        {"host", "127.0.0.1:" + std::to_string(server.port())},
        {"user-agent", kUserAgent},
        {"accept", "*/*"},
        {"content-type", "application/json"},
        {"content-length", "10"},
        {"authorization", "Bearer aaa.bbb.ccc"},
        {"x-job", "true"},
        {"x-correlation-id", "42"},
        {"x-job-name", "nightly"},
        {"x-job-attempt", "3"},
        {"idempotency-key", "42"},
    };
    EXPECT_EQ(got, want);
}

TEST_F(HttpEngineTest, LargeBodyIsSentWithoutExpectContinue) {
    // curl would ask for 100-continue before a body this large.
    std::string big = pattern(2u << 20);
    HttpResult r = one(post(server.url("/echo"), 9, big), 4u << 20);
    ASSERT_EQ(r.status, 200) << r.error;
    std::size_t split = r.body.find("\r\n\r\n");
    ASSERT_NE(split, std::string::npos);
    std::string head = lower(r.body.substr(0, split));
    EXPECT_EQ(head.find("expect:"), std::string::npos) << head;
    EXPECT_NE(head.find("content-length: " + std::to_string(big.size())), std::string::npos);
    EXPECT_TRUE(r.body.compare(split + 4, std::string::npos, big) == 0);

    HttpResult empty = one(post(server.url("/echo"), 10, ""));
    ASSERT_EQ(empty.status, 200) << empty.error;
    EXPECT_NE(lower(empty.body).find("content-length: 0\r\n"), std::string::npos);
}

TEST_F(HttpEngineTest, RedirectIsReturnedNotFollowed) {
    HttpResult r = one(post(server.url("/redirect"), 3));
    EXPECT_EQ(r.status, 302);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(server.hits("/redirect"), 1);
    EXPECT_EQ(server.hits("/ok"), 0);
}

TEST_F(HttpEngineTest, BodyIsCutAtTheCap) {
    const std::size_t cap = 1000;
    HttpResult exact = one(post(server.url("/bytes/1000"), 1), cap);
    EXPECT_EQ(exact.status, 200);
    EXPECT_EQ(exact.body, pattern(cap));
    EXPECT_FALSE(exact.body_truncated);

    HttpResult over = one(post(server.url("/bytes/1001"), 2), cap);
    EXPECT_EQ(over.status, 200);
    EXPECT_EQ(over.body, pattern(cap));
    EXPECT_TRUE(over.body_truncated);

    HttpResult huge = one(post(server.url("/huge"), 3), cap);
    EXPECT_EQ(huge.status, 200);
    EXPECT_EQ(huge.error, "");
    EXPECT_EQ(huge.body, pattern(cap));
    EXPECT_LE(huge.body.capacity(), 2 * cap);  // never grew toward 8 MiB
    EXPECT_TRUE(huge.body_truncated);

    HttpResult none = one(post(server.url("/ok"), 4), 0);
    EXPECT_EQ(none.status, 200);
    EXPECT_EQ(none.body, "");
    EXPECT_TRUE(none.body_truncated);
}

TEST_F(HttpEngineTest, TimeoutGivesStatusZeroAndError) {
    HttpRequest req = post(server.url("/slow"), 8);
    req.timeout_ms = 300;
    req.headers.push_back("Authorization: Bearer top-secret-token");
    const auto start = Clock::now();
    HttpResult r = one(std::move(req));
    const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
    EXPECT_EQ(r.tag, 8u);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "timed out after 300 ms");
    EXPECT_NE(r.error_detail.find("Timeout"), std::string::npos) << r.error_detail;
    EXPECT_EQ(r.error_detail.find("top-secret"), std::string::npos) << r.error_detail;
    EXPECT_EQ(r.body, "");
    EXPECT_GE(took, 250);
    EXPECT_LT(took, 3000);
    EXPECT_EQ(server.hits("/slow"), 1);
}

TEST_F(HttpEngineTest, ResetGivesStatusZeroAndError) {
    HttpResult r = one(post(server.url("/reset"), 4));
    EXPECT_EQ(r.status, 0);
    EXPECT_FALSE(r.error.empty());
    EXPECT_EQ(r.error.find("127.0.0.1"), std::string::npos) << r.error;
    EXPECT_FALSE(r.error_detail.empty());
    EXPECT_EQ(r.body, "");
    EXPECT_GE(server.hits("/reset"), 1);
}

TEST_F(HttpEngineTest, RefusedConnectionSaysSoWithoutNamingTheEndpoint) {
    RefusingPort closed;
    HttpRequest req = post(closed.url("/ok"), 6);
    req.headers.push_back("Authorization: Bearer top-secret-token");
    HttpResult r = one(std::move(req));
    EXPECT_EQ(r.tag, 6u);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "connection refused");
    // The detail is curl's own message, for the server log: it names the port.
    EXPECT_NE(r.error_detail.find(std::to_string(closed.port())), std::string::npos)
        << r.error_detail;
    EXPECT_EQ(r.error_detail.find("top-secret"), std::string::npos) << r.error_detail;
}

TEST_F(HttpEngineTest, ConnectTimeoutIsNamedWithTheConnectLimit) {
    FullBacklogPort silent;
    HttpRequest req = post(silent.url("/ok"), 7);
    req.timeout_ms = 5000;
    req.connect_timeout_ms = 200;
    HttpResult r = one(std::move(req));
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "could not connect within 200 ms");
    EXPECT_NE(r.error_detail.find("Timeout"), std::string::npos) << r.error_detail;
}

TEST_F(HttpEngineTest, ResponseCutShortIsAClosedConnection) {
    HttpResult r = one(post(server.url("/partial"), 1));
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "connection closed before a complete response");
    EXPECT_FALSE(r.error_detail.empty());
    EXPECT_EQ(r.body, "");  // ten bytes of a hundred are no response

    HttpResult nothing = one(post(server.url("/hangup"), 2));
    EXPECT_EQ(nothing.status, 0);
    EXPECT_EQ(nothing.error, "connection closed before a complete response");
    EXPECT_FALSE(nothing.error_detail.empty());
}

TEST_F(HttpEngineTest, OnlyHttpAndHttpsAreAllowed) {
    char path[] = "/tmp/http_engine_test_XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    const std::string marker = "marker-that-must-not-be-read";
    ASSERT_EQ(write(fd, marker.data(), marker.size()), (ssize_t)marker.size());
    close(fd);

    const std::string hostport = "127.0.0.1:" + std::to_string(server.port());
    const std::vector<std::string> urls = {
        "file:///etc/passwd",       std::string("file://") + path, std::string("FILE://") + path,
        "ftp://" + hostport + "/x", "gopher://" + hostport + "/x", "dict://" + hostport + "/x",
        "telnet://" + hostport,
    };
    HttpEngine engine(1 << 20, kUserAgent);
    for (std::size_t i = 0; i < urls.size(); ++i) engine.submit(post(urls[i], i));
    Driver d(engine);
    ASSERT_TRUE(d.wait_results(urls.size()));
    unlink(path);
    for (const HttpResult &r : d.results) {
        SCOPED_TRACE(urls.at(r.tag));
        EXPECT_EQ(r.status, 0);
        EXPECT_EQ(r.error, "unsupported protocol: only http and https are allowed");
        EXPECT_NE(r.error_detail.find("Unsupported protocol"), std::string::npos) << r.error_detail;
        EXPECT_EQ(r.body, "");
    }
    EXPECT_EQ(server.accepted(), 0);  // no scheme reached the network
}

TEST_F(HttpEngineTest, WaitingDoesNotSpin) {
    HttpEngine engine(1024, kUserAgent);
    engine.submit(post(server.url("/delay/200"), 1));
    Driver d(engine);
    ASSERT_TRUE(d.wait_results(1));
    EXPECT_EQ(d.results[0].status, 200);
    EXPECT_EQ(d.results[0].body, "{}");
    EXPECT_LT(d.iterations, 20);  // a busy loop would spin thousands of times
}

TEST_F(HttpEngineTest, ManyConcurrentRequestsCompleteWithTheirTags) {
    // Each answer takes 100 ms: one after another this would need 20 s.
    const std::size_t n = 200;
    HttpEngine engine(1 << 16, kUserAgent);
    const auto start = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
        engine.submit(post(server.url("/delay/100"), 1000 + i, "tag=" + std::to_string(1000 + i)));
    }
    EXPECT_EQ(engine.in_flight(), n);
    Driver d(engine);
    ASSERT_TRUE(d.wait_results(n, milliseconds(5000)));
    const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
    EXPECT_EQ(d.results.size(), n);
    EXPECT_EQ(engine.in_flight(), 0u);
    std::set<std::uint64_t> tags;
    for (const HttpResult &r : d.results) {
        EXPECT_EQ(r.status, 200) << r.error;
        EXPECT_EQ(r.body, "tag=" + std::to_string(r.tag));
        tags.insert(r.tag);
    }
    EXPECT_EQ(tags.size(), n);
    EXPECT_EQ(*tags.begin(), 1000u);
    EXPECT_EQ(*tags.rbegin(), 1000u + n - 1);
    EXPECT_LT(took, 3000);                               // they really ran side by side
    EXPECT_EQ(server.accepted(), static_cast<int>(n));   // HTTP/1.1: one connection each
    EXPECT_LT(d.iterations, static_cast<long>(10 * n));  // about 18 when idle
}

TEST_F(HttpEngineTest, SequentialRequestsReuseConnections) {
    HttpEngine engine(1024, kUserAgent);
    Driver d(engine);
    for (std::size_t i = 0; i < 100; ++i) {
        engine.submit(post(server.url("/ok"), i));
        ASSERT_TRUE(d.wait_results(i + 1));
        ASSERT_EQ(d.results.back().status, 200) << d.results.back().error;
    }
    EXPECT_EQ(server.hits("/ok"), 100);
    EXPECT_LE(server.accepted(), 2);
}

TEST_F(HttpEngineTest, AbortAllDropsTransfersAndEngineStaysUsable) {
    HttpEngine engine(1024, kUserAgent);
    for (std::uint64_t i = 0; i < 5; ++i) engine.submit(post(server.url("/slow"), i));
    Driver d(engine);
    ASSERT_TRUE(d.run_until([&] { return server.hits("/slow") == 5; }, milliseconds(3000), 2))
        << server.hits("/slow") << " of 5 requests arrived";
    engine.abort_all();
    EXPECT_EQ(engine.in_flight(), 0u);
    EXPECT_TRUE(eventually([&] { return server.closed() == 5; }));  // sockets really closed
    engine.poll();
    engine.take_finished(d.results);
    EXPECT_TRUE(d.results.empty());

    engine.submit(post(server.url("/ok"), 99));
    ASSERT_TRUE(d.wait_results(1));
    EXPECT_EQ(d.results[0].tag, 99u);
    EXPECT_EQ(d.results[0].status, 200);
}

TEST_F(HttpEngineTest, DestroyingTheEngineClosesInFlightConnections) {
    {
        HttpEngine engine(1024, kUserAgent);
        for (std::uint64_t i = 0; i < 3; ++i) engine.submit(post(server.url("/slow"), i));
        Driver d(engine);
        ASSERT_TRUE(d.run_until([&] { return server.hits("/slow") == 3; }, milliseconds(3000), 2));
    }
    EXPECT_TRUE(eventually([&] { return server.closed() == 3; }));
}

TEST_F(HttpEngineTest, TimeoutsAreClampedToAtLeastOneMillisecond) {
    HttpRequest req = post(server.url("/slow"), 1);
    req.timeout_ms = 0;  // 0 would mean "no timeout" to curl
    req.connect_timeout_ms = -5;
    HttpResult r = one(std::move(req));
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "timed out after 1 ms");
}

// A token shaped like ours; what an echoing endpoint must not get stored.
const std::string kMinted =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSJ9."
    "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr";

// A request whose Authorization header is minted as it starts, like a job's.
HttpRequest minted_post(const std::string &url, std::uint64_t tag, std::string body = "{}") {
    HttpRequest r = post(url, tag, std::move(body));
    r.header_at_start = [](std::int64_t) { return "Authorization: Bearer " + kMinted; };
    return r;
}

// Occurrences of needle in text.
std::size_t count(const std::string &text, const std::string &needle) {
    std::size_t n = 0;
    for (std::size_t at = text.find(needle); at != std::string::npos;
         at = text.find(needle, at + needle.size())) {
        ++n;
    }
    return n;
}

TEST_F(HttpEngineTest, EveryCopyOfTheMintedTokenIsRemovedFromTheBody) {
    // /echo sends back the request head (with the header) and the body.
    HttpResult r = one(minted_post(server.url("/echo"), 1, "<" + kMinted + kMinted + ">"));
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body.find(kMinted.substr(kMinted.rfind('.'))), std::string::npos) << r.body;
    EXPECT_EQ(count(r.body, "[token removed]"), 3u) << r.body;
    EXPECT_NE(r.body.find("Authorization: Bearer [token removed]\r\n"), std::string::npos)
        << r.body;
    EXPECT_EQ(r.body.substr(r.body.size() - 32), "<[token removed][token removed]>");
}

TEST_F(HttpEngineTest, ABodyCutInsideTheTokenLosesTheStartOfIt) {
    // {"authorization":"Bearer <token>"}, cut 20 bytes into the token.
    const std::string before = "{\"authorization\":\"Bearer ";
    HttpResult r = one(minted_post(server.url("/echo-auth"), 1), before.size() + 20);
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_TRUE(r.body_truncated);
    EXPECT_EQ(r.body, before);
}

}  // namespace
}  // namespace jobrunner
