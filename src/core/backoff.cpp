/*
 * backoff.cpp — when a failed attempt is tried again: capped exponential
 * backoff with equal jitter, and the parsing of a server's Retry-After.
 *
 * Pure C++: no Postgres headers. Every computation saturates instead of
 * overflowing, whatever the configuration or the server sends.
 */
#include "core/backoff.hpp"

#include <ctime>
#include <limits>

namespace jobrunner {

namespace {

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
// Largest number of seconds that still fits in int64 milliseconds.
constexpr std::int64_t kMaxSeconds = kInt64Max / 1000;
// "Sun, 06 Nov 1994 08:49:37 GMT" has exactly this many bytes.
constexpr std::size_t kImfFixdateBytes = 29;

// base * 2^(attempt-1), clamped to cap without ever overflowing.
std::int64_t capped_exponential(int attempt, std::int64_t base_ms, std::int64_t cap_ms) {
    const int shift = attempt - 1;
    if (base_ms == 0) return 0;
    if (shift >= 63 || base_ms > (cap_ms >> shift)) return cap_ms;
    return base_ms << shift;
}

// Equal jitter: half of d is kept, the other half is random, so the result
// lies in [ceil(d/2), d] and retries from many jobs spread out.
std::int64_t equal_jitter(std::int64_t d, std::uint64_t random) {
    const std::int64_t fixed = d - d / 2;
    const auto span = static_cast<std::uint64_t>(d / 2) + 1;
    return fixed + static_cast<std::int64_t>(random % span);
}

// Header values may carry optional whitespace around them (RFC 9110 5.5).
std::string_view trim(std::string_view s) {
    const auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && is_ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
    return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// delay-seconds = 1*DIGIT; huge values saturate rather than wrap.
std::optional<std::int64_t> parse_delay_seconds(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::int64_t seconds = 0;
    for (const char c : s) {
        if (!is_digit(c)) return std::nullopt;
        if (seconds <= kMaxSeconds) seconds = seconds * 10 + (c - '0');
    }
    return seconds > kMaxSeconds ? kInt64Max : seconds * 1000;
}

// Reads exactly n digits at s[pos]; -1 when any is missing.
int fixed_digits(std::string_view s, std::size_t pos, std::size_t n) {
    if (pos + n > s.size()) return -1;
    int value = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (!is_digit(s[pos + i])) return -1;
        value = value * 10 + (s[pos + i] - '0');
    }
    return value;
}

// Index (0..11) of a three-letter month name as IMF-fixdate spells it.
int month_index(std::string_view name) {
    static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; ++i) {
        if (kMonths[i] == name) return i;
    }
    return -1;
}

// The day name is checked for spelling only; the date itself is authoritative.
bool is_day_name(std::string_view name) {
    static constexpr std::string_view kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    for (const auto day : kDays) {
        if (day == name) return true;
    }
    return false;
}

// timegm() silently normalizes "31 Feb"; such dates are refused instead.
int days_in_month(int month_index, int year) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return (month_index == 1 && leap) ? 29 : kDays[month_index];
}

// The fixed punctuation of "Sun, 06 Nov 1994 08:49:37 GMT".
bool has_fixdate_punctuation(std::string_view s) {
    return s.size() == kImfFixdateBytes && s[3] == ',' && s[4] == ' ' && s[7] == ' ' &&
           s[11] == ' ' && s[16] == ' ' && s[19] == ':' && s[22] == ':' && s.substr(25) == " GMT";
}

// IMF-fixdate (RFC 9110 section 5.6.7) to seconds since the epoch.
std::optional<std::int64_t> parse_imf_fixdate(std::string_view s) {
    if (!has_fixdate_punctuation(s) || !is_day_name(s.substr(0, 3))) return std::nullopt;
    const int day = fixed_digits(s, 5, 2);
    const int month = month_index(s.substr(8, 3));
    const int year = fixed_digits(s, 12, 4);
    const int hour = fixed_digits(s, 17, 2);
    const int minute = fixed_digits(s, 20, 2);
    const int second = fixed_digits(s, 23, 2);
    if (month < 0 || year < 0 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 ||
        second > 60 || day < 1 || day > days_in_month(month, year)) {
        return std::nullopt;
    }
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace

// The worker reschedules a failed attempt; the delay must grow, stay
// bounded, and not synchronize many jobs' retries.
std::int64_t retry_delay_ms(int attempt, std::int64_t base_ms, std::int64_t cap_ms,
                            std::optional<std::int64_t> retry_after_ms, std::uint64_t random) {
    if (cap_ms < 0) cap_ms = 0;
    if (retry_after_ms) {
        if (*retry_after_ms <= 0) return 0;
        return *retry_after_ms < cap_ms ? *retry_after_ms : cap_ms;
    }
    if (attempt < 1) attempt = 1;
    if (base_ms < 0) base_ms = 0;
    return equal_jitter(capped_exponential(attempt, base_ms, cap_ms), random);
}

// 429 and 503 responses may say when to come back; a date in the past means
// "now".
std::optional<std::int64_t> parse_retry_after(std::string_view value, std::int64_t now_epoch_s) {
    value = trim(value);
    if (!value.empty() && is_digit(value.front())) return parse_delay_seconds(value);
    const auto when = parse_imf_fixdate(value);
    if (!when) return std::nullopt;
    if (*when <= now_epoch_s) return 0;
    // *when is a 4-digit-year date, so only a very negative now can push the
    // difference past what milliseconds can hold.
    if (now_epoch_s < *when - kMaxSeconds) return kInt64Max;
    return (*when - now_epoch_s) * 1000;
}

}  // namespace jobrunner
