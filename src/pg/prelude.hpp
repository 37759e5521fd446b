/*
 * prelude.hpp — the one door through which Postgres headers enter C++.
 *
 * postgres.h comes first, everything inside extern "C". A file that uses
 * both worlds includes the src/core headers (plain C++) before this one: core
 * headers refuse to compile once postgres.h is in, so Postgres macros never
 * leak into code that must build and be tested without Postgres.
 */
#pragma once

extern "C" {
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

/* Postgres defines these as macros; they collide with the C++ library. */
#undef vsnprintf
#undef snprintf
#undef vsprintf
#undef sprintf
#undef vfprintf
#undef fprintf
#undef vprintf
#undef printf
#undef gettext
#undef dgettext
#undef ngettext
#undef dngettext
