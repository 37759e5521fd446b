/*
 * text_checks_test.cpp — GoogleTest cases for src/core/text_checks.cpp:
 * URL, header and job-name validation, accepted and refused inputs.
 */
#include "core/text_checks.hpp"

#include <gtest/gtest.h>

#include <string>

namespace jobrunner {
namespace {

// Printable form of a test input, so failures show control bytes.
std::string show(std::string_view s) {
    std::string out;
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c >= 0x7F) {
            static constexpr char kHex[] = "0123456789abcdef";
            out += "\\x";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 0x0F]);
        } else {
            out.push_back(ch);
        }
    }
    return out.size() > 120 ? out.substr(0, 120) + "..." : out;
}

// --- is_allowed_url --------------------------------------------------------

TEST(Url, AcceptsPlainHttpAndHttps) {
    const char *good[] = {
        "http://example.com",
        "https://example.com/",
        "https://example.com/functions/v1/send-email",
        "http://localhost:8080/jobs/run?x=1&y=2#frag",
        "HTTPS://Example.COM/Path",
        "HtTp://a",
        "http://127.0.0.1:54321/functions/v1/x",
        "http://[::1]:8080/",
        "http://[2001:db8::7]/x",
        "https://sub.domain-with-dash.example_host.io:443/a/b%20c",
        "http://example.com?q=1",
        "http://example.com#top",
    };
    for (const char *url : good) EXPECT_TRUE(is_allowed_url(url)) << url;
}

TEST(Url, RefusesOtherSchemes) {
    const char *bad[] = {
        "javascript:alert(1)",
        "javascript://example.com/%0aalert(1)",
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "ftp://example.com/x",
        "gopher://example.com:70/",
        "dict://127.0.0.1:11211/",
        "ldap://example.com",
        "data:text/plain,hi",
        "httpx://example.com",
        "https:/example.com",
        "http:example.com",
        "//example.com/x",
        "/relative/path",
        "example.com",
        "",
    };
    for (const char *url : bad) EXPECT_FALSE(is_allowed_url(url)) << url;
}

TEST(Url, RefusesMissingOrMalformedHost) {
    const char *bad[] = {
        "http://",
        "https://",
        "http:///path",
        "http://:8080/",
        "http://?q=1",
        "http://#x",
        "http://example.com:/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:123456/",
        "http://example.com:80a/",
        "http://example.com:-1/",
        "http://[::1/",
        "http://[]/",
        "http://[example.com]/",
        "http://[::1]x/",
        "http://exa%6dple.com/",
        "http://exa\\mple.com/",
        "http://example.com\\@evil.com/",
        "http://a:b:c/",
    };
    for (const char *url : bad) EXPECT_FALSE(is_allowed_url(url)) << url;
}

TEST(Url, RefusesUserinfo) {
    const char *bad[] = {
        "http://user@example.com/",        "http://user:pass@example.com/",
        "https://example.com@evil.com/",   "http://@example.com/",
        "http://trusted.com:80@evil.com/",
    };
    for (const char *url : bad) EXPECT_FALSE(is_allowed_url(url)) << url;
    // An '@' after the authority is an ordinary path or query byte.
    EXPECT_TRUE(is_allowed_url("http://example.com/users/@me?mail=a@b.c"));
}

TEST(Url, RefusesWhitespaceAndControls) {
    const std::string bad[] = {
        " http://example.com/",       "http://example.com/ ",
        "http://exa mple.com/",       "http://example.com/a b",
        "http://example.com/\tx",     "http://example.com/\r\nHost: evil",
        "http://example.com/\n",      std::string("http://example.com/\0x", 21),
        "http://example.com/\x7f",    "http://example.com/\x1b",
        "http://ex\xc3\xa4mple.com/", "http://example.com/\xe2\x80\xa8",
    };
    for (const auto &url : bad) EXPECT_FALSE(is_allowed_url(url)) << show(url);
}

TEST(Url, LengthLimitIs2048Bytes) {
    const std::string prefix = "https://example.com/";
    const std::string at_limit = prefix + std::string(2048 - prefix.size(), 'a');
    ASSERT_EQ(at_limit.size(), 2048u);
    EXPECT_TRUE(is_allowed_url(at_limit));
    EXPECT_FALSE(is_allowed_url(at_limit + "a"));
}

// --- is_valid_header_name -----------------------------------------------

TEST(HeaderName, AcceptsTokens) {
    const char *good[] = {"X-Api-Key", "apikey",          "Content-Type",
                          "x",         "X_Custom.Header", "!#$%&'*+-.^_`|~09AZaz"};
    for (const char *name : good) EXPECT_TRUE(is_valid_header_name(name)) << name;
    EXPECT_TRUE(is_valid_header_name(std::string(256, 'h')));
}

TEST(HeaderName, RefusesSeparatorsAndControls) {
    const std::string bad[] = {
        "",          "X Api",
        "X-Api:",    "X-Api: v",
        "X\r\nEvil", "X\n",
        "X\t",       "(x)",
        "<x>",       "x@y",
        "x,y",       "x;y",
        "x=y",       "x\"y",
        "x/y",       "x[y]",
        "x?",        "x{y}",
        "x\\y",      "\x7f",
        "h\xc3\xa9", std::string("x\0", 2),
    };
    for (const auto &name : bad) EXPECT_FALSE(is_valid_header_name(name)) << show(name);
    EXPECT_FALSE(is_valid_header_name(std::string(257, 'h')));
}

// --- is_safe_header_value -----------------------------------------------

TEST(HeaderValue, AcceptsOrdinaryValues) {
    const std::string good[] = {
        "",
        "application/json",
        "Bearer abc.def.ghi",
        "a value with spaces",
        "tab\tinside",
        "caf\xc3\xa9",
        "\"quoted\"; q=0.5",
    };
    for (const auto &v : good) EXPECT_TRUE(is_safe_header_value(v)) << show(v);
    EXPECT_TRUE(is_safe_header_value(std::string(8192, 'v')));
}

TEST(HeaderValue, RefusesInjection) {
    const std::string bad[] = {
        "v\r\nX-Injected: 1",
        "v\nX-Injected: 1",
        "v\rX-Injected: 1",
        "\r\n\r\nGET / HTTP/1.1",
        "trailing\r\n",
        "\n",
        "\r",
        std::string("before\0after", 12),
        std::string(1, '\0'),
    };
    for (const auto &v : bad) EXPECT_FALSE(is_safe_header_value(v)) << show(v);
    EXPECT_FALSE(is_safe_header_value(std::string(8193, 'v')));
}

// --- is_valid_job_name ----------------------------------------------------

TEST(JobName, AcceptsSafeAlphabet) {
    const char *good[] = {"send-email", "a", "Z", "0", "report.daily_v2", "..a", "_-."};
    for (const char *name : good) EXPECT_TRUE(is_valid_job_name(name)) << name;
    EXPECT_TRUE(is_valid_job_name(std::string(128, 'j')));
}

TEST(JobName, RefusesEverythingElse) {
    const std::string bad[] = {
        "",
        "send email",
        "send/email",
        "../etc",
        "a?b",
        "a#b",
        "a%2f",
        "job\r\n",
        "job\n",
        "j\xc3\xa9",
        "a:b",
        "a@b",
        "a+b",
        "a~b",
        std::string("a\0b", 3),
        // Only dots: "." or ".." as a path segment would leave base_url's path.
        ".",
        "..",
        "...",
    };
    for (const auto &name : bad) EXPECT_FALSE(is_valid_job_name(name)) << show(name);
    EXPECT_FALSE(is_valid_job_name(std::string(129, 'j')));
}

}  // namespace
}  // namespace jobrunner
