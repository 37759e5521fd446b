/*
 * json_body.cpp — a response body is stored as jsonb exactly when jsonb_in
 * would accept it.
 *
 * The fast path runs Postgres's JSON parser (pg_parse_json, the one jsonb_in
 * uses) with de-escaping on, so it refuses what jsonb refuses: bad syntax,
 * \u0000, escapes the database encoding cannot hold. It reports errors as
 * values, never by ERROR. Two things jsonb_in checks beyond the parser are
 * numbers (numeric's range) and stack depth (an ERROR inside the parser):
 * an ordinary number cannot exceed numeric's range, and a shallow document
 * cannot exhaust the stack, so only bodies with an exotic number or deep
 * nesting take the slow path, jsonb_in itself in a subtransaction.
 */
#include "pg/json_body.hpp"

extern "C" {
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"
}

#include <cstring>

namespace jobrunner {

namespace {

// Deeper than this, the parser's recursion could reach check_stack_depth().
constexpr int kShallowDepth = 256;
// An integer or decimal of at most this many characters fits numeric.
constexpr size_t kPlainNumberChars = 1000;

// Deepest nesting of [ and { outside strings, stopping once past limit.
int nesting_depth(const char *data, size_t len, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < len && deepest <= limit; ++i) {
        const char c = data[i];
        if (in_string) {
            if (c == '\\') {
                ++i;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest) deepest = depth;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

struct ScanState {
    bool exotic_number = false;
};

void note_number(void *state, char *token, JsonTokenType type) {
    if (type != JSON_TOKEN_NUMBER) return;
    auto *scan = static_cast<ScanState *>(state);
    if (strpbrk(token, "eE") != nullptr || strlen(token) > kPlainNumberChars) {
        scan->exotic_number = true;
    }
}

// jsonb_in on a NUL-terminated copy, in a subtransaction: false on any ERROR.
bool jsonb_in_succeeds(const char *data, size_t len) {
    MemoryContext caller_cxt = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    char *text = pnstrdup(data, len);
    volatile bool ok = false;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller_cxt);
    PG_TRY();
    {
        DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
        ok = true;
        ReleaseCurrentSubTransaction();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_cxt);
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
    }
    PG_END_TRY();
    MemoryContextSwitchTo(caller_cxt);
    CurrentResourceOwner = caller_owner;
    pfree(text);
    return ok;
}

}  // namespace

bool jsonb_accepts(const char *data, size_t len) {
    // Text of the database's encoding without NUL, as a text datum must be.
    if (!pg_verifymbstr(data, static_cast<int>(len), true)) return false;
    if (nesting_depth(data, len, kShallowDepth) > kShallowDepth)
        return jsonb_in_succeeds(data, len);

    MemoryContext scratch =
        AllocSetContextCreate(CurrentMemoryContext, "jobrunner json body", ALLOCSET_SMALL_SIZES);
    MemoryContext caller_cxt = MemoryContextSwitchTo(scratch);
    ScanState scan;
    JsonSemAction sem;
    memset(&sem, 0, sizeof sem);
    sem.semstate = &scan;
    sem.scalar = note_number;
    JsonLexContext *lex = makeJsonLexContextCstringLen(
        const_cast<char *>(data), static_cast<int>(len), GetDatabaseEncoding(), true);
    const JsonParseErrorType parsed = pg_parse_json(lex, &sem);
    MemoryContextSwitchTo(caller_cxt);
    MemoryContextDelete(scratch);
    if (parsed != JSON_SUCCESS) return false;
    return !scan.exotic_number || jsonb_in_succeeds(data, len);
}

}  // namespace jobrunner
