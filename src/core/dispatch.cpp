/*
 * dispatch.cpp — request building and outcome mapping for one attempt.
 */
#include "core/dispatch.hpp"

#include "core/jwt.hpp"
#include "core/text_checks.hpp"
#include "core/utf8.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace jobrunner {

// Slack between an attempt's timeout and its token's expiry.
constexpr std::int64_t kTokenSlackS = 60;
// Connect timeout: short, but never longer than the attempt itself.
constexpr long kConnectTimeoutMs = 10000;
// How much of an error response body is kept in last_error.
constexpr std::size_t kErrorBodyBytes = 200;
// "00-" + 32 hex + "-" + 16 hex + "-" + 2 hex.
constexpr std::size_t kTraceparentChars = 55;

namespace {

// Who the token speaks for (the job's user, or the system role) and which
// attempt it was minted for; iat and exp are set when the request starts.
UserClaims claims_for(const ClaimedJob &job, std::string_view system_role) {
    UserClaims claims;
    claims.sub = job.user_id;
    claims.role = job.user_role && !job.user_id ? std::string(system_role)
                  : job.user_role               ? *job.user_role
                                                : std::string(system_role);
    if (job.user_id) claims.email = job.user_email;
    // Attempt numbers never repeat for a job, so this is unique per attempt.
    claims.jti = job.id + "/" + std::to_string(job.attempt);
    claims.job = JobClaim{job.id, job.job_name, job.attempt};
    return claims;
}

// A span id of the attempt's own: the first 8 bytes of
// SHA-256("<job id>/<attempt>"), in hex. Attempt numbers never repeat for a
// job, so every attempt is a distinct span of the trace it was queued in.
std::string attempt_span_id(const ClaimedJob &job) {
    const std::string key = job.id + "/" + std::to_string(job.attempt);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (!EVP_Digest(key.data(), key.size(), digest, &length, EVP_sha256(), nullptr)) {
        throw std::runtime_error("SHA-256 of the attempt failed");
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string span;
    bool all_zero = true;
    for (int i = 0; i < 8; ++i) {
        span.push_back(kHex[digest[i] >> 4]);
        span.push_back(kHex[digest[i] & 0x0F]);
        all_zero = all_zero && digest[i] == 0;
    }
    if (all_zero) span.back() = '1';  // an all-zero span id is invalid
    return span;
}

}  // namespace

std::optional<std::string> build_request(const ClaimedJob &job, const MintContext &mint,
                                         std::uint64_t tag, HttpRequest &out) {
    if (!job.url) {
        return std::string("job \"") + job.job_name +
               "\" has no url: set job_config.url or jobrunner.base_url";
    }
    if (!is_allowed_url(*job.url)) {
        return "url of job \"" + job.job_name + "\" is not an allowed http(s) URL";
    }
    if (mint.secret.size() < kMinSecretBytes) {
        return "signing secret is missing or shorter than " + std::to_string(kMinSecretBytes) +
               " bytes: set jobrunner.jwt_secret";
    }
    for (const std::string &h : job.headers) {
        std::size_t colon = h.find(':');
        std::string_view name(h.data(), colon == std::string::npos ? h.size() : colon);
        std::string_view value =
            colon == std::string::npos ? std::string_view() : std::string_view(h).substr(colon + 1);
        if (colon == std::string::npos || !is_valid_header_name(name) ||
            !is_safe_header_value(value)) {
            return "job_config headers of job \"" + job.job_name + "\" contain an unsafe header";
        }
    }
    if (!is_valid_job_name(job.job_name)) {
        return "job name is not safe to send";
    }

    UserClaims claims = claims_for(job, mint.system_role);
    // Rounded down: the token never outlives the attempt plus the slack.
    std::int64_t lifetime_s = job.timeout_ms / 1000 + kTokenSlackS;

    out.tag = tag;
    out.url = *job.url;
    out.body = job.body.empty() ? "{}" : job.body;
    out.timeout_ms = static_cast<long>(job.timeout_ms < 1 ? 1 : job.timeout_ms);
    out.connect_timeout_ms = std::min<long>(kConnectTimeoutMs, out.timeout_ms);
    out.headers.clear();
    out.headers.reserve(8 + job.headers.size());
    out.headers.emplace_back("Content-Type: application/json");
    // Minted as the request starts (it may wait for a free slot first).
    out.header_at_start = [claims = std::move(claims), secret = std::string(mint.secret),
                           lifetime_s](std::int64_t now_s) mutable {
        claims.iat = now_s;
        claims.exp = now_s + lifetime_s;
        return "Authorization: Bearer " + sign_hs256(encode_claims(claims), secret);
    };
    out.headers.emplace_back("X-Job: true");
    out.headers.emplace_back("X-Correlation-ID: " + job.id);
    out.headers.emplace_back("X-Job-Name: " + job.job_name);
    out.headers.emplace_back("X-Job-Attempt: " + std::to_string(job.attempt));
    out.headers.emplace_back("Idempotency-Key: " + job.id);
    // The queueing request's trace (version-traceid-parentid-flags, checked
    // at enqueue), continued by a span of this attempt.
    if (job.traceparent && job.traceparent->size() == kTraceparentChars) {
        out.headers.emplace_back("traceparent: 00-" + job.traceparent->substr(3, 32) + "-" +
                                 attempt_span_id(job) + "-" + job.traceparent->substr(53, 2));
        if (job.tracestate && is_safe_header_value(*job.tracestate)) {
            out.headers.emplace_back("tracestate: " + *job.tracestate);
        }
    }
    for (const std::string &h : job.headers) out.headers.push_back(h);
    return std::nullopt;
}

std::string sanitize_text(std::string_view bytes, std::size_t max_bytes) {
    static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
    std::string out;
    out.reserve(std::min(bytes.size(), max_bytes));
    std::size_t i = 0;
    while (i < bytes.size()) {
        const auto c = static_cast<unsigned char>(bytes[i]);
        std::size_t len = 1;
        bool valid = c != 0;
        if (c >= 0x80) {
            const Utf8Step step = decode_utf8(bytes, i);
            len = step.length;
            valid = step.valid;
        }
        std::string_view piece = valid ? bytes.substr(i, len) : kReplacement;
        if (out.size() + piece.size() > max_bytes) break;
        out.append(piece);
        i += len;
    }
    return out;
}

Outcome outcome_from_result(const ClaimedJob &job, const HttpResult &result) {
    Outcome o;
    o.id = job.id;
    o.attempt = job.attempt;
    o.status = static_cast<int>(result.status);
    o.duration_ms = result.duration_ms;
    if (result.status >= 200 && result.status <= 299) {
        // Whether it is JSON a jsonb column takes, Postgres decides when the
        // outcome is recorded (src/pg/json_body.hpp); a cut body never is.
        if (!result.body_truncated && !result.body.empty()) o.response = result.body;
        return o;
    }
    if (result.status == 0) {
        // Only the engine's class of failure: its detail names the endpoint.
        o.error = sanitize_text(result.error.empty() ? "no response" : result.error, 500);
        o.error_detail = sanitize_text(result.error_detail, 500);
        return o;
    }
    o.error = "HTTP " + std::to_string(result.status);
    if (result.status >= 300 && result.status <= 399) {
        o.error += " (redirects are not followed)";
    }
    std::string snippet = sanitize_text(result.body, kErrorBodyBytes);
    if (!snippet.empty()) o.error += ": " + snippet;
    if (result.status == 429 || result.status == 503) o.retry_after_ms = result.retry_after_ms;
    return o;
}

Outcome outcome_from_error(const ClaimedJob &job, std::string error) {
    Outcome o;
    o.id = job.id;
    o.attempt = job.attempt;
    o.error = std::move(error);
    return o;
}

}  // namespace jobrunner
