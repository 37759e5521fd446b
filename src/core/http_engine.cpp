/*
 * http_engine.cpp — libcurl multi driven through one epoll descriptor.
 *
 * libcurl tells us which sockets to watch (socket callback) and when it next
 * needs a timer tick (timer callback). We mirror the sockets into an epoll set
 * whose descriptor the worker waits on, and report the timer through
 * next_timeout_ms(). poll() never blocks: it hands ready sockets and expired
 * timers to curl_multi_socket_action and collects finished transfers.
 *
 * Every request is bounded: the body we keep is capped inside the write
 * callback, the Content-Type we keep is capped, and all per-request state is
 * freed when the transfer finishes or is aborted. Easy handles are kept in a
 * small pool so their options and buffers are not rebuilt for every request;
 * connections live in the multi handle's cache and TLS sessions in a share.
 *
 * Pure C++: no Postgres headers. Nothing here throws except std::bad_alloc,
 * and no exception ever crosses a libcurl callback.
 */
#include "core/http_engine.hpp"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <cstring>
#include <limits>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace jobrunner {
namespace {

using Clock = std::chrono::steady_clock;

// Easy handles kept for reuse; beyond this they are freed on completion.
constexpr std::size_t kPoolSize = 32;
// Ready sockets taken from epoll per poll(); the rest stay ready for the next.
constexpr int kEpollBatch = 256;
// Largest Retry-After, in seconds, whose milliseconds fit in an int64.
constexpr curl_off_t kMaxRetryAfterS = std::numeric_limits<std::int64_t>::max() / 1000;
// Error messages longer than this are cut.
constexpr std::size_t kErrorCap = 512;
// The only schemes a request, or a redirect it might name, may use.
constexpr const char *kAllowedProtocols = "http,https";
// Stands where an endpoint echoed the minted token back: no quote or
// backslash, so a JSON string that held the token stays a valid JSON string.
constexpr std::string_view kTokenRemoved = "[token removed]";

// Marks a socket already present in the epoll set (via curl_multi_assign).
char kWatched;

// curl_global_init is not thread-safe and must run once per process.
CURLcode global_init() {
    static std::once_flag once;
    static CURLcode result = CURLE_OK;
    std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
    return result;
}

// Header names compare case-insensitively (RFC 9110 section 5.1).
bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        unsigned char x = static_cast<unsigned char>(a[i]);
        unsigned char y = static_cast<unsigned char>(b[i]);
        if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

// Header lines carry optional whitespace around values and a CRLF at the end.
std::string_view trim(std::string_view s) {
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && blank(s.back())) s.remove_suffix(1);
    return s;
}

// Waiting to multiplex only makes sense where h2 can be negotiated (TLS ALPN).
// On cleartext http, curl learns a server cannot multiplex only from its
// first response, so PIPEWAIT would hold every other request to that host
// until the first one is answered.
bool is_https(std::string_view url) { return iequals(url.substr(0, 8), "https://"); }

// Erases a secret before its memory is freed (the compiler cannot drop it).
void wipe(std::string &secret) {
    explicit_bzero(secret.data(), secret.size());
    secret.clear();
}

// Holds a secret for one scope and wipes it on every way out.
struct ScopedSecret {
    std::string text;
    ~ScopedSecret() { wipe(text); }
};

// The credentials of an "Authorization: Bearer <token>" line; empty for any
// other header.
std::string_view bearer_token(std::string_view header) {
    const std::size_t colon = header.find(':');
    if (colon == std::string_view::npos ||
        !iequals(trim(header.substr(0, colon)), "authorization")) {
        return {};
    }
    const std::string_view value = trim(header.substr(colon + 1));
    if (value.size() <= 7 || !iequals(value.substr(0, 7), "bearer ")) return {};
    return trim(value.substr(7));
}

// Replaces every copy of token in body with the marker, in place: the marker
// is never longer than what it replaces, so nothing is allocated, however
// many copies an endpoint sends (a token shorter than the marker, never one
// we mint, gets the marker's first bytes). The freed tail is wiped.
void replace_token(std::string &body, std::string_view token) {
    std::size_t at = body.find(token);
    if (at == std::string::npos) return;
    const std::string_view marker = kTokenRemoved.substr(0, token.size());
    std::size_t read = at;   // next byte of the original to keep
    std::size_t write = at;  // where it goes
    while (at != std::string::npos) {
        std::memmove(&body[write], &body[read], at - read);
        write += at - read;
        std::memcpy(&body[write], marker.data(), marker.size());
        write += marker.size();
        read = at + token.size();
        at = body.find(token, read);
    }
    std::memmove(&body[write], &body[read], body.size() - read);
    write += body.size() - read;
    explicit_bzero(&body[write], body.size() - write);
    body.resize(write);
}

// A body cut at the cap may end in the first bytes of a copy of the token;
// they are cut too (the body is already incomplete).
void cut_token_start(std::string &body, std::string_view token) {
    for (std::size_t n = std::min(body.size(), token.size() - 1); n > 0; --n) {
        if (body.compare(body.size() - n, n, token.data(), n) == 0) {
            explicit_bzero(&body[body.size() - n], n);
            body.resize(body.size() - n);
            return;
        }
    }
}

// Keeps the minted token out of the body handed over: the endpoint may echo
// its Authorization header, and a body can end up in a stored row. Its
// signature alone goes too: the header and claims are predictable, so the
// signature is all a reader would need to rebuild the token.
void remove_token(HttpResult &result, std::string_view token) {
    if (token.empty()) return;
    replace_token(result.body, token);
    if (result.body_truncated) cut_token_start(result.body, token);
    std::size_t dot = token.rfind('.');
    if (dot != std::string_view::npos && dot + 1 < token.size()) {
        replace_token(result.body, token.substr(dot + 1));
    }
}

// Milliseconds elapsed since start, for results that never reached curl.
double elapsed_ms(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Everything one in-flight request owns; freed as a unit when it ends.
struct Transfer {
    CURL *easy = nullptr;  // owned until handed back to the pool
    curl_slist *headers = nullptr;
    std::string body;  // request body; curl reads it in place
    HttpResult result;
    std::size_t max_body = 0;
    long timeout_ms = 1;             // whole transfer, as given to curl
    long connect_timeout_ms = 1;     // connect phase, as given to curl
    std::string minted_token;        // from header_at_start; wiped when freed
    bool out_of_memory = false;      // a callback could not store what it got
    bool final_retry_after = false;  // the last header block has a Retry-After
    Clock::time_point started;
    char errbuf[CURL_ERROR_SIZE];

    Transfer() { errbuf[0] = '\0'; }
    ~Transfer() {
        free_headers();
        wipe(minted_token);
        if (easy != nullptr) curl_easy_cleanup(easy);
    }
    Transfer(const Transfer &) = delete;
    Transfer &operator=(const Transfer &) = delete;

    // The list holds a copy of the minted Authorization header: it is wiped
    // before the list is freed.
    void free_headers() {
        for (curl_slist *h = headers; h != nullptr && !minted_token.empty(); h = h->next) {
            if (std::strstr(h->data, minted_token.c_str()) != nullptr) {
                explicit_bzero(h->data, std::strlen(h->data));
            }
        }
        curl_slist_free_all(headers);
        headers = nullptr;
    }
};

// Keeps the first max_body response bytes and drops the rest, so a huge or
// endless body costs no memory (the transfer timeout bounds its duration).
size_t on_body(char *data, size_t size, size_t nmemb, void *userdata) {
    auto *t = static_cast<Transfer *>(userdata);
    const size_t n = size * nmemb;
    std::string &body = t->result.body;
    const size_t room = t->max_body > body.size() ? t->max_body - body.size() : 0;
    const size_t keep = std::min(n, room);
    if (keep < n) t->result.body_truncated = true;
    if (keep == 0) return n;
    try {
        if (body.capacity() < body.size() + keep) {
            // Grow geometrically, but never past the cap.
            body.reserve(std::min(t->max_body, std::max(body.size() + keep, 2 * body.capacity())));
        }
        body.append(data, keep);
    } catch (const std::bad_alloc &) {
        t->out_of_memory = true;
        return 0;  // aborts the transfer with CURLE_WRITE_ERROR
    }
    return n;
}

// Notes whether the final response has a Retry-After: libcurl parses the
// value, but also keeps one from a 1xx block. A status line starts a new
// header block, so earlier ones are forgotten.
size_t on_header(char *data, size_t size, size_t nitems, void *userdata) {
    auto *t = static_cast<Transfer *>(userdata);
    const size_t n = size * nitems;
    std::string_view line(data, n);
    if (line.substr(0, 5) == "HTTP/") {
        t->final_retry_after = false;
        return n;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    // The very lines libcurl reads as Retry-After: no blank before the colon.
    if (iequals(line.substr(0, colon), "retry-after")) t->final_retry_after = true;
    return n;
}

// The final response's Retry-After as libcurl read it (seconds from when it
// arrived, for a date too), in milliseconds; nullopt unless it is ahead.
std::optional<std::int64_t> retry_after_ms(const Transfer &t) {
    curl_off_t seconds = 0;
    if (!t.final_retry_after ||
        curl_easy_getinfo(t.easy, CURLINFO_RETRY_AFTER, &seconds) != CURLE_OK || seconds <= 0) {
        return std::nullopt;
    }
    if (seconds > kMaxRetryAfterS) return std::numeric_limits<std::int64_t>::max();
    return static_cast<std::int64_t>(seconds) * 1000;
}

// curl's summary plus its detail line, for the server log: the detail names
// the host, address and port. Built only from curl's own text, never from
// the request's headers.
std::string describe_failure(CURLcode code, const Transfer &t) {
    std::string msg =
        t.out_of_memory ? "out of memory while storing the response" : curl_easy_strerror(code);
    std::string_view detail = trim(std::string_view(t.errbuf, strnlen(t.errbuf, CURL_ERROR_SIZE)));
    if (!detail.empty() && detail != msg) {
        msg += ": ";
        msg += detail;
    }
    if (msg.size() > kErrorCap) msg.resize(kErrorCap);
    return msg;
}

// The OS error behind a failed connect: tells a refused connection from
// one that got no answer, which CURLE_COULDNT_CONNECT alone does not.
long os_errno(CURL *easy) {
    long err = 0;
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &err);
    return err;
}

// A timeout before the connection was ready (TCP and TLS) is the connect
// timeout's; any later one is the whole attempt's.
std::string timeout_class(const Transfer &t) {
    curl_off_t ready_us = 0;
    curl_easy_getinfo(t.easy, CURLINFO_PRETRANSFER_TIME_T, &ready_us);
    if (ready_us == 0 && t.connect_timeout_ms < t.timeout_ms) {
        return "could not connect within " + std::to_string(t.connect_timeout_ms) + " ms";
    }
    return "timed out after " + std::to_string(t.timeout_ms) + " ms";
}

// What a job's user may read about a failed transfer: the kind of failure in
// a few words, never where the request went (that is describe_failure's).
std::string failure_class(CURLcode code, const Transfer &t) {
    if (t.out_of_memory) return "out of memory while storing the response";
    switch (code) {
        case CURLE_COULDNT_RESOLVE_HOST:
            return "could not resolve the endpoint's host name";
        case CURLE_COULDNT_CONNECT:
            return os_errno(t.easy) == ECONNREFUSED ? "connection refused" : "could not connect";
        case CURLE_OPERATION_TIMEDOUT:
            return timeout_class(t);
        case CURLE_SSL_CONNECT_ERROR:
            return "TLS handshake failed";
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
            return "TLS certificate verification failed";
        case CURLE_PARTIAL_FILE:
        case CURLE_GOT_NOTHING:
            return "connection closed before a complete response";
        case CURLE_SEND_ERROR:
            return "sending the request failed";
        case CURLE_RECV_ERROR:
            return "receiving the response failed";
        case CURLE_WEIRD_SERVER_REPLY:
            return "the endpoint's reply is not valid HTTP";
        case CURLE_UNSUPPORTED_PROTOCOL:
            return "unsupported protocol: only http and https are allowed";
        default:
            return "transport error (curl code " + std::to_string(static_cast<int>(code)) + ")";
    }
}

}  // namespace

struct HttpEngine::Impl {
    std::size_t max_body;
    std::string user_agent;
    std::string init_error;
    CURLM *multi = nullptr;
    CURLSH *share = nullptr;
    int epfd = -1;
    std::optional<Clock::time_point> deadline;  // when curl next wants a tick
    std::unordered_map<CURL *, std::unique_ptr<Transfer>> live;
    std::vector<CURL *> pool;
    std::vector<HttpResult> finished;

    Impl(std::size_t max_body_bytes, std::string ua);
    ~Impl();

    bool usable() const { return init_error.empty(); }
    static int socket_cb(CURL *, curl_socket_t s, int what, void *userp, void *socketp);
    static int timer_cb(CURLM *, long timeout_ms, void *userp);
    int on_socket(curl_socket_t s, int what, void *socketp);
    void sync_timer();
    CURL *acquire();
    void recycle(Transfer &t);
    void detach(Transfer &t);
    bool add_headers(Transfer &t, const std::vector<std::string> &headers,
                     const std::string &minted);
    bool configure(Transfer &t, const std::string &url);
    void fail_now(std::unique_ptr<Transfer> t, std::string error);
    void complete(CURL *easy, CURLcode code);
    void harvest();
    bool cancel(std::uint64_t tag);
    void abort_all();
};

// libcurl's socket callback: forwards to the engine that registered it.
int HttpEngine::Impl::socket_cb(CURL *, curl_socket_t s, int what, void *userp, void *socketp) {
    return static_cast<Impl *>(userp)->on_socket(s, what, socketp);
}

// libcurl's timer callback: records when curl next needs a timeout action.
int HttpEngine::Impl::timer_cb(CURLM *, long timeout_ms, void *userp) {
    auto *impl = static_cast<Impl *>(userp);
    if (timeout_ms < 0) {
        impl->deadline.reset();
    } else {
        impl->deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    }
    return 0;
}

// Sets up curl, the epoll set and the multi handle; failures land in init_error.
HttpEngine::Impl::Impl(std::size_t max_body_bytes, std::string ua)
    : max_body(max_body_bytes), user_agent(std::move(ua)) {
    pool.reserve(kPoolSize);  // so recycling never allocates
    if (CURLcode rc = global_init(); rc != CURLE_OK) {
        init_error = std::string("curl_global_init failed: ") + curl_easy_strerror(rc);
        return;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        init_error = std::string("epoll_create1 failed: ") + std::strerror(errno);
        return;
    }
    multi = curl_multi_init();
    if (multi == nullptr) {
        init_error = "curl_multi_init failed";
        return;
    }
    bool ok = curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb) == CURLM_OK &&
              curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this) == CURLM_OK &&
              curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb) == CURLM_OK &&
              curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this) == CURLM_OK &&
              curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) == CURLM_OK &&
              curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L) == CURLM_OK;
    if (!ok) {
        init_error = "could not configure the curl multi handle";
        return;
    }
    // TLS sessions are per easy handle unless shared; sharing them lets a new
    // connection resume a session another handle negotiated. Optional.
    share = curl_share_init();
    if (share != nullptr &&
        curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        curl_share_cleanup(share);
        share = nullptr;
    }
}

// Frees transfers before handles, handles before the multi, the multi before
// the share and the epoll descriptor its callbacks still use.
HttpEngine::Impl::~Impl() {
    abort_all();
    for (CURL *easy : pool) curl_easy_cleanup(easy);
    pool.clear();
    if (multi != nullptr) curl_multi_cleanup(multi);
    if (share != nullptr) curl_share_cleanup(share);
    if (epfd >= 0) close(epfd);
}

// Mirrors curl's wish list for one socket into the epoll set.
int HttpEngine::Impl::on_socket(curl_socket_t s, int what, void *socketp) {
    if (what == CURL_POLL_REMOVE) {
        // Fails harmlessly when curl already closed the socket.
        epoll_ctl(epfd, EPOLL_CTL_DEL, s, nullptr);
        return 0;
    }
    epoll_event ev{};
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    ev.data.fd = s;
    int op = socketp != nullptr ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = epoll_ctl(epfd, op, s, &ev);
    // A descriptor number reused after a close can make our view stale.
    if (rc != 0 && op == EPOLL_CTL_ADD && errno == EEXIST) {
        rc = epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev);
    } else if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {
        rc = epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev);
    }
    if (rc == 0 && socketp == nullptr) curl_multi_assign(multi, s, &kWatched);
    // On failure we still return 0: -1 would kill every transfer on the multi
    // handle, while this one transfer is bounded by its own timeout.
    return 0;
}

// Reads curl's real next expiry: the timer callback is only called when the
// expiry changes, so a tick that fired a little early must be re-armed here.
void HttpEngine::Impl::sync_timer() {
    long ms = -1;
    if (multi == nullptr || curl_multi_timeout(multi, &ms) != CURLM_OK) return;
    if (ms < 0) {
        deadline.reset();
    } else {
        deadline = Clock::now() + std::chrono::milliseconds(ms);
    }
}

// A pooled easy handle if one is free, else a new one (nullptr on failure).
CURL *HttpEngine::Impl::acquire() {
    if (!pool.empty()) {
        CURL *easy = pool.back();
        pool.pop_back();
        return easy;
    }
    return curl_easy_init();
}

// Hands the transfer's easy handle back to the pool, or frees it when full.
void HttpEngine::Impl::recycle(Transfer &t) {
    if (t.easy == nullptr) return;
    if (pool.size() < kPoolSize) {
        curl_easy_reset(t.easy);  // drops options (URL, headers) but keeps caches
        pool.push_back(t.easy);
    } else {
        curl_easy_cleanup(t.easy);
    }
    t.easy = nullptr;
}

// Takes a transfer out of the multi handle and releases what curl held for it.
void HttpEngine::Impl::detach(Transfer &t) {
    if (t.easy != nullptr) curl_multi_remove_handle(multi, t.easy);
    t.free_headers();
    recycle(t);
}

// Lists the request's headers, then the one minted at start (if any), for
// curl; false when out of memory.
bool HttpEngine::Impl::add_headers(Transfer &t, const std::vector<std::string> &headers,
                                   const std::string &minted) {
    auto add = [&t](const std::string &line) {
        curl_slist *next = curl_slist_append(t.headers, line.c_str());
        if (next != nullptr) t.headers = next;
        return next != nullptr;
    };
    for (const std::string &h : headers) {
        if (!add(h)) return false;
    }
    if (!minted.empty() && !add(minted)) return false;
    // "Expect:" stops curl from waiting for 100-continue on large bodies.
    return add("Expect:");
}

// Applies the fixed safety options and the request's own settings.
bool HttpEngine::Impl::configure(Transfer &t, const std::string &url) {
    CURL *e = t.easy;
    t.errbuf[0] = '\0';
    return curl_easy_setopt(e, CURLOPT_PRIVATE, &t) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_SHARE, share) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t.errbuf) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, kAllowedProtocols) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, kAllowedProtocols) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
           // Only job_config decides where a request goes: proxies from the
           // server's environment (http_proxy and friends) are ignored.
           curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_MAXREDIRS, 0L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t.timeout_ms) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t.connect_timeout_ms) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_PIPEWAIT, is_https(url) ? 1L : 0L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_URL, url.c_str()) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent.c_str()) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_HTTPHEADER, t.headers) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t.body.size()) ==
               CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_POSTFIELDS, t.body.data()) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_WRITEDATA, &t) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
           curl_easy_setopt(e, CURLOPT_HEADERDATA, &t) == CURLE_OK;
}

// Reports a request that never reached curl, so its tag is not lost.
void HttpEngine::Impl::fail_now(std::unique_ptr<Transfer> t, std::string error) {
    recycle(*t);
    HttpResult r = std::move(t->result);
    r.status = 0;
    r.error_detail = error;  // nothing here names the endpoint
    r.error = std::move(error);
    r.duration_ms = elapsed_ms(t->started);
    t.reset();
    finished.push_back(std::move(r));
}

// Turns a finished transfer into a result and frees its state. A transfer
// curl reports as failed has no usable response, even if a status line came.
void HttpEngine::Impl::complete(CURL *easy, CURLcode code) {
    auto it = live.find(easy);
    if (it == live.end()) {  // not ours; should not happen
        curl_multi_remove_handle(multi, easy);
        return;
    }
    std::unique_ptr<Transfer> t = std::move(it->second);
    live.erase(it);
    HttpResult r = std::move(t->result);

    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_off_t total_us = 0;
    curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us);
    r.duration_ms = total_us > 0 ? static_cast<double>(total_us) / 1000.0 : elapsed_ms(t->started);
    remove_token(r, t->minted_token);

    if (code == CURLE_OK && status > 0) {
        r.status = status;
        r.retry_after_ms = retry_after_ms(*t);
    } else {
        r.status = 0;
        r.error = code == CURLE_OK ? "no HTTP status received" : failure_class(code, *t);
        r.error_detail = code == CURLE_OK ? r.error : describe_failure(code, *t);
        r.body.clear();
        r.body.shrink_to_fit();
        r.body_truncated = false;
    }
    detach(*t);
    t.reset();
    finished.push_back(std::move(r));
}

// Collects every transfer curl has finished since the last call.
void HttpEngine::Impl::harvest() {
    int left = 0;
    while (CURLMsg *msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        // msg is invalid once the handle is removed, so copy what we need.
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        complete(easy, code);
    }
}

// Ends one transfer now, closing its connection; its result says so.
bool HttpEngine::Impl::cancel(std::uint64_t tag) {
    for (auto it = live.begin(); it != live.end(); ++it) {
        if (it->second->result.tag != tag) continue;
        std::unique_ptr<Transfer> t = std::move(it->second);
        live.erase(it);
        HttpResult r = std::move(t->result);
        r.status = 0;
        r.error = r.error_detail = kCanceled;
        r.body.clear();
        r.body_truncated = false;
        r.duration_ms = elapsed_ms(t->started);
        detach(*t);
        t.reset();
        sync_timer();
        finished.push_back(std::move(r));
        return true;
    }
    return false;
}

// Removes every transfer without producing results.
void HttpEngine::Impl::abort_all() {
    for (auto &entry : live) detach(*entry.second);
    live.clear();
    if (multi != nullptr) sync_timer();
}

HttpEngine::HttpEngine(std::size_t max_body_bytes, std::string user_agent)
    : impl_(std::make_unique<Impl>(max_body_bytes, std::move(user_agent))) {}

HttpEngine::~HttpEngine() = default;

// Lets the caller refuse to start when curl or epoll could not be set up.
const std::string &HttpEngine::init_error() const { return impl_->init_error; }

// The one descriptor the worker waits on; -1 when the engine is unusable.
int HttpEngine::fd() const { return impl_->epfd; }

// Queues one POST; a request curl cannot even start becomes a failed result.
void HttpEngine::submit(HttpRequest request) {
    Impl &m = *impl_;
    auto t = std::make_unique<Transfer>();
    t->started = Clock::now();
    t->result.tag = request.tag;
    t->max_body = m.max_body;
    t->body = std::move(request.body);
    t->timeout_ms = std::max(1L, request.timeout_ms);  // 0 would mean "never" to curl
    t->connect_timeout_ms = std::max(1L, request.connect_timeout_ms);
    if (!m.usable()) {
        m.fail_now(std::move(t), "http engine unavailable: " + m.init_error);
        return;
    }
    t->easy = m.acquire();
    if (t->easy == nullptr) {
        m.fail_now(std::move(t), "could not create a curl handle");
        return;
    }
    ScopedSecret minted;
    if (request.header_at_start) {
        minted.text = request.header_at_start(static_cast<std::int64_t>(time(nullptr)));
        t->minted_token.assign(bearer_token(minted.text));
    }
    if (!m.add_headers(*t, request.headers, minted.text)) {
        m.fail_now(std::move(t), "out of memory building request headers");
        return;
    }
    if (!m.configure(*t, request.url)) {
        m.fail_now(std::move(t), "could not configure the request");
        return;
    }
    CURL *easy = t->easy;
    auto placed = m.live.emplace(easy, std::move(t));
    if (curl_multi_add_handle(m.multi, easy) != CURLM_OK) {
        std::unique_ptr<Transfer> back = std::move(placed.first->second);
        m.live.erase(placed.first);
        m.fail_now(std::move(back), "could not start the request");
    }
}

// Hands ready sockets and a due timer to curl, then collects finished work.
void HttpEngine::poll() {
    Impl &m = *impl_;
    if (!m.usable()) return;
    int running = 0;
    epoll_event events[kEpollBatch];
    const int n = epoll_wait(m.epfd, events, kEpollBatch, 0);
    for (int i = 0; i < n; ++i) {
        const std::uint32_t ev = events[i].events;
        int bits = 0;
        if (ev & EPOLLIN) bits |= CURL_CSELECT_IN;
        if (ev & EPOLLOUT) bits |= CURL_CSELECT_OUT;
        if (ev & (EPOLLERR | EPOLLHUP)) bits |= CURL_CSELECT_ERR;
        curl_multi_socket_action(m.multi, events[i].data.fd, bits, &running);
    }
    if (m.deadline && *m.deadline <= Clock::now()) {
        curl_multi_socket_action(m.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    m.sync_timer();
    m.harvest();
}

// Zero while results wait to be taken, so a caller never sleeps on them.
long HttpEngine::next_timeout_ms() const {
    const Impl &m = *impl_;
    if (!m.finished.empty()) return 0;
    if (!m.deadline) return -1;
    const auto now = Clock::now();
    if (*m.deadline <= now) return 0;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(*m.deadline - now);
    return static_cast<long>((us.count() + 999) / 1000);  // round up: never wake early
}

// Results move out so the engine keeps nothing of a finished request.
void HttpEngine::take_finished(std::vector<HttpResult> &out) {
    auto &done = impl_->finished;
    if (out.empty()) {
        out.swap(done);
    } else {
        out.insert(out.end(), std::make_move_iterator(done.begin()),
                   std::make_move_iterator(done.end()));
    }
    done.clear();
}

// Requests started and not yet reported.
std::size_t HttpEngine::in_flight() const { return impl_->live.size(); }

void HttpEngine::set_max_connections(std::size_t n) {
    if (impl_->multi != nullptr) {
        curl_multi_setopt(impl_->multi, CURLMOPT_MAXCONNECTS, static_cast<long>(n));
    }
}

// Drops in-flight transfers (shutdown); results already finished are kept.
bool HttpEngine::cancel(std::uint64_t tag) { return impl_->cancel(tag); }

void HttpEngine::abort_all() { impl_->abort_all(); }

}  // namespace jobrunner
