/*
 * jwt.cpp — HS256 compact JWS: base64url, HMAC-SHA256, claim serialization
 * and signing.
 *
 * Pure C++: no Postgres headers. HMAC comes from OpenSSL libcrypto through
 * the one-shot HMAC() call, which is not deprecated in OpenSSL 3.
 */
#include "core/jwt.hpp"
#include "core/utf8.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>

namespace jobrunner {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// The one header we mint with, serialized exactly as the contract states.
constexpr std::string_view kHeaderJson = R"({"alg":"HS256","typ":"JWT"})";

constexpr std::size_t kHmacBytes = 32;
constexpr std::size_t kSha256BlockBytes = 64;

// Appends one UTF-8 encoded code point U+FFFD (the replacement character).
void append_replacement(std::string &out) { out.append("\xEF\xBF\xBD"); }

// Appends a \u00XX escape for a control byte.
void append_control_escape(std::string &out, unsigned char c) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.append("\\u00");
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0x0F]);
}

// Escapes one ASCII byte as JSON requires (quotes, backslash, controls).
void append_ascii(std::string &out, unsigned char c) {
    switch (c) {
        case '"':
            out.append("\\\"");
            return;
        case '\\':
            out.append("\\\\");
            return;
        case '\b':
            out.append("\\b");
            return;
        case '\f':
            out.append("\\f");
            return;
        case '\n':
            out.append("\\n");
            return;
        case '\r':
            out.append("\\r");
            return;
        case '\t':
            out.append("\\t");
            return;
        default:
            break;
    }
    if (c < 0x20) {
        append_control_escape(out, c);
    } else {
        out.push_back(static_cast<char>(c));
    }
}

// Computes HMAC-SHA256 into a fixed array; throws if libcrypto fails.
std::array<unsigned char, kHmacBytes> hmac_raw(std::string_view key, std::string_view data) {
    // Keys longer than the block size are hashed first (RFC 2104); doing it
    // here gives the same MAC and keeps the length within HMAC()'s int.
    unsigned char hashed_key[SHA256_DIGEST_LENGTH];
    if (key.size() > kSha256BlockBytes) {
        if (!EVP_Digest(key.data(), key.size(), hashed_key, nullptr, EVP_sha256(), nullptr)) {
            throw std::runtime_error("SHA-256 of the HMAC key failed");
        }
        key = std::string_view(reinterpret_cast<const char *>(hashed_key), sizeof hashed_key);
    }
    static const unsigned char kEmpty = 0;
    const void *key_ptr = key.empty() ? &kEmpty : static_cast<const void *>(key.data());
    const auto *data_ptr =
        data.empty() ? &kEmpty : reinterpret_cast<const unsigned char *>(data.data());
    std::array<unsigned char, kHmacBytes> mac{};
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), key_ptr, static_cast<int>(key.size()), data_ptr, data.size(),
              mac.data(), &mac_len) ||
        mac_len != kHmacBytes) {
        OPENSSL_cleanse(hashed_key, sizeof hashed_key);
        throw std::runtime_error("HMAC-SHA256 failed");
    }
    OPENSSL_cleanse(hashed_key, sizeof hashed_key);
    return mac;
}

// base64url(header) "." base64url(payload): the bytes the MAC covers.
std::string signing_input(std::string_view header_b64, std::string_view payload_json) {
    std::string out(header_b64);
    out.push_back('.');
    out.append(base64url_encode(payload_json));
    return out;
}

// Appends "." base64url(HMAC(signing input)) to complete a token.
std::string finish_token(std::string input, std::string_view secret) {
    const auto mac = hmac_raw(secret, input);
    input.push_back('.');
    input.append(
        base64url_encode(std::string_view(reinterpret_cast<const char *>(mac.data()), mac.size())));
    return input;
}

// Appends "key": and a JSON string value; the keys are fixed ASCII names.
void append_string_member(std::string &out, std::string_view key, std::string_view value) {
    if (out.size() > 1) out.push_back(',');
    out.push_back('"');
    out.append(key);
    out.append("\":");
    append_json_string(out, value);
}

// Appends "key": and a JSON integer value.
void append_int_member(std::string &out, std::string_view key, std::int64_t value) {
    if (out.size() > 1) out.push_back(',');
    out.push_back('"');
    out.append(key);
    out.append("\":");
    out.append(std::to_string(value));
}

// Appends "key": and an already-serialized JSON value.
void append_raw_member(std::string &out, std::string_view key, std::string_view json) {
    if (out.size() > 1) out.push_back(',');
    out.push_back('"');
    out.append(key);
    out.append("\":");
    out.append(json);
}

// {"id":..,"name":..,"attempt":..}: the attempt the token acts for.
std::string encode_job_claim(const JobClaim &job) {
    std::string out = "{";
    append_string_member(out, "id", job.id);
    append_string_member(out, "name", job.name);
    append_int_member(out, "attempt", job.attempt);
    out.push_back('}');
    return out;
}

}  // namespace

// JWS segments must be URL-safe and unpadded (RFC 7515 section 2).
std::string base64url_encode(std::string_view data) {
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(data[k]); };
    for (; i + 3 <= data.size(); i += 3) {
        const std::uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        out.push_back(kAlphabet[(v >> 18) & 63]);
        out.push_back(kAlphabet[(v >> 12) & 63]);
        out.push_back(kAlphabet[(v >> 6) & 63]);
        out.push_back(kAlphabet[v & 63]);
    }
    const std::size_t rest = data.size() - i;
    if (rest == 0) return out;
    std::uint32_t v = byte(i) << 16;
    if (rest == 2) v |= byte(i + 1) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    if (rest == 2) out.push_back(kAlphabet[(v >> 6) & 63]);
    return out;
}

// Claim values come from users; whatever bytes they hold, the output must be
// one valid JSON string literal.
void append_json_string(std::string &out, std::string_view s) {
    out.reserve(out.size() + s.size() + 2);
    out.push_back('"');
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            append_ascii(out, c);
            ++i;
            continue;
        }
        const Utf8Step step = decode_utf8(s, i);
        if (!step.valid) {
            append_replacement(out);
        } else if (step.code_point == 0x2028 || step.code_point == 0x2029) {
            // Legal in JSON, but not in JavaScript source before ES2019.
            out.append(step.code_point == 0x2028 ? "\\u2028" : "\\u2029");
        } else {
            out.append(s.substr(i, step.length));
        }
        i += step.length;
    }
    out.push_back('"');
}

// The canonical signer: every token we mint carries the same header.
std::string sign_hs256(std::string_view payload_json, std::string_view secret) {
    static const std::string header_b64 = base64url_encode(kHeaderJson);
    return finish_token(signing_input(header_b64, payload_json), secret);
}

// Fixed key order keeps tokens byte-for-byte reproducible in tests.
std::string encode_claims(const UserClaims &claims) {
    std::string out = "{";
    if (claims.sub) append_string_member(out, "sub", *claims.sub);
    append_string_member(out, "role", claims.role);
    append_string_member(out, "aud", claims.role);
    if (claims.email) append_string_member(out, "email", *claims.email);
    append_int_member(out, "iat", claims.iat);
    append_int_member(out, "exp", claims.exp);
    if (claims.jti) append_string_member(out, "jti", *claims.jti);
    if (claims.job) append_raw_member(out, "job", encode_job_claim(*claims.job));
    out.push_back('}');
    return out;
}

}  // namespace jobrunner
