/*
 * cancel.cpp — cancel_job's way to the dispatcher: the attempts whose job a
 * transaction canceled while their request ran are handed to the
 * dispatcher when that transaction commits (request_cancel in shmem), and
 * not at all when it, or the savepoint they were canceled in, rolls back.
 *
 * Plain C-style code: no C++ object lives here.
 */
#include "pg/boundary.hpp"
#include "pg/shmem.hpp"

extern "C" {
#include "utils/uuid.h"
}

namespace jobrunner {

namespace {

// Cancels of the current transaction, with the subtransaction each was
// made in; more than kMaxPendingCancels are not kept (see shmem.hpp).
struct PendingCancel {
    char job_id[kJobIdChars];
    int32 attempt;
    SubTransactionId subxact;
};
PendingCancel pending[kMaxPendingCancels];
int pending_count = 0;
bool callbacks_registered = false;

void on_xact(XactEvent event, void *) {
    switch (event) {
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            for (int i = 0; i < pending_count; i++) {
                (void)request_cancel(pending[i].job_id, pending[i].attempt);
            }
            pending_count = 0;
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            pending_count = 0;
            break;
        case XACT_EVENT_PRE_PREPARE:
            // A prepared transaction may yet be rolled back, by another
            // session, long after: its cancels could be neither kept here
            // nor handed over.
            if (pending_count > 0) {
                ereport(ERROR,
                        (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                         errmsg("cannot PREPARE a transaction that has canceled a running job"),
                         errhint("Call cancel_job in a transaction that commits directly.")));
            }
            break;
        default:
            break;
    }
}

// A savepoint rolled back takes its cancels (and those of savepoints inside
// it) with it; one released hands them to its parent.
void on_subxact(SubXactEvent event, SubTransactionId mine, SubTransactionId parent, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        int kept = 0;
        for (int i = 0; i < pending_count; i++) {
            if (pending[i].subxact < mine) pending[kept++] = pending[i];
        }
        pending_count = kept;
    } else if (event == SUBXACT_EVENT_COMMIT_SUB) {
        for (int i = 0; i < pending_count; i++) {
            if (pending[i].subxact >= mine) pending[i].subxact = parent;
        }
    }
}

}  // namespace

}  // namespace jobrunner

using namespace jobrunner;

// _cancel_at_commit(job uuid, attempt int): abort this attempt's request
// once the calling transaction commits.
JOBRUNNER_FUNCTION(jobrunner_cancel_at_commit) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) PG_RETURN_VOID();
    if (!callbacks_registered) {
        RegisterXactCallback(on_xact, nullptr);
        RegisterSubXactCallback(on_subxact, nullptr);
        callbacks_registered = true;
    }
    if (pending_count < kMaxPendingCancels) {
        PendingCancel &c = pending[pending_count++];
        strlcpy(c.job_id, DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0))),
                kJobIdChars);
        c.attempt = PG_GETARG_INT32(1);
        c.subxact = GetCurrentSubTransactionId();
    }
    PG_RETURN_VOID();
}
