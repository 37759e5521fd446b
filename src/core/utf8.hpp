/*
 * utf8.hpp — one UTF-8 decoder for every place that must tell well-formed
 * text from bytes (JSON claims, JSON bodies, error texts stored as text).
 *
 * Pure C++: no Postgres headers.
 */
#pragma once
#ifdef POSTGRES_H
#error "core headers must not see postgres.h"
#endif

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace jobrunner {

// Result of looking at a multi-byte UTF-8 sequence: `length` bytes were
// consumed; `valid` says whether they formed a well-formed code point.
struct Utf8Step {
    std::size_t length;
    bool valid;
    std::uint32_t code_point;
};

// Decodes the sequence starting with a non-ASCII lead byte at s[i]. An
// ill-formed sequence consumes its maximal valid prefix (at least one byte),
// the Unicode "substitution of maximal subparts" practice.
inline Utf8Step decode_utf8(std::string_view s, std::size_t i) {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t need;
    std::uint32_t cp;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
        cp = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        need = 2;
        cp = lead & 0x0F;
        if (lead == 0xE0) lo = 0xA0;  // no overlongs
        if (lead == 0xED) hi = 0x9F;  // no surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        need = 3;
        cp = lead & 0x07;
        if (lead == 0xF0) lo = 0x90;  // no overlongs
        if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return {1, false, 0};
    }
    for (std::size_t k = 1; k <= need; ++k) {
        if (i + k >= s.size()) return {k, false, 0};
        const auto c = static_cast<unsigned char>(s[i + k]);
        const unsigned char min = (k == 1) ? lo : 0x80;
        const unsigned char max = (k == 1) ? hi : 0xBF;
        if (c < min || c > max) return {k, false, 0};
        cp = (cp << 6) | (c & 0x3F);
    }
    return {need + 1, true, cp};
}

}  // namespace jobrunner
