/*
 * json_reference.hpp — a strict RFC 8259 checker for the JSON the product
 * writes (token claims): any value at top level, UTF-8 strings without raw
 * control characters, escapes as the RFC lists them. Recursive: it only
 * reads the small texts the tests build.
 */
#pragma once

#include "core/utf8.hpp"

#include <string_view>

namespace jobrunner::reference {

class JsonChecker {
public:
    explicit JsonChecker(std::string_view text) : s_(text) {}

    bool valid() {
        ws();
        if (!value()) return false;
        ws();
        return i_ == s_.size();
    }

private:
    bool at(char c) const { return i_ < s_.size() && s_[i_] == c; }
    static bool digit(char c) { return c >= '0' && c <= '9'; }
    static bool hex(char c) { return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
    void ws() {
        while (at(' ') || at('\t') || at('\n') || at('\r')) ++i_;
    }
    bool word(std::string_view w) {
        if (s_.substr(i_, w.size()) != w) return false;
        i_ += w.size();
        return true;
    }
    bool digits() {
        const std::size_t start = i_;
        while (i_ < s_.size() && digit(s_[i_])) ++i_;
        return i_ > start;
    }
    bool number() {
        if (at('-')) ++i_;
        if (at('0')) {
            ++i_;
        } else if (!digits()) {
            return false;
        }
        if (at('.')) {
            ++i_;
            if (!digits()) return false;
        }
        if (at('e') || at('E')) {
            ++i_;
            if (at('+') || at('-')) ++i_;
            if (!digits()) return false;
        }
        return true;
    }
    bool string() {
        if (!at('"')) return false;
        ++i_;
        while (i_ < s_.size()) {
            const auto c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') {
                ++i_;
                return true;
            }
            if (c < 0x20) return false;
            if (c == '\\') {
                if (++i_ >= s_.size()) return false;
                const char e = s_[i_++];
                if (e == 'u') {
                    for (int k = 0; k < 4; ++k, ++i_) {
                        if (i_ >= s_.size() || !hex(s_[i_])) return false;
                    }
                } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
                    return false;
                }
            } else if (c >= 0x80) {
                const Utf8Step step = decode_utf8(s_, i_);
                if (!step.valid) return false;
                i_ += step.length;
            } else {
                ++i_;
            }
        }
        return false;
    }
    template <typename Member>
    bool container(char close, Member member) {
        ++i_;
        ws();
        if (at(close)) {
            ++i_;
            return true;
        }
        for (;;) {
            ws();
            if (!member()) return false;
            ws();
            if (at(close)) {
                ++i_;
                return true;
            }
            if (!at(',')) return false;
            ++i_;
        }
    }
    bool value() {
        if (at('{')) {
            return container('}', [this] {
                if (!string()) return false;
                ws();
                if (!at(':')) return false;
                ++i_;
                ws();
                return value();
            });
        }
        if (at('[')) return container(']', [this] { return value(); });
        if (at('"')) return string();
        if (at('t')) return word("true");
        if (at('f')) return word("false");
        if (at('n')) return word("null");
        return number();
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

inline bool is_valid_json(std::string_view text) { return JsonChecker(text).valid(); }

}  // namespace jobrunner::reference
