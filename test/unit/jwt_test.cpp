/*
 * jwt_test.cpp — GoogleTest cases for src/core/jwt.cpp: RFC 7515 / RFC 4231 /
 * RFC 4648 vectors, verification of tampered tokens, and claim values that
 * try to break out of their JSON strings.
 */
#include "core/jwt.hpp"
#include "core/text_checks.hpp"
#include "json_reference.hpp"
#include "jwt_reference.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace jobrunner {
namespace {

// The secret our own tokens are signed with in these tests (>= 32 bytes).
const std::string kSecret = "0123456789abcdef0123456789abcdef";

// Hex rendering makes MAC mismatches readable in failure output.
std::string to_hex(const std::string &bytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0x0F]);
    }
    return out;
}

// Splits a token on '.' so tests can tamper with one segment.
std::vector<std::string> split_token(const std::string &token) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = token.find('.', start);
        parts.push_back(token.substr(start, dot - start));
        if (dot == std::string::npos) return parts;
        start = dot + 1;
    }
}

// Serializes a value alone, for exact-string expectations.
std::string json_string(std::string_view s) {
    std::string out;
    append_json_string(out, s);
    return out;
}

// --- RFC 7515 Appendix A.1 ------------------------------------------------

TEST(Jwt, Rfc7515AppendixA1) {
    const auto key = reference::base64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
    ASSERT_TRUE(key.has_value());
    ASSERT_EQ(key->size(), 64u);
    const std::string header = "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
    const std::string payload =
        "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
    const std::string token = reference::sign_hs256_raw(header, payload, *key);
    EXPECT_EQ(
        token,
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290"
        "Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    EXPECT_EQ(split_token(token).back(), "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    EXPECT_TRUE(reference::verify_hs256(token, *key));
}

// --- HMAC-SHA256, RFC 4231 -------------------------------------------------

TEST(Jwt, HmacRfc4231Case1) {
    EXPECT_EQ(to_hex(reference::hmac_sha256(std::string(20, '\x0b'), "Hi There")),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST(Jwt, HmacRfc4231Case2ShortKey) {
    EXPECT_EQ(to_hex(reference::hmac_sha256("Jefe", "what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Jwt, HmacRfc4231Case6KeyLongerThanBlock) {
    EXPECT_EQ(
        to_hex(reference::hmac_sha256(std::string(131, '\xaa'),
                                      "Test Using Larger Than Block-Size Key - Hash Key First")),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(Jwt, HmacEmptyKeyAndDataIsDefined) {
    // HMAC-SHA256("", "") — a well-known value.
    EXPECT_EQ(to_hex(reference::hmac_sha256("", "")),
              "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

// --- base64url --------------------------------------------------------------

TEST(Base64url, Rfc4648Vectors) {
    const std::pair<std::string, std::string> vectors[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    for (const auto &[plain, encoded] : vectors) {
        EXPECT_EQ(base64url_encode(plain), encoded) << plain;
        const auto decoded = reference::base64url_decode(encoded);
        ASSERT_TRUE(decoded.has_value()) << encoded;
        EXPECT_EQ(*decoded, plain);
    }
}

TEST(Base64url, DecodeAcceptsCompletePadding) {
    EXPECT_EQ(reference::base64url_decode("Zg=="), std::optional<std::string>("f"));
    EXPECT_EQ(reference::base64url_decode("Zm8="), std::optional<std::string>("fo"));
    EXPECT_EQ(reference::base64url_decode("Zm9vYmE="), std::optional<std::string>("fooba"));
}

TEST(Base64url, UsesUrlSafeAlphabet) {
    EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
    EXPECT_EQ(base64url_encode("\xfb\xef\xbe"), "----");
    EXPECT_EQ(base64url_encode("\xff\xff\xff"), "____");
    EXPECT_EQ(reference::base64url_decode("-_8"), std::optional<std::string>("\xfb\xff"));
}

TEST(Base64url, RoundTripsEveryLengthModThree) {
    std::mt19937 rng(42);
    for (std::size_t len = 0; len <= 96; ++len) {
        std::string data(len, '\0');
        for (auto &c : data) c = static_cast<char>(rng() & 0xFF);
        const std::string encoded = base64url_encode(data);
        EXPECT_EQ(encoded.size(), (len * 4 + 2) / 3) << "len " << len;
        EXPECT_EQ(encoded.find('='), std::string::npos);
        const auto decoded = reference::base64url_decode(encoded);
        ASSERT_TRUE(decoded.has_value()) << "len " << len;
        EXPECT_EQ(*decoded, data) << "len " << len;
    }
}

TEST(Base64url, RoundTripsAllByteValues) {
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
    EXPECT_EQ(reference::base64url_decode(base64url_encode(all)), std::optional<std::string>(all));
}

TEST(Base64url, DecodeRejectsBadInput) {
    const std::string bad[] = {
        "Zm9v+",     // standard alphabet, not URL-safe
        "Zm9v/A",    // standard alphabet
        "Zm 9v",     // space
        "Zm9v\n",    // newline
        "Z",         // length 1 mod 4 can encode nothing
        "Zm9vY",     // same, longer
        "Zg=",       // incomplete padding
        "Zg===",     // too much padding
        "Z=g=",      // padding inside
        "=",         // padding only
        "Zh",        // non-zero leftover bits ("Zg" is the one spelling of "f")
        "Zm9=",      // non-zero leftover bits, padded
        "\xc3\xa9",  // non-ASCII
        std::string("Zm\0v", 4),
    };
    for (const auto &text : bad) {
        EXPECT_FALSE(reference::base64url_decode(text).has_value()) << to_hex(text);
    }
}

// --- signing and verification ----------------------------------------------

TEST(Jwt, SignUsesCanonicalHeader) {
    const std::string token = sign_hs256("{\"a\":1}", kSecret);
    const auto parts = split_token(token);
    ASSERT_EQ(parts.size(), 3u);
    EXPECT_EQ(parts[0], "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    EXPECT_EQ(reference::base64url_decode(parts[0]),
              std::optional<std::string>("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"));
    EXPECT_EQ(reference::base64url_decode(parts[1]), std::optional<std::string>("{\"a\":1}"));
    EXPECT_EQ(token, reference::sign_hs256_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"a\":1}",
                                               kSecret));
    EXPECT_EQ(reference::base64url_decode(parts[2])->size(), 32u);
}

TEST(Jwt, SignatureMatchesIndependentHmac) {
    const std::string token = sign_hs256("{\"sub\":\"x\"}", kSecret);
    const std::size_t dot2 = token.rfind('.');
    EXPECT_EQ(token.substr(dot2 + 1),
              base64url_encode(reference::hmac_sha256(kSecret, token.substr(0, dot2))));
}

TEST(Jwt, SigningIsDeterministicAndKeyed) {
    EXPECT_EQ(sign_hs256("{}", kSecret), sign_hs256("{}", kSecret));
    EXPECT_NE(sign_hs256("{}", kSecret), sign_hs256("{}", kSecret + "x"));
    EXPECT_NE(sign_hs256("{}", kSecret), sign_hs256("{ }", kSecret));
}

TEST(Jwt, VerifyAcceptsOwnTokens) {
    UserClaims claims;
    claims.sub = "0b7f2f6e-8a39-4f39-9d0a-3c8b9e5c1a11";
    claims.role = "authenticated";
    claims.email = "ana@example.com";
    claims.iat = 1700000000;
    claims.exp = 1700000360;
    EXPECT_TRUE(reference::verify_hs256(sign_hs256(encode_claims(claims), kSecret), kSecret));
    EXPECT_TRUE(reference::verify_hs256(sign_hs256("{}", kSecret), kSecret));
}

TEST(Jwt, VerifyRejectsTamperedHeader) {
    const auto parts = split_token(sign_hs256("{\"role\":\"anon\"}", kSecret));
    const std::string none_header = base64url_encode("{\"alg\":\"none\",\"typ\":\"JWT\"}");
    EXPECT_FALSE(reference::verify_hs256(none_header + "." + parts[1] + "." + parts[2], kSecret));
}

TEST(Jwt, VerifyRejectsTamperedPayload) {
    const auto parts = split_token(sign_hs256("{\"role\":\"anon\"}", kSecret));
    const std::string forged = base64url_encode("{\"role\":\"service_role\"}");
    EXPECT_FALSE(reference::verify_hs256(parts[0] + "." + forged + "." + parts[2], kSecret));
}

TEST(Jwt, VerifyRejectsTamperedSignature) {
    const std::string token = sign_hs256("{\"role\":\"anon\"}", kSecret);
    ASSERT_TRUE(reference::verify_hs256(token, kSecret));
    for (std::size_t i = token.rfind('.') + 1; i < token.size(); ++i) {
        std::string forged = token;
        forged[i] = forged[i] == 'A' ? 'B' : 'A';
        EXPECT_FALSE(reference::verify_hs256(forged, kSecret)) << "position " << i;
    }
    EXPECT_FALSE(reference::verify_hs256(token.substr(0, token.size() - 1), kSecret));
    EXPECT_FALSE(reference::verify_hs256(token + "A", kSecret));
    EXPECT_FALSE(reference::verify_hs256(token + "=", kSecret));
    EXPECT_FALSE(reference::verify_hs256(token.substr(0, token.rfind('.') + 1), kSecret));
}

TEST(Jwt, VerifyRejectsWrongSecret) {
    const std::string token = sign_hs256("{\"role\":\"anon\"}", kSecret);
    EXPECT_FALSE(reference::verify_hs256(token, kSecret + "!"));
    EXPECT_FALSE(reference::verify_hs256(token, ""));
    EXPECT_FALSE(reference::verify_hs256(token, kSecret.substr(1)));
}

TEST(Jwt, VerifyRejectsWrongSegmentCount) {
    const std::string token = sign_hs256("{\"role\":\"anon\"}", kSecret);
    const auto parts = split_token(token);
    EXPECT_FALSE(reference::verify_hs256("", kSecret));
    EXPECT_FALSE(reference::verify_hs256(parts[0], kSecret));
    EXPECT_FALSE(reference::verify_hs256(parts[0] + "." + parts[1], kSecret));
    EXPECT_FALSE(reference::verify_hs256(token + ".", kSecret));
    EXPECT_FALSE(reference::verify_hs256(token + "." + parts[2], kSecret));
    EXPECT_FALSE(reference::verify_hs256("..", kSecret));
    EXPECT_FALSE(reference::verify_hs256("." + parts[1] + "." + parts[2], kSecret));
}

// --- claims -------------------------------------------------------------------

TEST(Claims, FullClaimSetInFixedOrder) {
    UserClaims c;
    c.sub = "u1";
    c.role = "authenticated";
    c.email = "a@b.c";
    c.iat = 1700000000;
    c.exp = 1700000360;
    EXPECT_EQ(encode_claims(c),
              "{\"sub\":\"u1\",\"role\":\"authenticated\",\"aud\":\"authenticated\","
              "\"email\":\"a@b.c\",\"iat\":1700000000,\"exp\":1700000360}");
}

TEST(Claims, SystemJobOmitsSubAndEmail) {
    UserClaims c;
    c.role = "service_role";
    c.iat = 0;
    c.exp = 60;
    EXPECT_EQ(encode_claims(c),
              "{\"role\":\"service_role\",\"aud\":\"service_role\",\"iat\":0,\"exp\":60}");
}

TEST(Claims, EmailWithoutSub) {
    UserClaims c;
    c.role = "r";
    c.email = "e";
    c.iat = -5;
    c.exp = 9223372036854775807;
    EXPECT_EQ(
        encode_claims(c),
        "{\"role\":\"r\",\"aud\":\"r\",\"email\":\"e\",\"iat\":-5,\"exp\":9223372036854775807}");
    EXPECT_TRUE(reference::is_valid_json(encode_claims(c)));
}

TEST(Claims, JobTokenNamesTheAttemptAfterExp) {
    UserClaims c;
    c.sub = "u1";
    c.role = "authenticated";
    c.email = "a@b.c";
    c.iat = 1700000000;
    c.exp = 1700000360;
    c.jti = "j1/3";
    c.job = JobClaim{"j1", "send-email", 3};
    EXPECT_EQ(encode_claims(c),
              "{\"sub\":\"u1\",\"role\":\"authenticated\",\"aud\":\"authenticated\","
              "\"email\":\"a@b.c\",\"iat\":1700000000,\"exp\":1700000360,\"jti\":\"j1/3\","
              "\"job\":{\"id\":\"j1\",\"name\":\"send-email\",\"attempt\":3}}");
}

TEST(Claims, WithoutJobFieldsTheClaimsAreThoseOfMintUserJwt) {
    // mint_user_jwt() fills only these: its tokens must not change.
    UserClaims c;
    c.sub = "u1";
    c.role = "authenticated";
    c.email = "a@b.c";
    c.iat = 1;
    c.exp = 2;
    EXPECT_FALSE(c.jti.has_value());
    EXPECT_FALSE(c.job.has_value());
    EXPECT_EQ(encode_claims(c),
              "{\"sub\":\"u1\",\"role\":\"authenticated\",\"aud\":\"authenticated\","
              "\"email\":\"a@b.c\",\"iat\":1,\"exp\":2}");
}

TEST(Claims, JobValuesStayInsideTheirStrings) {
    UserClaims c;
    c.role = "r";
    c.jti = "x\",\"sub\":\"admin";
    c.job = JobClaim{"i\"}", std::string("n\\\0\n", 4), -1};
    const std::string json = encode_claims(c);
    EXPECT_EQ(json,
              "{\"role\":\"r\",\"aud\":\"r\",\"iat\":0,\"exp\":0,"
              "\"jti\":\"x\\\",\\\"sub\\\":\\\"admin\","
              "\"job\":{\"id\":\"i\\\"}\",\"name\":\"n\\\\\\u0000\\n\",\"attempt\":-1}}");
    EXPECT_TRUE(reference::is_valid_json(json));
}

TEST(Claims, HostileValuesStayInsideTheirStrings) {
    UserClaims c;
    c.sub = std::string("x\",\"role\":\"service_role\0", 24);
    c.role = "a\\\"b\nc";
    c.email = "\r\n\t\b\f\x01\x1f\x7f/";
    c.iat = 1;
    c.exp = 2;
    const std::string json = encode_claims(c);
    EXPECT_EQ(json,
              "{\"sub\":\"x\\\",\\\"role\\\":\\\"service_role\\u0000\","
              "\"role\":\"a\\\\\\\"b\\nc\",\"aud\":\"a\\\\\\\"b\\nc\","
              "\"email\":\"\\r\\n\\t\\b\\f\\u0001\\u001f\x7f/\",\"iat\":1,\"exp\":2}");
    EXPECT_TRUE(reference::is_valid_json(json));
    EXPECT_TRUE(reference::verify_hs256(sign_hs256(json, kSecret), kSecret));
}

TEST(Claims, EveryByteValueYieldsValidJson) {
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
    UserClaims c;
    c.sub = all;
    c.role = all;
    c.email = all;
    EXPECT_TRUE(reference::is_valid_json(encode_claims(c)));
}

TEST(Claims, RandomBytesYieldValidJson) {
    std::mt19937 rng(7);
    for (int round = 0; round < 2000; ++round) {
        std::string s(rng() % 24, '\0');
        for (auto &ch : s) ch = static_cast<char>(rng() & 0xFF);
        UserClaims c;
        c.sub = s;
        c.role = "r";
        ASSERT_TRUE(reference::is_valid_json(encode_claims(c))) << to_hex(s);
    }
}

// --- append_json_string, exact output -------------------------------------

TEST(JsonString, EscapesQuotesBackslashAndShortForms) {
    EXPECT_EQ(json_string(""), "\"\"");
    EXPECT_EQ(json_string("plain"), "\"plain\"");
    EXPECT_EQ(json_string("\""), "\"\\\"\"");
    EXPECT_EQ(json_string("\\"), "\"\\\\\"");
    EXPECT_EQ(json_string("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"");
    EXPECT_EQ(json_string("/</script>"), "\"/</script>\"");
}

TEST(JsonString, EscapesOtherControlsAsUnicode) {
    EXPECT_EQ(json_string(std::string("\0", 1)), "\"\\u0000\"");
    EXPECT_EQ(json_string("\x01"), "\"\\u0001\"");
    EXPECT_EQ(json_string("\x0b"), "\"\\u000b\"");
    EXPECT_EQ(json_string("\x1b[0m"), "\"\\u001b[0m\"");
    EXPECT_EQ(json_string("\x1f"), "\"\\u001f\"");
    EXPECT_EQ(json_string("\x7f"), "\"\x7f\"");  // DEL is legal in JSON strings
}

TEST(JsonString, ValidUtf8PassesThrough) {
    EXPECT_EQ(json_string("caf\xc3\xa9"), "\"caf\xc3\xa9\"");            // é
    EXPECT_EQ(json_string("\xe2\x82\xac"), "\"\xe2\x82\xac\"");          // €
    EXPECT_EQ(json_string("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");  // U+1F600
    EXPECT_EQ(json_string("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"");  // U+10FFFF
    EXPECT_EQ(json_string("\xed\x9f\xbf"), "\"\xed\x9f\xbf\"");          // U+D7FF
    EXPECT_EQ(json_string("\xef\xbb\xbf"), "\"\xef\xbb\xbf\"");          // U+FEFF
}

TEST(JsonString, LineSeparatorsAreEscaped) {
    EXPECT_EQ(json_string("a\xe2\x80\xa8"
                          "b\xe2\x80\xa9"),
              "\"a\\u2028b\\u2029\"");
}

TEST(JsonString, InvalidUtf8BecomesReplacementCharacter) {
    const std::string r = "\xef\xbf\xbd";
    EXPECT_EQ(json_string("\x80"), "\"" + r + "\"");  // lone continuation
    EXPECT_EQ(json_string("a\xff"
                          "b"),
              "\"a" + r + "b\"");                                             // never valid
    EXPECT_EQ(json_string("\xc0\xaf"), "\"" + r + r + "\"");                  // overlong '/'
    EXPECT_EQ(json_string("\xe0\x80\xaf"), "\"" + r + r + r + "\"");          // overlong, 3 bytes
    EXPECT_EQ(json_string("\xed\xa0\x80"), "\"" + r + r + r + "\"");          // UTF-8 surrogate
    EXPECT_EQ(json_string("\xf4\x90\x80\x80"), "\"" + r + r + r + r + "\"");  // > U+10FFFF
    EXPECT_EQ(json_string("\xe2\x82"), "\"" + r + "\"");                      // truncated at end
    EXPECT_EQ(json_string("\xe2\x82"
                          "A"),
              "\"" + r + "A\"");  // truncated mid-text
    EXPECT_EQ(json_string("\xf0\x9f\x98"
                          "\""),
              "\"" + r + "\\\"\"");  // truncated before quote
    EXPECT_EQ(json_string("\xc3"), "\"" + r + "\"");
}

TEST(JsonString, AppendsWithoutClearing) {
    std::string out = "prefix:";
    append_json_string(out, "v");
    EXPECT_EQ(out, "prefix:\"v\"");
}

}  // namespace
}  // namespace jobrunner
