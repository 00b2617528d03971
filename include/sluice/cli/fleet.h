/* fleet.h: one job across many databases: the targets (--db given several times, or --targets FILE), run from one loop.
 *
 * Each target keeps its own truth in its own database and its own journal
 * in <checkpoints>/<NAME>/. `up` and `down` run up to --parallel targets at
 * once, each in a fiber of its own (fiber.h) on the one event loop, each
 * with its own connections, workers, pacing, health checks and windows; a
 * target that fails or cannot be reached does not stop the others, and the
 * exit code is the worst of the targets'. The other commands visit the
 * targets in turn. */
#ifndef SLUICE_FLEET_H
#define SLUICE_FLEET_H

#include <uv.h>

#include "sluice/base/util.h"

typedef struct sl_target {
    char *name;   /* used in output and as the checkpoint subdirectory */
    char *db;     /* the database string, as dburl.h reads it (normalised) */
    char *origin; /* where it was given, for messages: "targets.txt:3" or "--db #2" */
} sl_target;

typedef struct sl_fleet {
    sl_target *targets;
    size_t n;
} sl_fleet;

void sl_fleet_free(sl_fleet *fleet);

/* Read a targets file: one "NAME URL" per line, blank lines and "#"
 * comments ignored. A name is 1 to 63 of [A-Za-z0-9_.-] and starts with a
 * letter or digit. Refused (-1, err naming the file and line): a line that
 * is not NAME URL, a bad name, a duplicate name, a database string sluice
 * cannot use; and the whole file when others than its owner may read it
 * while it holds a password. The file may be a path with restricted
 * permissions (it is read, never written). */
int sl_fleet_read(const char *path, sl_fleet *fleet, sl_err *err) SL_MUSTCHECK;

/* Add a target given with --db (the index-th): its name is made from the
 * string (host, port and database, or a SQLite file's name), made unique. */
int sl_fleet_add_db(sl_fleet *fleet, const char *db, int index, sl_err *err) SL_MUSTCHECK;

/* The target named name, or NULL. */
const sl_target *sl_fleet_find(const sl_fleet *fleet, const char *name);

/* The order of bad exit codes: the worst of a fleet's is its exit code (a
 * failure, then a refusal, then a stop). */
int sl_fleet_worse(int a, int b);

/* The target whose fiber runs now (for log lines and the progress line),
 * or NULL outside a fleet. */
const sl_target *sl_fleet_current(void);

/* Call fn(target, loop, arg) for each target and return the worst exit
 * code. With parallel > 0, each call runs in a fiber on loop, the caller's
 * (fn runs its commands on it), at most parallel at once, in order; what
 * the commands leave closing is the caller's to run. With 0 one after the
 * other on the main stack (fn gets loop NULL: each command makes its own). */
int sl_fleet_run(const sl_fleet *fleet, uv_loop_t *loop, size_t parallel,
                 int (*fn)(const sl_target *target, uv_loop_t *loop, void *arg), void *arg) SL_MUSTCHECK;

#endif
