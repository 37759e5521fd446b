/*
 * text_checks.cpp — validation of untrusted text before it reaches a request
 * or a row: URLs, header names and values, job names.
 *
 * Pure C++: no Postgres headers. Every check is a single pass with no
 * allocation, so it is safe to run on attacker-sized input.
 */
#include "core/text_checks.hpp"
#include "core/utf8.hpp"

#include <algorithm>
#include <cstddef>

namespace jobrunner {

namespace {

constexpr std::size_t kMaxUrlBytes = 2048;
constexpr std::size_t kMaxHeaderNameBytes = 256;
constexpr std::size_t kMaxHeaderValueBytes = 8192;
constexpr std::size_t kMaxJobNameBytes = 128;

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

}  // namespace jobrunner
