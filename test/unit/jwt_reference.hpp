/*
 * jwt_reference.hpp — what the unit tests check tokens with: a strict
 * base64url decoder, HMAC-SHA256 straight from OpenSSL, a signer for
 * arbitrary header bytes (RFC 7515's vector has a header we never mint) and
 * a verifier. The product only signs, through core/jwt.hpp; these live here
 * so that signing is checked against code that is not the signer.
 */
#pragma once

#include "core/jwt.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <optional>
#include <string>
#include <string_view>

namespace jobrunner::reference {

// Decodes unpadded or correctly padded base64url; nullopt on a foreign
// character, an impossible length or non-zero leftover bits, so every byte
// string has exactly one accepted spelling.
inline std::optional<std::string> base64url_decode(std::string_view text) {
    std::size_t pad = 0;
    while (pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
    if (pad > 0 && (pad > 2 || text.size() % 4 != 0)) return std::nullopt;
    text.remove_suffix(pad);
    if (text.size() % 4 == 1) return std::nullopt;
    std::string out;
    unsigned acc = 0;
    int bits = 0;
    for (const char ch : text) {
        int v;
        if (ch >= 'A' && ch <= 'Z') {
            v = ch - 'A';
        } else if (ch >= 'a' && ch <= 'z') {
            v = ch - 'a' + 26;
        } else if (ch >= '0' && ch <= '9') {
            v = ch - '0' + 52;
        } else if (ch == '-') {
            v = 62;
        } else if (ch == '_') {
            v = 63;
        } else {
            return std::nullopt;
        }
        acc = ((acc << 6) | static_cast<unsigned>(v)) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

// The raw 32-byte HMAC-SHA256 of data under key.
inline std::string hmac_sha256(std::string_view key, std::string_view data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    static const unsigned char kEmpty = 0;
    HMAC(EVP_sha256(), key.empty() ? &kEmpty : static_cast<const void *>(key.data()),
         static_cast<int>(key.size()),
         data.empty() ? &kEmpty : reinterpret_cast<const unsigned char *>(data.data()), data.size(),
         mac, &len);
    return std::string(reinterpret_cast<const char *>(mac), len);
}

// base64url(header) "." base64url(payload) "." base64url(HMAC), for any
// header bytes.
inline std::string sign_hs256_raw(std::string_view header_json, std::string_view payload_json,
                                  std::string_view secret) {
    std::string input = base64url_encode(header_json) + "." + base64url_encode(payload_json);
    return input + "." + base64url_encode(hmac_sha256(secret, input));
}

// True when token is three non-empty unpadded base64url segments whose
// signature is the HMAC of the first two under secret (compared in constant
// time).
inline bool verify_hs256(std::string_view token, std::string_view secret) {
    if (token.find('=') != std::string_view::npos) return false;
    const std::size_t dot1 = token.find('.');
    if (dot1 == std::string_view::npos || dot1 == 0) return false;
    const std::size_t dot2 = token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || dot2 == dot1 + 1) return false;
    if (token.find('.', dot2 + 1) != std::string_view::npos) return false;
    if (!base64url_decode(token.substr(0, dot1)) ||
        !base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1))) {
        return false;
    }
    const auto given = base64url_decode(token.substr(dot2 + 1));
    if (!given || given->size() != 32) return false;
    const std::string expected = hmac_sha256(secret, token.substr(0, dot2));
    return CRYPTO_memcmp(expected.data(), given->data(), 32) == 0;
}

}  // namespace jobrunner::reference
