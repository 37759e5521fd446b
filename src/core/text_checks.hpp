/*
 * text_checks.hpp — validation of untrusted text before it reaches a request:
 * URLs, header names and values, job names.
 *
 * Pure C++: no Postgres headers.
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include <string_view>

namespace jobrunner {

// Absolute http:// or https:// URL with a non-empty host, no whitespace,
// control characters or userinfo tricks; anything else is refused.
bool is_allowed_url(std::string_view url);

// RFC 9110 token characters, 1..256 bytes.
bool is_valid_header_name(std::string_view name);

// No CR, LF or NUL (header injection), at most 8 KiB.
bool is_safe_header_value(std::string_view value);

// Job names: letters, digits, '.', '_', '-'; 1..128 bytes.
bool is_valid_job_name(std::string_view name);

}  // namespace jobrunner
