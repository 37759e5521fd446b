/*
 * test_http_server.hpp — a real HTTP/1.1 server on 127.0.0.1 for the HTTP
 * unit tests: one thread, non-blocking sockets, keep-alive, and endpoints
 * that misbehave on purpose (slow, reset, hang-up, cut short, redirect,
 * huge, echoing the Authorization header, asking to retry later).
 */
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace jobrunner {
namespace test_support {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Byte i of every generated body, so a prefix can be checked exactly.
inline char pattern_byte(std::size_t i) { return static_cast<char>('a' + i % 26); }

// A body of n pattern bytes.
inline std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = pattern_byte(i);
    return s;
}

// Lower-cases header names for comparison.
inline std::string lower(std::string s) {
    for (char &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The value of header `name` in a request head, or "" when absent.
inline std::string header_value(const std::string &head, const std::string &name) {
    std::size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
        std::size_t next = head.find("\r\n", pos + 2);
        std::string line =
            head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        std::size_t colon = line.find(':');
        if (colon != std::string::npos && lower(line.substr(0, colon)) == name) {
            std::size_t v = line.find_first_not_of(' ', colon + 1);
            return v == std::string::npos ? "" : line.substr(v);
        }
        pos = next;
    }
    return "";
}

// Minimal keep-alive HTTP/1.1 server; one thread, non-blocking sockets.
class TestServer {
public:
    // Binds 127.0.0.1:0 and starts serving on a thread.
    TestServer() {
        listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        if (listen_fd_ < 0 || bind(listen_fd_, (sockaddr *)&addr, sizeof addr) != 0 ||
            listen(listen_fd_, 1024) != 0) {
            std::perror("test server");
            std::abort();
        }
        socklen_t len = sizeof addr;
        getsockname(listen_fd_, (sockaddr *)&addr, &len);
        port_ = ntohs(addr.sin_port);
        if (pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) std::abort();
        thread_ = std::thread([this] { run(); });
    }

    // Stops the thread and closes every socket.
    ~TestServer() {
        char c = 'x';
        (void)!write(wake_[1], &c, 1);
        thread_.join();
        for (Conn &c2 : conns_) close(c2.fd);
        close(listen_fd_);
        close(wake_[0]);
        close(wake_[1]);
    }

    std::string url(const std::string &path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    int port() const { return port_; }
    int accepted() const { return accepted_.load(); }
    int closed() const { return closed_.load(); }
    // Requests seen for one path.
    int hits(const std::string &path) const {
        std::lock_guard<std::mutex> g(mu_);
        auto it = hits_.find(path);
        return it == hits_.end() ? 0 : it->second;
    }

private:
    struct Conn {
        int fd;
        std::string in;
        std::string out;
        std::size_t out_off = 0;
        std::optional<Clock::time_point> delayed_until;
        std::string delayed;
        bool dead = false;
        bool close_after_write = false;  // hang up once out is sent
    };

    // Serializes one response with a Content-Length so the connection stays open.
    static std::string response(int code, const std::string &reason, const std::string &headers,
                                const std::string &body) {
        return "HTTP/1.1 " + std::to_string(code) + " " + reason +
               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + headers + "\r\n" +
               body;
    }

    // Serves until the wake pipe fires.
    void run() {
        for (;;) {
            std::vector<pollfd> fds;
            fds.push_back({wake_[0], POLLIN, 0});
            fds.push_back({listen_fd_, POLLIN, 0});
            int timeout = -1;
            auto now = Clock::now();
            for (Conn &c : conns_) {
                short ev = POLLIN;
                if (c.out_off < c.out.size()) ev |= POLLOUT;
                fds.push_back({c.fd, ev, 0});
                if (c.delayed_until) {
                    auto ms = std::chrono::duration_cast<milliseconds>(*c.delayed_until - now);
                    int t = static_cast<int>(std::max<long>(0, ms.count() + 1));
                    timeout = timeout < 0 ? t : std::min(timeout, t);
                }
            }
            ::poll(fds.data(), fds.size(), timeout);
            if (fds[0].revents) return;
            if (fds[1].revents & POLLIN) accept_all();
            std::size_t i = 2;
            for (Conn &c : conns_) {
                if (i >= fds.size()) break;  // accepted during this round
                short re = fds[i++].revents;
                if (re & (POLLIN | POLLHUP | POLLERR)) read_from(c);
                if (!c.dead && c.delayed_until && Clock::now() >= *c.delayed_until) {
                    c.out += c.delayed;
                    c.delayed.clear();
                    c.delayed_until.reset();
                }
                if (!c.dead) write_to(c);
            }
            for (auto it = conns_.begin(); it != conns_.end();) {
                if (it->dead) {
                    close(it->fd);
                    closed_++;
                    it = conns_.erase(it);
                } else {
                    ++it;
                }
            }
        }
    }

    // Accepts every pending connection.
    void accept_all() {
        for (;;) {
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            accepted_++;
            conns_.push_back(Conn{fd, {}, {}, 0, std::nullopt, {}, false, false});
        }
    }

    // Reads what arrived and answers every complete request.
    void read_from(Conn &c) {
        char buf[65536];
        for (;;) {
            ssize_t n = recv(c.fd, buf, sizeof buf, 0);
            if (n > 0) {
                c.in.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) c.dead = true;
            break;
        }
        while (!c.dead && handle_one(c)) {
        }
    }

    // Parses and answers one request from c.in; false when it is incomplete.
    bool handle_one(Conn &c) {
        std::size_t head_end = c.in.find("\r\n\r\n");
        if (head_end == std::string::npos) return false;
        std::string head = c.in.substr(0, head_end);
        const std::string length = header_value(head, "content-length");
        const std::size_t content_length = length.empty() ? 0 : std::stoul(length);
        if (c.in.size() < head_end + 4 + content_length) return false;
        std::string body = c.in.substr(head_end + 4, content_length);
        c.in.erase(0, head_end + 4 + content_length);

        std::size_t sp1 = head.find(' ');
        std::size_t sp2 = head.find(' ', sp1 + 1);
        std::string path = head.substr(sp1 + 1, sp2 - sp1 - 1);
        {
            std::lock_guard<std::mutex> g(mu_);
            hits_[path]++;
        }
        route(c, path, head, body);
        return !c.dead;
    }

    // The endpoints.
    void route(Conn &c, const std::string &path, const std::string &head, const std::string &body) {
        if (path == "/ok") {
            c.out += response(200, "OK", "Content-Type: application/json\r\n", "{\"ok\":true}");
        } else if (path == "/status/503") {
            c.out += response(503, "Service Unavailable",
                              "Retry-After: 7\r\nContent-Type: text/plain\r\n", "busy");
        } else if (path == "/retry/429" || path == "/retry/503") {
            // Retry-After carries whatever the request's X-Retry-After held,
            // so a test can send a date computed just before the request.
            const bool limited = path == "/retry/429";
            c.out +=
                response(limited ? 429 : 503, limited ? "Too Many Requests" : "Service Unavailable",
                         "Retry-After: " + header_value(head, "x-retry-after") + "\r\n", "later");
        } else if (path == "/hints/503") {
            // Only the 103 block says when to come back; the 503 does not.
            c.out += "HTTP/1.1 103 Early Hints\r\nRetry-After: 99\r\n\r\n";
            c.out += response(503, "Service Unavailable", "", "busy");
        } else if (path == "/redirect") {
            c.out += response(302, "Found", "Location: /ok\r\n", "");
        } else if (path == "/huge") {
            c.out += response(200, "OK", "Content-Type: application/octet-stream\r\n",
                              pattern(8u << 20));
        } else if (path.rfind("/bytes/", 0) == 0) {
            c.out += response(200, "OK", "", pattern(std::stoul(path.substr(7))));
        } else if (path == "/slow" || path.rfind("/delay/", 0) == 0) {
            long ms = path == "/slow" ? 5000 : std::stol(path.substr(7));
            c.delayed_until = Clock::now() + milliseconds(ms);
            c.delayed = response(200, "OK", "", body);
        } else if (path == "/reset") {
            linger lg{1, 0};  // close with RST, no response at all
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            c.dead = true;
        } else if (path == "/hints") {
            // A 1xx block whose headers must not leak into the final result.
            c.out +=
                "HTTP/1.1 103 Early Hints\r\nContent-Type: text/bogus\r\n"
                "Retry-After: 99\r\n\r\n";
            c.out += response(200, "OK", "content-TYPE: \t application/json \t\r\n", "{}");
        } else if (path == "/partial") {
            // Promises 100 bytes, sends 10, hangs up.
            c.out += "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + pattern(10);
            c.close_after_write = true;
        } else if (path == "/hangup") {
            c.dead = true;  // an orderly close (FIN) with no response at all
        } else if (path == "/echo") {
            c.out += response(200, "OK", "Content-Type: text/plain\r\n", head + "\r\n\r\n" + body);
        } else if (path == "/echo-signature") {
            // A careless endpoint echoing only the token's signature: with
            // the predictable header and claims, that is the whole token.
            const std::string auth = header_value(head, "authorization");
            const std::string json = "{\"sig\":\"" + auth.substr(auth.rfind('.') + 1) + "\"}";
            c.out += response(200, "OK", "Content-Type: application/json\r\n", json);
        } else if (path == "/echo-auth" || path == "/echo-auth/500") {
            // A careless endpoint: its Authorization header, back as JSON.
            const std::string json =
                "{\"authorization\":\"" + header_value(head, "authorization") + "\"}";
            const bool ok = path == "/echo-auth";
            c.out += response(ok ? 200 : 500, ok ? "OK" : "Internal Server Error",
                              "Content-Type: application/json\r\n", json);
        } else {
            c.out += response(404, "Not Found", "", "");
        }
    }

    // Sends as much pending output as the socket takes.
    void write_to(Conn &c) {
        while (c.out_off < c.out.size()) {
            ssize_t n =
                send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
            if (n <= 0) {
                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c.dead = true;
                return;
            }
            c.out_off += static_cast<std::size_t>(n);
        }
        c.out.clear();
        c.out_off = 0;
        if (c.close_after_write) c.dead = true;
    }

    int listen_fd_ = -1;
    int wake_[2] = {-1, -1};
    int port_ = 0;
    std::list<Conn> conns_;
    std::atomic<int> accepted_{0};
    std::atomic<int> closed_{0};
    mutable std::mutex mu_;
    std::map<std::string, int> hits_;
    std::thread thread_;
};

// A loopback address whose port is bound once and held open for a test.
class HeldPort {
public:
    HeldPort(const HeldPort &) = delete;
    HeldPort &operator=(const HeldPort &) = delete;
    ~HeldPort() { close(fd_); }

    int port() const { return port_; }
    std::string url(const std::string &path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }

protected:
    // Binds 127.0.0.1:0, so no other process can take the port meanwhile.
    HeldPort() {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        addr_.sin_family = AF_INET;
        addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr_;
        if (fd_ < 0 || bind(fd_, (sockaddr *)&addr_, sizeof addr_) != 0 ||
            getsockname(fd_, (sockaddr *)&addr_, &len) != 0) {
            std::perror("held port");
            std::abort();
        }
        port_ = ntohs(addr_.sin_port);
    }

    int fd_ = -1;
    int port_ = 0;
    sockaddr_in addr_{};
};

// Bound but never listening: the kernel refuses every connect with a RST.
class RefusingPort : public HeldPort {};

// Listening with a full accept queue that is never drained: the kernel drops
// every further SYN, so a connect neither succeeds nor is refused.
class FullBacklogPort : public HeldPort {
public:
    FullBacklogPort() {
        filler_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (filler_ < 0 || listen(fd_, 0) != 0) std::abort();
        // A backlog of 0 holds one connection; this one fills it.
        connect(filler_, (sockaddr *)&addr_, sizeof addr_);
        pollfd p{filler_, POLLOUT, 0};
        ::poll(&p, 1, 1000);
    }
    ~FullBacklogPort() { close(filler_); }

private:
    int filler_ = -1;
};

// Waits for a condition owned by the server thread, with a deadline.
inline bool eventually(const std::function<bool()> &cond,
                       milliseconds budget = milliseconds(3000)) {
    const auto deadline = Clock::now() + budget;
    while (!cond()) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(milliseconds(1));
    }
    return true;
}

}  // namespace test_support
}  // namespace jobrunner
