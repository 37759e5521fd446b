/*
 * jwt.hpp — HS256 compact JWS (RFC 7515 / RFC 7519) for per-user tokens.
 *
 * Pure C++: no Postgres headers. The SQL functions and the worker both mint
 * through sign_hs256(), so there is exactly one signer. Nothing here verifies
 * or decodes tokens: the product never needs to (test/unit/jwt_reference.hpp
 * does, for the tests).
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace jobrunner {

// Secrets shorter than this are refused: HS256 keys must carry 256 bits.
constexpr std::size_t kMinSecretBytes = 32;

// base64url without padding (RFC 4648 section 5).
std::string base64url_encode(std::string_view data);

// Appends s as a JSON string literal (quotes included), escaping quotes,
// backslashes and control characters; valid UTF-8 passes through unchanged,
// invalid bytes become U+FFFD so the token is always valid JSON.
void append_json_string(std::string &out, std::string_view s);

// Signs an already-serialized JSON claims object:
// base64url(header) "." base64url(payload) "." base64url(HMAC).
std::string sign_hs256(std::string_view payload_json, std::string_view secret);

// The job attempt a token was minted for: lets an endpoint tell "acting for
// this attempt" from "the user acting for herself".
struct JobClaim {
    std::string id;
    std::string name;
    std::int64_t attempt = 0;
};

// The claims of a token minted for a job's user.
struct UserClaims {
    std::optional<std::string> sub;  // absent for system jobs
    std::string role;                // also used as "aud"
    std::optional<std::string> email;
    std::int64_t iat = 0;  // seconds since the epoch
    std::int64_t exp = 0;
    std::optional<std::string> jti;  // "<job id>/<attempt>"; only job tokens
    std::optional<JobClaim> job;     // only job tokens
};

// {"sub":..,"role":..,"aud":..,"email":..,"iat":..,"exp":..,"jti":..,
// "job":{"id":..,"name":..,"attempt":..}}; absent optionals are omitted.
std::string encode_claims(const UserClaims &claims);

}  // namespace jobrunner
