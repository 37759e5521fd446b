/*
 * worker.hpp — the background worker's entry point.
 */
#pragma once

#include "pg/prelude.hpp"

extern "C" PGDLLEXPORT void jobrunner_worker_main(Datum main_arg);
