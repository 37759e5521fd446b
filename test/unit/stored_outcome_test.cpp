/*
 * stored_outcome_test.cpp — what an attempt against a real server leaves in
 * the job row, which the job's user reads: the kind of failure but not where
 * the job was sent, the response but not the token minted for the attempt.
 *
 * Each attempt goes the worker's way: build_request(), the HTTP engine
 * against the loopback test server, outcome_from_result().
 */
#include "core/dispatch.hpp"
#include "core/http_engine.hpp"
#include "core/jwt.hpp"
#include "core/text_checks.hpp"
#include "json_reference.hpp"
#include "jwt_reference.hpp"
#include "engine_driver.hpp"
#include "test_http_server.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <string>

namespace jobrunner {
namespace {

using namespace test_support;

const std::string kSecret = "0123456789abcdef0123456789abcdef0123";

// What one attempt came to, and the Authorization header it was sent with.
struct Attempt {
    HttpResult result;
    Outcome outcome;
    std::string authorization;
};

// A job of a user, sent to url, with a timeout the tests can wait for.
ClaimedJob job_to(const std::string &url) {
    ClaimedJob j;
    j.id = "6e99740b-86bb-47c1-b4df-f3f492abc9f9";
    j.job_name = "send-email";
    j.user_id = "8d5b3f3e-1111-4c1e-9e39-000000000001";
    j.user_role = "authenticated";
    j.attempt = 2;
    j.body = "{}";
    j.url = url;
    j.timeout_ms = 5000;
    return j;
}

// Sends one attempt of job as the worker does; keeps the header minted for
// it, so a test can look for the token afterwards.
Attempt attempt(const ClaimedJob &job) {
    Attempt a;
    MintContext mint;
    mint.secret = kSecret;
    mint.system_role = "service_role";
    HttpRequest request;
    EXPECT_FALSE(build_request(job, mint, 1, request).has_value());
    auto mint_header = request.header_at_start;
    request.header_at_start = [&a, mint_header](std::int64_t now_s) {
        a.authorization = mint_header(now_s);
        return a.authorization;
    };
    HttpEngine engine(1 << 20, kUserAgent);
    engine.submit(std::move(request));
    Driver driver(engine);
    EXPECT_TRUE(driver.wait_results(1));
    if (!driver.results.empty()) a.result = driver.results[0];
    a.outcome = outcome_from_result(job, a.result);
    return a;
}

// Fails when text names the loopback address or the port the job went to.
void expect_no_endpoint(const std::string &text, int port) {
    EXPECT_EQ(text.find("127.0.0.1"), std::string::npos) << text;
    EXPECT_EQ(text.find(std::to_string(port)), std::string::npos) << text;
}

// Fails when text holds any 8-byte piece of the token's signature segment.
void expect_no_signature(const std::string &text, const std::string &authorization) {
    const std::string signature = authorization.substr(authorization.rfind('.') + 1);
    ASSERT_GE(signature.size(), 40u);
    for (std::size_t i = 0; i + 8 <= signature.size(); ++i) {
        ASSERT_EQ(text.find(signature.substr(i, 8)), std::string::npos) << text;
    }
}

// The three HTTP-date formats a recipient must accept (RFC 9110 5.6.7).
constexpr const char *kImfFixdate = "%a, %d %b %Y %H:%M:%S GMT";  // Sun, 06 Nov 1994 08:49:37 GMT
constexpr const char *kRfc850 = "%A, %d-%b-%y %H:%M:%S GMT";      // Sunday, 06-Nov-94 08:49:37 GMT
constexpr const char *kAsctime = "%a %b %e %H:%M:%S %Y";          // Sun Nov  6 08:49:37 1994

// The date offset_s seconds from now, in the given format.
std::string http_date(const char *format, std::int64_t offset_s) {
    const std::time_t when = std::time(nullptr) + static_cast<std::time_t>(offset_s);
    std::tm tm{};
    gmtime_r(&when, &tm);
    char text[64];
    std::strftime(text, sizeof text, format, &tm);
    return text;
}

class StoredOutcomeTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { unset_proxies(); }

    // An attempt the server answers with status and "Retry-After: value".
    Attempt answered_later(int status, const std::string &value) {
        ClaimedJob job = job_to(server.url("/retry/" + std::to_string(status)));
        job.headers = {"X-Retry-After: " + value};
        Attempt a = attempt(job);
        EXPECT_EQ(a.result.status, status) << a.result.error;
        return a;
    }

    // The delay stored for an attempt answered with a date 5 s ahead.
    std::int64_t delay_for_date(int status, const char *format) {
        const std::string date = http_date(format, 5);
        Attempt a = answered_later(status, date);
        EXPECT_TRUE(a.outcome.retry_after_ms.has_value()) << date;
        return a.outcome.retry_after_ms.value_or(-1);
    }

    TestServer server;
};

TEST_F(StoredOutcomeTest, RefusedConnectionNamesNeitherHostNorPort) {
    RefusingPort closed;
    Attempt a = attempt(job_to(closed.url("/send-email")));
    EXPECT_EQ(a.result.status, 0);
    EXPECT_EQ(a.result.error, "connection refused");
    EXPECT_EQ(a.outcome.error, "connection refused");
    expect_no_endpoint(a.result.error, closed.port());
    expect_no_endpoint(a.outcome.error, closed.port());
    EXPECT_FALSE(a.result.error_detail.empty());
    EXPECT_EQ(a.outcome.error_detail, a.result.error_detail);  // for the server log
}

TEST_F(StoredOutcomeTest, TimeoutSaysAfterHowLongTheAttemptGaveUp) {
    ClaimedJob job = job_to(server.url("/slow"));
    job.timeout_ms = 300;
    Attempt a = attempt(job);
    EXPECT_EQ(a.result.status, 0);
    EXPECT_EQ(a.outcome.error, "timed out after 300 ms");
    expect_no_endpoint(a.result.error, server.port());
    expect_no_endpoint(a.outcome.error, server.port());
    EXPECT_FALSE(a.outcome.error_detail.empty());
}

TEST_F(StoredOutcomeTest, ResponseCutShortSaysTheConnectionClosed) {
    Attempt a = attempt(job_to(server.url("/partial")));
    EXPECT_EQ(a.result.status, 0);
    EXPECT_EQ(a.outcome.error, "connection closed before a complete response");
    expect_no_endpoint(a.result.error, server.port());
    expect_no_endpoint(a.outcome.error, server.port());
    EXPECT_FALSE(a.outcome.response.has_value());
    EXPECT_FALSE(a.outcome.error_detail.empty());
}

TEST_F(StoredOutcomeTest, TokenEchoedInAJsonResponseIsNotStored) {
    Attempt a = attempt(job_to(server.url("/echo-auth")));
    ASSERT_EQ(a.result.status, 200) << a.result.error;
    ASSERT_EQ(a.authorization.rfind("Authorization: Bearer ", 0), 0u);
    EXPECT_TRUE(
        reference::verify_hs256(a.authorization.substr(22), kSecret));  // a real token was sent
    expect_no_signature(a.result.body, a.authorization);
    ASSERT_TRUE(a.outcome.response.has_value());
    expect_no_signature(*a.outcome.response, a.authorization);
    EXPECT_EQ(*a.outcome.response, "{\"authorization\":\"Bearer [token removed]\"}");
    EXPECT_TRUE(reference::is_valid_json(*a.outcome.response));
}

TEST_F(StoredOutcomeTest, TokenSignatureEchoedAloneIsNotStored) {
    Attempt a = attempt(job_to(server.url("/echo-signature")));
    ASSERT_EQ(a.result.status, 200) << a.result.error;
    ASSERT_TRUE(a.outcome.response.has_value());
    expect_no_signature(*a.outcome.response, a.authorization);
    EXPECT_EQ(*a.outcome.response, "{\"sig\":\"[token removed]\"}");
}

TEST_F(StoredOutcomeTest, TokenEchoedInAnErrorBodyIsNotStored) {
    Attempt a = attempt(job_to(server.url("/echo-auth/500")));
    ASSERT_EQ(a.result.status, 500) << a.result.error;
    ASSERT_FALSE(a.authorization.empty());
    expect_no_signature(a.result.body, a.authorization);
    expect_no_signature(a.outcome.error, a.authorization);
    EXPECT_EQ(a.outcome.error, "HTTP 500: {\"authorization\":\"Bearer [token removed]\"}");
    EXPECT_FALSE(a.outcome.response.has_value());
}

TEST_F(StoredOutcomeTest, RetryAfterSecondsIsStoredInMilliseconds) {
    EXPECT_EQ(answered_later(429, "3").outcome.retry_after_ms.value_or(-1), 3000);
    EXPECT_EQ(answered_later(503, "3").outcome.retry_after_ms.value_or(-1), 3000);
}

// Within a second: the date has whole seconds, and one may tick meanwhile.
TEST_F(StoredOutcomeTest, RetryAfterImfFixdateIsADelayFromNow) {
    EXPECT_NEAR(delay_for_date(429, kImfFixdate), 5000, 1000);
    EXPECT_NEAR(delay_for_date(503, kImfFixdate), 5000, 1000);
}

TEST_F(StoredOutcomeTest, RetryAfterRfc850DateIsADelayFromNow) {
    EXPECT_NEAR(delay_for_date(429, kRfc850), 5000, 1000);
    EXPECT_NEAR(delay_for_date(503, kRfc850), 5000, 1000);
}

TEST_F(StoredOutcomeTest, RetryAfterAsctimeDateIsADelayFromNow) {
    EXPECT_NEAR(delay_for_date(429, kAsctime), 5000, 1000);
    EXPECT_NEAR(delay_for_date(503, kAsctime), 5000, 1000);
}

// "Come back now" leaves the job's own backoff in charge.
TEST_F(StoredOutcomeTest, RetryAfterInThePastOrZeroStoresNoDelay) {
    for (const std::string &value :
         {http_date(kImfFixdate, -60), http_date(kRfc850, -3600), std::string("0")}) {
        EXPECT_FALSE(answered_later(429, value).outcome.retry_after_ms.has_value()) << value;
    }
}

TEST_F(StoredOutcomeTest, RetryAfterGarbageStoresNoDelay) {
    for (const char *value : {"soon", "", "-5", "tomorrow at noon"}) {
        EXPECT_FALSE(answered_later(503, value).outcome.retry_after_ms.has_value()) << value;
    }
}

TEST_F(StoredOutcomeTest, RetryAfterOfAnInformationalResponseIsIgnored) {
    Attempt a = attempt(job_to(server.url("/hints/503")));
    ASSERT_EQ(a.result.status, 503) << a.result.error;
    EXPECT_FALSE(a.outcome.retry_after_ms.has_value());
}

}  // namespace
}  // namespace jobrunner
