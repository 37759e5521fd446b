/*
 * jwt_bench.cpp — how many per-job tokens one core can mint per second.
 *
 * Each iteration does what the worker does per dispatch: encode_claims() for
 * a typical user, then sign_hs256(). Standalone (std::chrono only); see
 * bench/README.md for the build line.
 */
#include "core/jwt.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

// A claim set shaped like a Supabase/PostgREST user's.
jobrunner::UserClaims typical_claims(std::int64_t i) {
    jobrunner::UserClaims claims;
    claims.sub = "6f1c2a9e-3b4d-4e8f-9a0b-1c2d3e4f5a6b";
    claims.role = "authenticated";
    claims.email = "ana.silva@example.com";
    claims.iat = 1700000000 + i;
    claims.exp = claims.iat + 360;
    return claims;
}

// Mints n tokens; the checksum keeps the compiler from dropping the work.
std::size_t mint(std::int64_t n, const std::string &secret) {
    std::size_t checksum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::string token =
            jobrunner::sign_hs256(jobrunner::encode_claims(typical_claims(i)), secret);
        checksum += static_cast<unsigned char>(token[token.size() - 1]) + token.size();
    }
    return checksum;
}

// Seconds elapsed while minting n tokens.
double time_mint(std::int64_t n, const std::string &secret, std::size_t &checksum) {
    const auto start = Clock::now();
    checksum += mint(n, secret);
    return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

// Runs for about the requested seconds (argv[1], default 2) and reports the
// best of five rounds, the figure least disturbed by other load.
int main(int argc, char **argv) {
    const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
    const std::string secret = "bench-secret-0123456789abcdef0123456789";
    std::size_t checksum = 0;
    std::int64_t n = 1000;
    while (time_mint(n, secret, checksum) < 0.05) n *= 2;  // calibrate
    const double per_round = seconds / 5;
    const double probe = time_mint(n, secret, checksum);
    n = static_cast<std::int64_t>(static_cast<double>(n) * per_round / probe) + 1;
    double best = 0;
    for (int round = 0; round < 5; ++round) {
        const double rate = static_cast<double>(n) / time_mint(n, secret, checksum);
        if (rate > best) best = rate;
    }
    std::printf("jwt: %.0f tokens/s/core\n", best);
    std::fprintf(stderr, "(checksum %zu, %lld tokens per round)\n", checksum,
                 static_cast<long long>(n));
    return 0;
}
