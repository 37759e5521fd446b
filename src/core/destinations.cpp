/*
 * destinations.cpp — the circuit breaker and back-pressure per host.
 */
#include "core/destinations.hpp"

#include <algorithm>
#include <cctype>

namespace jobrunner {

Verdict verdict_of(const HttpResult &result) {
    if (result.status == 0) return result.error == kCanceled ? Verdict::none : Verdict::failure;
    if ((result.status == 429 || result.status == 503) && result.retry_after_ms) {
        return Verdict::throttled;
    }
    return result.status >= 500 ? Verdict::failure : Verdict::reachable;
}

std::string destination_of(std::string_view url) {
    std::string_view port;
    if (url.substr(0, 7) == "http://") {
        url.remove_prefix(7);
        port = "80";
    } else if (url.substr(0, 8) == "https://") {
        url.remove_prefix(8);
        port = "443";
    } else {
        return "";
    }
    std::string_view authority = url.substr(0, url.find_first_of("/?#"));
    std::string_view host = authority;
    // A port after the host (an IPv6 literal keeps its colons in brackets).
    std::size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
    }
    if (host.empty()) return "";
    std::string out;
    out.reserve(host.size() + 1 + port.size());
    for (char c : host)
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    out.push_back(':');
    out.append(port);
    return out;
}

bool Destinations::may_send(const std::string &host, std::int64_t now_ms) {
    auto it = hosts_.find(host);
    if (it == hosts_.end()) return true;
    Host &h = it->second;
    if (now_ms < h.paused_until) return false;
    if (!h.open) return true;
    if (h.probing || now_ms < h.open_until) return false;
    h.probing = true;  // half-open: this request is the probe
    return true;
}

void Destinations::record(const std::string &host, Verdict verdict, std::int64_t now_ms,
                          std::optional<std::int64_t> retry_after_ms) {
    if (verdict == Verdict::none) {
        auto it = hosts_.find(host);
        if (it != hosts_.end()) it->second.probing = false;  // a canceled probe proves nothing
        return;
    }
    if (verdict == Verdict::reachable) {
        auto it = hosts_.find(host);
        if (it == hosts_.end()) return;
        Host &h = it->second;
        h.failures = 0;
        h.open = h.probing = false;
        h.open_ms = 0;
        if (now_ms >= h.paused_until) hosts_.erase(it);
        return;
    }
    Host &h = hosts_[host];
    if (verdict == Verdict::throttled) {
        // The host answered: it is up, and says when to come back.
        h.failures = 0;
        h.open = h.probing = false;
        h.open_ms = 0;
        std::int64_t wait = std::min(retry_after_ms.value_or(0), policy_.max_pause_ms);
        h.paused_until = std::max(h.paused_until, now_ms + std::max<std::int64_t>(wait, 0));
        return;
    }
    h.failures++;
    if (h.open) {
        // A failed probe (or a request that left before the circuit opened):
        // wait twice as long before the next probe.
        if (h.probing) {
            h.probing = false;
            h.open_ms = std::min(h.open_ms * 2, policy_.max_open_ms);
            h.open_until = now_ms + h.open_ms;
        }
        return;
    }
    if (h.failures >= policy_.failures_to_open) {
        h.open = true;
        h.probing = false;
        h.open_ms = policy_.first_open_ms;
        h.open_until = now_ms + h.open_ms;
    }
}

std::int64_t Destinations::blocked_until(const std::string &host, std::int64_t now_ms) const {
    auto it = hosts_.find(host);
    if (it == hosts_.end()) return now_ms;
    const Host &h = it->second;
    std::int64_t until = std::max(now_ms, h.paused_until);
    if (h.open) {
        // While the probe is out, nothing else goes: look again in a moment.
        until = std::max(
            until, h.probing ? now_ms + std::min<std::int64_t>(h.open_ms, 1000) : h.open_until);
    }
    return until;
}

DestinationState Destinations::state_of(const Host &h, std::int64_t now_ms) const {
    if (now_ms < h.paused_until) return DestinationState::paused;
    if (!h.open) return DestinationState::closed;
    return h.probing ? DestinationState::half_open : DestinationState::open;
}

std::vector<Destinations::View> Destinations::troubled(std::int64_t now_ms) const {
    std::vector<View> out;
    for (const auto &[host, h] : hosts_) {
        View v;
        v.host = host;
        v.state = state_of(h, now_ms);
        v.consecutive_failures = h.failures;
        v.until_ms = v.state == DestinationState::paused ? h.paused_until
                     : h.open                            ? h.open_until
                                                         : 0;
        if (v.state == DestinationState::closed && h.failures == 0) continue;
        out.push_back(std::move(v));
    }
    std::sort(out.begin(), out.end(), [](const View &a, const View &b) { return a.host < b.host; });
    return out;
}

}  // namespace jobrunner
