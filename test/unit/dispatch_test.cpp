/*
 * dispatch_test.cpp — GoogleTest cases for src/core/dispatch.cpp: the request
 * an attempt sends (headers, token claims, refusals) and the outcome a
 * response becomes.
 */
#include "core/dispatch.hpp"
#include "core/jwt.hpp"
#include "jwt_reference.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace jobrunner {
namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef0123";

ClaimedJob user_job() {
    ClaimedJob j;
    j.id = "6e99740b-86bb-47c1-b4df-f3f492abc9f9";
    j.job_name = "send-email";
    j.user_id = "8d5b3f3e-1111-4c1e-9e39-000000000001";
    j.user_role = "authenticated";
    j.user_email = "a@example.com";
    j.attempt = 3;
    j.body = "{\"to\":\"b\"}";
    j.url = "https://api.example.com/send-email";
    j.headers = {"X-Tenant: acme"};
    j.timeout_ms = 30000;
    return j;
}

MintContext mint() {
    MintContext m;
    m.secret = kSecret;
    m.system_role = "service_role";
    return m;
}

// When the engine starts the requests below.
constexpr std::int64_t kStart = 1700000000;

// The value of a header line "Name: value" of the request as it starts at
// `start`, or "" when absent.
std::string header(const HttpRequest &r, const std::string &name, std::int64_t start = kStart) {
    std::vector<std::string> sent = r.headers;
    if (r.header_at_start) sent.push_back(r.header_at_start(start));
    for (const std::string &h : sent) {
        if (h.rfind(name + ": ", 0) == 0) return h.substr(name.size() + 2);
    }
    return "";
}

// Decoded payload of the bearer token of the request as it starts at `start`.
std::string token_payload(const HttpRequest &r, std::int64_t start = kStart) {
    std::string token = header(r, "Authorization", start).substr(7);
    std::size_t a = token.find('.');
    std::size_t b = token.find('.', a + 1);
    return reference::base64url_decode(token.substr(a + 1, b - a - 1)).value_or("");
}

TEST(DispatchTest, RequestCarriesContractHeadersInOrder) {
    HttpRequest r;
    ASSERT_FALSE(build_request(user_job(), mint(), 7, r).has_value());
    EXPECT_EQ(r.tag, 7u);
    EXPECT_EQ(r.url, "https://api.example.com/send-email");
    EXPECT_EQ(r.body, "{\"to\":\"b\"}");
    EXPECT_EQ(header(r, "Content-Type"), "application/json");
    EXPECT_EQ(header(r, "X-Job"), "true");
    EXPECT_EQ(header(r, "X-Correlation-ID"), "6e99740b-86bb-47c1-b4df-f3f492abc9f9");
    EXPECT_EQ(header(r, "Idempotency-Key"), "6e99740b-86bb-47c1-b4df-f3f492abc9f9");
    EXPECT_EQ(header(r, "X-Job-Name"), "send-email");
    EXPECT_EQ(header(r, "X-Job-Attempt"), "3");
    EXPECT_EQ(r.headers.back(), "X-Tenant: acme");  // config headers come last
    EXPECT_EQ(r.timeout_ms, 30000);
    EXPECT_LE(r.connect_timeout_ms, r.timeout_ms);
}

TEST(DispatchTest, NoTraceContextNoTraceHeaders) {
    HttpRequest r;
    ASSERT_FALSE(build_request(user_job(), mint(), 1, r).has_value());
    EXPECT_EQ(header(r, "traceparent"), "");
    EXPECT_EQ(header(r, "tracestate"), "");
}

TEST(DispatchTest, EachAttemptIsASpanOfTheQueueingTrace) {
    ClaimedJob j = user_job();
    j.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    j.tracestate = "vendor=abc,other=1";
    HttpRequest first, again, second;
    ASSERT_FALSE(build_request(j, mint(), 1, first).has_value());
    ASSERT_FALSE(build_request(j, mint(), 2, again).has_value());
    j.attempt = 4;
    ASSERT_FALSE(build_request(j, mint(), 3, second).has_value());
    const std::string a = header(first, "traceparent"), b = header(second, "traceparent");
    ASSERT_EQ(a.size(), 55u);
    // Same trace id and flags; a span id of each attempt's own, stable for
    // the attempt, never the caller's parent id, never all zeros.
    EXPECT_EQ(a.substr(0, 36), "00-4bf92f3577b34da6a3ce929d0e0e4736-");
    EXPECT_EQ(a.substr(52), "-01");
    EXPECT_EQ(b.substr(0, 36), a.substr(0, 36));
    EXPECT_EQ(header(again, "traceparent"), a);
    EXPECT_NE(a.substr(36, 16), b.substr(36, 16));
    EXPECT_NE(a.substr(36, 16), "00f067aa0ba902b7");
    EXPECT_NE(a.substr(36, 16), std::string(16, '0'));
    EXPECT_EQ(a.substr(36, 16).find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(header(first, "tracestate"), "vendor=abc,other=1");
}

TEST(DispatchTest, MalformedTraceContextIsNotSent) {
    ClaimedJob j = user_job();
    j.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";  // no flags
    j.tracestate = "a=1";
    HttpRequest r;
    ASSERT_FALSE(build_request(j, mint(), 1, r).has_value());
    EXPECT_EQ(header(r, "traceparent"), "");
    EXPECT_EQ(header(r, "tracestate"), "");
    j.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    j.tracestate = "a=1\r\nX-Injected: yes";
    ASSERT_FALSE(build_request(j, mint(), 2, r).has_value());
    EXPECT_NE(header(r, "traceparent"), "");
    EXPECT_EQ(header(r, "tracestate"), "");
    EXPECT_EQ(header(r, "X-Injected"), "");
}

TEST(DispatchTest, TokenIsForTheJobsUserAndExpiresWithTheAttempt) {
    HttpRequest r;
    ASSERT_FALSE(build_request(user_job(), mint(), 1, r).has_value());
    std::string token = header(r, "Authorization");
    ASSERT_EQ(token.rfind("Bearer ", 0), 0u);
    EXPECT_TRUE(reference::verify_hs256(token.substr(7), kSecret));
    EXPECT_FALSE(reference::verify_hs256(token.substr(7), kSecret + "x"));
    // 30 s timeout + 60 s slack; then the attempt the token was minted for.
    EXPECT_EQ(token_payload(r),
              "{\"sub\":\"8d5b3f3e-1111-4c1e-9e39-000000000001\",\"role\":\"authenticated\","
              "\"aud\":\"authenticated\",\"email\":\"a@example.com\",\"iat\":1700000000,"
              "\"exp\":1700000090,\"jti\":\"6e99740b-86bb-47c1-b4df-f3f492abc9f9/3\","
              "\"job\":{\"id\":\"6e99740b-86bb-47c1-b4df-f3f492abc9f9\",\"name\":\"send-email\","
              "\"attempt\":3}}");
}

TEST(DispatchTest, EachAttemptGetsItsOwnTokenId) {
    ClaimedJob j = user_job();
    HttpRequest third, fourth;
    ASSERT_FALSE(build_request(j, mint(), 1, third).has_value());
    j.attempt = 4;
    ASSERT_FALSE(build_request(j, mint(), 2, fourth).has_value());
    EXPECT_NE(token_payload(third).find("\"jti\":\"" + j.id + "/3\""), std::string::npos);
    EXPECT_NE(token_payload(fourth).find("\"jti\":\"" + j.id + "/4\""), std::string::npos);
    EXPECT_NE(token_payload(fourth).find("\"attempt\":4}"), std::string::npos);
}

TEST(DispatchTest, TokenNeverOutlivesTheAttemptPlusOneMinute) {
    ClaimedJob j = user_job();
    j.timeout_ms = 300;  // a sub-second timeout must not round the expiry up
    HttpRequest r;
    ASSERT_FALSE(build_request(j, mint(), 1, r).has_value());
    EXPECT_NE(token_payload(r).find("\"exp\":1700000060,"), std::string::npos) << token_payload(r);
}

TEST(DispatchTest, TokenIsMintedWhenTheRequestStarts) {
    // A request may wait for a free slot: its token counts from the start.
    HttpRequest r;
    ASSERT_FALSE(build_request(user_job(), mint(), 1, r).has_value());
    for (const std::string &h : r.headers) EXPECT_NE(h.rfind("Authorization:", 0), 0u) << h;
    ASSERT_TRUE(static_cast<bool>(r.header_at_start));
    EXPECT_TRUE(
        reference::verify_hs256(header(r, "Authorization", kStart + 600).substr(7), kSecret));
    std::string payload = token_payload(r, kStart + 600);
    EXPECT_NE(payload.find("\"iat\":1700000600,\"exp\":1700000690,"), std::string::npos) << payload;
}

TEST(DispatchTest, SystemJobTokenHasNoSubAndTheSystemRole) {
    ClaimedJob j = user_job();
    j.user_id.reset();
    j.user_role.reset();
    j.user_email.reset();
    HttpRequest r;
    ASSERT_FALSE(build_request(j, mint(), 1, r).has_value());
    std::string payload = token_payload(r);
    EXPECT_EQ(payload.find("\"sub\""), std::string::npos);
    EXPECT_NE(payload.find("\"role\":\"service_role\""), std::string::npos);
    EXPECT_EQ(payload.find("\"email\""), std::string::npos);
    // A system job's token still says which attempt it acts for.
    EXPECT_NE(
        payload.find("\"job\":{\"id\":\"" + j.id + "\",\"name\":\"send-email\",\"attempt\":3}"),
        std::string::npos)
        << payload;
}

TEST(DispatchTest, EmptyBodyIsSentAsEmptyObject) {
    ClaimedJob j = user_job();
    j.body.clear();
    HttpRequest r;
    ASSERT_FALSE(build_request(j, mint(), 1, r).has_value());
    EXPECT_EQ(r.body, "{}");
}

TEST(DispatchTest, RefusesWhatMustNotBeSent) {
    HttpRequest r;
    ClaimedJob no_url = user_job();
    no_url.url.reset();
    EXPECT_NE(build_request(no_url, mint(), 1, r).value_or("").find("has no url"),
              std::string::npos);

    ClaimedJob file_url = user_job();
    file_url.url = "file:///etc/passwd";
    EXPECT_TRUE(build_request(file_url, mint(), 1, r).has_value());

    ClaimedJob injected = user_job();
    injected.headers = {"X-Evil: a\r\nHost: attacker"};
    EXPECT_TRUE(build_request(injected, mint(), 1, r).has_value());

    ClaimedJob bad_name = user_job();
    bad_name.job_name = "a\nb";
    EXPECT_TRUE(build_request(bad_name, mint(), 1, r).has_value());

    MintContext weak = mint();
    std::string short_secret(31, 'k');
    weak.secret = short_secret;
    std::optional<std::string> error = build_request(user_job(), weak, 1, r);
    ASSERT_TRUE(error.has_value());
    EXPECT_NE(error->find("32 bytes"), std::string::npos);
    EXPECT_EQ(error->find(short_secret), std::string::npos);  // never echoes the secret
}

TEST(DispatchTest, SuccessKeepsTheWholeBodyForPostgresToJudge) {
    HttpResult res;
    res.status = 200;
    res.body = "{\"sent\":true}";
    res.duration_ms = 4.5;
    Outcome o = outcome_from_result(user_job(), res);
    EXPECT_EQ(o.status, 200);
    EXPECT_TRUE(o.error.empty());
    EXPECT_EQ(o.response.value_or(""), "{\"sent\":true}");
    EXPECT_DOUBLE_EQ(o.duration_ms, 4.5);
    EXPECT_EQ(o.attempt, 3);

    // Whether jsonb takes it is decided when it is recorded (json_body.hpp).
    res.body = "plain text";
    EXPECT_EQ(outcome_from_result(user_job(), res).response.value_or(""), "plain text");
    res.body = "{\"a\":1}";
    res.body_truncated = true;
    EXPECT_FALSE(outcome_from_result(user_job(), res).response.has_value());
    res.body_truncated = false;
    res.body.clear();
    EXPECT_FALSE(outcome_from_result(user_job(), res).response.has_value());
}

TEST(DispatchTest, FailuresSayWhy) {
    HttpResult res;
    res.status = 500;
    res.body = "boom";
    Outcome o = outcome_from_result(user_job(), res);
    EXPECT_EQ(o.error, "HTTP 500: boom");
    EXPECT_FALSE(o.response.has_value());

    res.status = 302;
    res.body.clear();
    EXPECT_EQ(outcome_from_result(user_job(), res).error, "HTTP 302 (redirects are not followed)");

    res.status = 0;
    res.body.clear();
    res.error = "connection refused";
    res.error_detail = "Failed to connect to 10.1.2.3 port 56119 after 0 ms: Connection refused";
    o = outcome_from_result(user_job(), res);
    EXPECT_EQ(o.error, "connection refused");  // never where the job was sent
    EXPECT_EQ(o.error_detail, res.error_detail);

    res.error.clear();
    EXPECT_EQ(outcome_from_result(user_job(), res).error, "no response");
}

TEST(DispatchTest, RetryAfterOnlyFor429And503) {
    HttpResult res;
    res.status = 429;
    res.retry_after_ms = 7000;
    EXPECT_EQ(outcome_from_result(user_job(), res).retry_after_ms.value_or(-1), 7000);
    res.status = 503;
    EXPECT_EQ(outcome_from_result(user_job(), res).retry_after_ms.value_or(-1), 7000);
    res.status = 500;
    EXPECT_FALSE(outcome_from_result(user_job(), res).retry_after_ms.has_value());
}

TEST(DispatchTest, SanitizeTextYieldsValidUtf8WithoutNul) {
    EXPECT_EQ(sanitize_text("ok", 10), "ok");
    EXPECT_EQ(sanitize_text(std::string("a\0b", 3), 10),
              "a\xEF\xBF\xBD"
              "b");
    EXPECT_EQ(sanitize_text("\xFF", 10), "\xEF\xBF\xBD");
    EXPECT_EQ(sanitize_text("\xC3\xA9", 10), "\xC3\xA9");  // é kept
    EXPECT_EQ(sanitize_text("\xED\xA0\x80", 10),
              "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
    EXPECT_EQ(sanitize_text("ab\xC3\xA9", 3), "ab");    // never cuts a character
    std::string big(10000, 'x');
    EXPECT_EQ(sanitize_text(big, 200).size(), 200u);
}

}  // namespace
}  // namespace jobrunner
