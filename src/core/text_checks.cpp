/*
 * text_checks.cpp — validation of untrusted text before it reaches a request
 * or a row: URLs, header names and values, job names, JSON bodies.
 *
 * Pure C++: no Postgres headers. Every check is a single pass with no
 * allocation, so it is safe to run on attacker-sized input.
 */
#include "core/text_checks.hpp"
#include "core/utf8.hpp"

#include <algorithm>
#include <bitset>
#include <cstddef>
#include <cstdint>

namespace jobrunner {

namespace {

constexpr std::size_t kMaxUrlBytes = 2048;
constexpr std::size_t kMaxHeaderNameBytes = 256;
constexpr std::size_t kMaxHeaderValueBytes = 8192;
constexpr std::size_t kMaxJobNameBytes = 128;
constexpr std::size_t kMaxJsonDepth = 512;

// ASCII-only helpers: <cctype> depends on the locale, these must not.
bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Scheme comparison is case-insensitive (RFC 3986 section 3.1).
bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (to_lower(s[i]) != prefix[i]) return false;
    }
    return true;
}

// A URL byte outside printable ASCII (space, controls, DEL, raw non-ASCII)
// is how request smuggling and look-alike hosts start; none is allowed.
bool is_printable_ascii(std::string_view s) {
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7F) return false;
    }
    return true;
}

// Registered names we accept: letters, digits and the unreserved marks.
bool is_reg_name(std::string_view host) {
    if (host.empty()) return false;
    for (const char c : host) {
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_' && c != '~') {
            return false;
        }
    }
    return true;
}

// "[...]" literals: hex digits, ':' and '.' (for embedded IPv4) only.
bool is_ip_literal(std::string_view host) {
    if (host.size() < 4 || host.front() != '[' || host.back() != ']') return false;
    bool has_colon = false;
    for (const char c : host.substr(1, host.size() - 2)) {
        if (c == ':') {
            has_colon = true;
        } else if (!is_hex(c) && c != '.') {
            return false;
        }
    }
    return has_colon;
}

// Ports are 1..65535 written as plain digits.
bool is_port(std::string_view port) {
    if (port.empty() || port.size() > 5) return false;
    long value = 0;
    for (const char c : port) {
        if (!is_digit(c)) return false;
        value = value * 10 + (c - '0');
    }
    return value >= 1 && value <= 65535;
}

// host[:port] with no userinfo; '\\' is refused because some parsers read it
// as '/', which would let two parsers disagree about the host.
bool is_authority(std::string_view authority) {
    if (authority.find('@') != std::string_view::npos) return false;
    if (authority.find('\\') != std::string_view::npos) return false;
    std::size_t host_end;
    if (!authority.empty() && authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos) return false;
        host_end = close + 1;
        if (!is_ip_literal(authority.substr(0, host_end))) return false;
    } else {
        host_end = authority.find(':');
        if (host_end == std::string_view::npos) host_end = authority.size();
        if (!is_reg_name(authority.substr(0, host_end))) return false;
    }
    if (host_end == authority.size()) return true;
    return authority[host_end] == ':' && is_port(authority.substr(host_end + 1));
}

// RFC 9110 section 5.6.2 tchar.
bool is_tchar(char c) {
    constexpr std::string_view kMarks = "!#$%&'*+-.^_`|~";
    return is_alpha(c) || is_digit(c) || kMarks.find(c) != std::string_view::npos;
}

// Validates one JSON text without recursion: containers are tracked in a
// fixed-size bitset (object or array per level), so memory never grows
// with the input.
// What numeric (and so jsonb) can hold, in decimal digits.
constexpr std::int64_t kMaxIntegerDigits = 131072;
constexpr std::int64_t kMaxFractionDigits = 16383;
constexpr std::int64_t kExponentCap = 10000000;

class JsonValidator {
public:
    explicit JsonValidator(std::string_view text) : s_(text) {}

    // Why a loop and not recursion: a hostile body must not be able to
    // exhaust the worker's stack.
    bool run() {
        skip_ws();
        for (;;) {
            const Start start = begin_value();
            if (start == Start::kFailed) return false;
            if (start == Start::kOpened) continue;
            if (!after_value()) return false;
            if (depth_ == 0) {
                skip_ws();
                return pos_ == s_.size();
            }
        }
    }

private:
    enum class Start { kFailed, kOpened, kDone };

    std::string_view s_;
    std::size_t pos_ = 0;
    std::size_t depth_ = 0;
    std::bitset<kMaxJsonDepth> is_object_;

    bool at_end() const { return pos_ >= s_.size(); }
    char peek() const { return s_[pos_]; }

    // Insignificant whitespace is exactly these four bytes (RFC 8259 section 2).
    void skip_ws() {
        while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
            ++pos_;
        }
    }

    // Consumes a literal word such as "true" if it is next.
    bool consume(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) return false;
        pos_ += word.size();
        return true;
    }

    // Starts the value at pos_: scalars are consumed whole (kDone); an empty
    // container is also kDone; a non-empty one is opened and, for objects,
    // its first key and ':' are consumed (kOpened).
    Start begin_value() {
        skip_ws();
        if (at_end()) return Start::kFailed;
        const char c = peek();
        if (c == '{' || c == '[') return open_container(c == '{');
        if (c == '"') return string() ? Start::kDone : Start::kFailed;
        if (c == 't') return consume("true") ? Start::kDone : Start::kFailed;
        if (c == 'f') return consume("false") ? Start::kDone : Start::kFailed;
        if (c == 'n') return consume("null") ? Start::kDone : Start::kFailed;
        return number() ? Start::kDone : Start::kFailed;
    }

    // Pushes a container level; the nesting limit is enforced here.
    Start open_container(bool object) {
        if (depth_ == kMaxJsonDepth) return Start::kFailed;
        ++pos_;
        skip_ws();
        if (!at_end() && peek() == (object ? '}' : ']')) {
            ++pos_;
            return Start::kDone;
        }
        is_object_[depth_++] = object;
        if (object && !member_key()) return Start::kFailed;
        return Start::kOpened;
    }

    // An object member begins with a string key and a colon.
    bool member_key() {
        skip_ws();
        if (at_end() || peek() != '"' || !string()) return false;
        skip_ws();
        if (at_end() || peek() != ':') return false;
        ++pos_;
        return true;
    }

    // After a complete value: close as many containers as the input closes,
    // then either stop at top level or consume a ',' (and the next key).
    bool after_value() {
        for (;;) {
            if (depth_ == 0) return true;
            skip_ws();
            if (at_end()) return false;
            const bool object = is_object_[depth_ - 1];
            const char c = peek();
            ++pos_;
            if (c == (object ? '}' : ']')) {
                --depth_;
                continue;
            }
            if (c != ',') return false;
            return object ? member_key() : true;
        }
    }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    bool number() {
        if (!at_end() && peek() == '-') ++pos_;
        if (at_end() || !is_digit(peek())) return false;
        std::int64_t int_digits = 1;
        if (peek() == '0') {
            ++pos_;
        } else {
            int_digits = static_cast<std::int64_t>(digits());
        }
        std::int64_t frac_digits = 0;
        if (!at_end() && peek() == '.') {
            ++pos_;
            frac_digits = static_cast<std::int64_t>(digits());
            if (frac_digits == 0) return false;
        }
        std::int64_t exponent = 0;
        if (!at_end() && (peek() == 'e' || peek() == 'E')) {
            ++pos_;
            bool negative = false;
            if (!at_end() && (peek() == '+' || peek() == '-')) negative = s_[pos_++] == '-';
            const std::size_t start = pos_;
            while (!at_end() && is_digit(peek())) {
                // Saturated: anything this large is out of range anyway.
                exponent = std::min<std::int64_t>(exponent * 10 + (peek() - '0'), kExponentCap);
                ++pos_;
            }
            if (pos_ == start) return false;
            if (negative) exponent = -exponent;
        }
        // jsonb keeps numbers as numeric, which holds at most 131072 digits
        // before the decimal point and 16383 after it: beyond that, jsonb
        // refuses a number JSON allows.
        return int_digits + exponent <= kMaxIntegerDigits && frac_digits - exponent <= kMaxFractionDigits;
    }

    // Consumes a run of digits and says how many there were.
    std::size_t digits() {
        const std::size_t start = pos_;
        while (!at_end() && is_digit(peek())) ++pos_;
        return pos_ - start;
    }

    // A string literal: no raw controls, known escapes, well-formed UTF-8.
    bool string() {
        ++pos_;  // opening quote
        while (!at_end()) {
            const auto c = static_cast<unsigned char>(peek());
            if (c == '"') {
                ++pos_;
                return true;
            }
            if (c < 0x20) return false;
            if (c == '\\') {
                if (!escape()) return false;
            } else if (c < 0x80) {
                ++pos_;
            } else if (!utf8_char()) {
                return false;
            }
        }
        return false;
    }

    // Reads four hex digits after "\u".
    bool hex4(std::uint32_t &out) {
        if (s_.size() - pos_ < 4) return false;
        out = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = s_[pos_ + i];
            if (!is_hex(c)) return false;
            const std::uint32_t v = is_digit(c) ? c - '0' : (to_lower(c) - 'a' + 10);
            out = (out << 4) | v;
        }
        pos_ += 4;
        return true;
    }

    // One backslash escape; surrogate escapes must come as a high/low pair,
    // as Postgres' own JSON parser demands.
    bool escape() {
        ++pos_;  // backslash
        if (at_end()) return false;
        const char c = peek();
        ++pos_;
        constexpr std::string_view kSimple = "\"\\/bfnrt";
        if (kSimple.find(c) != std::string_view::npos) return true;
        if (c != 'u') return false;
        std::uint32_t unit = 0;
        if (!hex4(unit)) return false;
        if (unit >= 0xDC00 && unit <= 0xDFFF) return false;
        if (unit < 0xD800 || unit > 0xDBFF) return true;
        if (!consume("\\u")) return false;
        std::uint32_t low = 0;
        return hex4(low) && low >= 0xDC00 && low <= 0xDFFF;
    }

    // One multi-byte UTF-8 character: no overlongs, surrogates or values
    // above U+10FFFF (RFC 3629).
    bool utf8_char() {
        const Utf8Step step = decode_utf8(s_, pos_);
        if (!step.valid) return false;
        pos_ += step.length;
        return true;
    }
};

}  // namespace

// URLs reach libcurl verbatim, so anything but a plain http(s) URL is refused
// rather than "fixed".
bool is_allowed_url(std::string_view url) {
    if (url.size() > kMaxUrlBytes || !is_printable_ascii(url)) return false;
    std::size_t scheme_len;
    if (starts_with_nocase(url, "http://")) {
        scheme_len = 7;
    } else if (starts_with_nocase(url, "https://")) {
        scheme_len = 8;
    } else {
        return false;
    }
    const std::string_view rest = url.substr(scheme_len);
    const std::size_t end = rest.find_first_of("/?#");
    return is_authority(rest.substr(0, end == std::string_view::npos ? rest.size() : end));
}

// Header names from job_config are joined into "Name: value" lines; only
// token characters keep that line unambiguous.
bool is_valid_header_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxHeaderNameBytes) return false;
    for (const char c : name) {
        if (!is_tchar(c)) return false;
    }
    return true;
}

// CR or LF would start a new header (injection); NUL truncates C strings.
bool is_safe_header_value(std::string_view value) {
    if (value.size() > kMaxHeaderValueBytes) return false;
    return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// Job names end up in URLs and headers, so they stay in a safe alphabet.
bool is_valid_job_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxJobNameBytes) return false;
    for (const char c : name) {
        if (!is_alpha(c) && !is_digit(c) && c != '.' && c != '_' && c != '-') return false;
    }
    // "." or "..": a path segment that would leave base_url's path.
    return name.find_first_not_of('.') != std::string_view::npos;
}

// Response bodies are stored as JSON only when they really are JSON.
bool is_valid_json(std::string_view text) { return JsonValidator(text).run(); }

}  // namespace jobrunner
