/* schema.h: sluice's own tables in the target database, and the database's identity.
 *
 * Everything that decides what runs lives in the target database, written
 * in the transaction that does the work (README "Where state lives"):
 *
 *   sluice_jobs      one row per job: its state, the job file it ran with,
 *                    what it walks (table, key, where, undo columns), where
 *                    its walk ends, and the runner holding it (a lease)
 *   sluice_progress  one row per committed chunk, in the chunk's transaction
 *   sluice_ranges    the key split of a job with workers
 *   sluice_undo      the undo record of each chunk, in the chunk's transaction
 *   sluice_meta      sluice's id for this database (checkpoint files are bound
 *                    to it)
 *
 * They are created in the first schema of the connection's search_path on
 * PostgreSQL; on SQLite in the main database. A role that may not CREATE
 * can run sluice once they exist: nothing is created that is already there. */
#ifndef SLUICE_SCHEMA_H
#define SLUICE_SCHEMA_H

#include <stdint.h>

#include "sluice/db/session.h"

#define SL_PROGRESS_TABLE "sluice_progress"
#define SL_JOBS_TABLE     "sluice_jobs"
#define SL_RANGES_TABLE   "sluice_ranges"
#define SL_UNDO_TABLE     "sluice_undo"
#define SL_META_TABLE     "sluice_meta"
#define SL_CTL_TABLE      "sluice_ctl"  /* PostgreSQL: `sluice ctl` requests through the database (ctl.h) */
#define SL_RUNS_TABLE     "sluice_runs" /* every up, down and stamp, for `history` (run.c) */

/* Which database this is, as far as sluice can tell. */
typedef struct sl_db_identity {
    char id[48];      /* sluice's random id for the database, kept in sluice_meta */
    char cluster[32]; /* PostgreSQL's system identifier ("" on SQLite, or when it cannot be read) */
    char name[256];   /* current_database(), or the SQLite file's path */
    int64_t timeline; /* PostgreSQL: the primary's timeline (sl_schema_timeline); 0 when unknown, or SQLite */
    int64_t started;  /* when its server started (sl_schema_timeline): a crash moves it; 0 unknown */
    /* PostgreSQL, filled by sl_schema_ensure: how chunks are isolated and fenced
     * (sl_schema_chunk_begin, sl_schema_fence_lock) */
    int runner_key;   /* sluice_jobs.runner is in a unique index: taking a job over is a key update */
    int serializable; /* default_transaction_isolation is serializable for this role and database */
} sl_db_identity;

/* The timeline the server writes its WAL on (PostgreSQL): 1 for a new
 * cluster, one more at each promotion of a standby or end of a
 * point-in-time restore, which is how a server that lost another's last
 * commits is told apart. 0 when it cannot tell (a standby, SQLite, an
 * error). *started: when the server (the postmaster) started, in
 * microseconds since the epoch, which a crash and its restart move; 0 with
 * a timeline of 0; on SQLite, this machine's boot (sl_machine_boot). Both
 * readable by any role. */
int64_t sl_schema_timeline(sl_session *sess, int64_t *started);

/* Create whichever of sluice's tables are missing, add columns older
 * sluices did not have, and give the database its id; then read the
 * identity into *id. Safe to run from several runners at once. Called once
 * a command is past its refusals, so a refused command leaves the database
 * as it was. 0, or -1 with err (naming the privilege a role lacks), or
 * SL_EREFUSED when the role lacks it (nothing changed). */
int sl_schema_ensure(sl_session *sess, sl_db_identity *id, sl_err *err) SL_MUSTCHECK;

/* A chunk's BEGIN. On PostgreSQL one that reads rows before it writes them
 * (reads_first: a snapshot's, whose undo record holds them as they were)
 * runs at repeatable read, so that the rows its up statements change are
 * the very versions it saved: under read committed a row another session
 * changed in between, or a row it inserted, would be written with a record
 * of what was there before them, and `down` would undo their change, or
 * delete their row. A serializable default is kept. */
const char *sl_schema_chunk_begin(const sl_session *sess, const sl_db_identity *id, int reads_first);

/* The lock a chunk's fence takes on its job's row (sl_lease_fence_sql),
 * which a takeover must conflict with. A transaction that sees the row as
 * it was when it began (reads_first, or a serializable default) locks the
 * row's old version: with runner in a unique index, taking the job over is
 * a key update, which fails FOR KEY SHARE there; without it, FOR SHARE,
 * which a lease renewal in flight also fails (the chunk is retried). */
const char *sl_schema_fence_lock(const sl_db_identity *id, int reads_first);

/* Read-only: 1 and *id when sluice has run against this database, 0 when
 * its tables are not there, -1 on error (SL_EREFUSED: the role may not
 * read them). */
int sl_schema_identity(sl_session *sess, sl_db_identity *id, sl_err *err) SL_MUSTCHECK;

/* Every job sluice's tables here record (a row in sluice_jobs or a chunk in
 * sluice_progress), in no order: *names (n of them, each and the array the
 * caller's to free) is empty when the tables are not there. Read-only. 0,
 * or -1 with err. */
int sl_schema_job_names(sl_session *sess, char ***names, size_t *n, sl_err *err) SL_MUSTCHECK;

/* Before a job's first chunk: whether sluice's tables in another schema
 * (not the one this connection's search_path finds or would create them in)
 * record the job as run on the same table. A changed search_path (another
 * role, a pooler's setting, a URL's options) would otherwise start it again
 * from nothing, its chunks done twice. A set this role cannot read counts
 * as recording it when a role that may write its sluice_jobs may read the
 * job's table: whether it ran there cannot be told. 0 when not (or on
 * SQLite); SL_EREFUSED with err naming the schema(s) and ending with so
 * (what would follow); -1 on error. */
int sl_schema_job_elsewhere(sl_session *sess, const char *job, const char *table, const char *so,
                            sl_err *err) SL_MUSTCHECK;

#endif
