/*
 * worker.hpp — the dispatcher's entry point.
 */
#pragma once

#include "pg/prelude.hpp"

// A dispatcher: serves one database (the launcher starts one per database).
extern "C" PGDLLEXPORT void jobrunner_worker_main(Datum main_arg);

namespace jobrunner {

// Set by SIGTERM in the launcher and the dispatchers: their loops end.
extern volatile sig_atomic_t got_sigterm;
void handle_sigterm(SIGNAL_ARGS);

// True in a dispatcher process (hooks it runs get a short lock_timeout).
extern bool running_in_dispatcher;

// Reloads the configuration when asked and answers interrupts other
// backends wait for (ProcSignalBarriers), between transactions.
void absorb_interrupts();

}  // namespace jobrunner
