/*
 * launcher.hpp — the launcher: one background worker that keeps a
 * dispatcher running for each database pg_jobrunner serves.
 */
#pragma once

#include "pg/prelude.hpp"

namespace jobrunner {

// What the launcher tells a dispatcher it starts (its bgw_extra).
struct DispatcherTarget {
    Oid database_oid;
    char database_name[NAMEDATALEN];
};

// Registers the launcher (only while preloading).
void register_launcher();

// Makes DROP DATABASE of a served database stop its dispatcher first, in
// every backend (only while preloading).
void install_drop_database_hook();

}  // namespace jobrunner

extern "C" PGDLLEXPORT void jobrunner_launcher_main(Datum main_arg);
