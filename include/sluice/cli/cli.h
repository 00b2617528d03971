/* cli.h: the command line (README "Commands") and the commands behind it. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include "sluice/cli/fleet.h"
#include "sluice/db/session.h"
#include "sluice/engine/run.h"
#include "sluice/engine/up.h"
#include "sluice/jobs/job.h"

/* Global options, resolved from flags and environment. */
typedef struct sl_opts {
    const char *db;       /* conninfo: --db, SLUICE_DB, DATABASE_URL, or "" (libpq's PG* variables) */
    const char *jobs_dir; /* --jobs, default "./jobs" */
    int json;             /* --json */
    sl_run_opts run;      /* the engine's: --checkpoints, --allow-*, --no-wait, --on-conflict */
    const char *target;   /* a fleet's target these options are for (its name), NULL with one database */
    uv_loop_t *loop;      /* the loop a fleet's targets share, NULL: a command makes its own */
    const char *metrics;  /* --metrics HOST:PORT (up, down), or NULL */
    const char *out_file; /* report -o FILE, or NULL */
    int64_t sample;       /* plan --sample N, or 0 */
} sl_opts;

#define SL_DEFAULT_CKPT_DIR ".sluice"
#define SL_MAX_REPLICAS     16 /* --replica, at most */

/* A fleet's target as options of its own: its database, its checkpoint
 * subdirectory <checkpoints>/<NAME> (malloc'd into *dir, the caller frees
 * it), its name. */
sl_opts sl_target_opts(const sl_opts *opts, const sl_target *t, char **dir);

/* Entry point of the sluice binary. Returns the process exit code. */
int sl_cli_main(int argc, char **argv) SL_MUSTCHECK;

/* The commands. Each returns an exit code (SL_EXIT_*). jobs are all the jobs
 * of the jobs directory, already validated. */
int sl_cmd_up(const sl_opts *opts, sl_jobset *jobs, const char *only) SL_MUSTCHECK;
/* status and history over one database (fleet NULL) or every target of a
 * fleet, each target's checkpoints in <checkpoints>/<NAME>/. */
int sl_cmd_status(const sl_opts *opts, const sl_fleet *fleet, const char *only) SL_MUSTCHECK;
int sl_cmd_history(const sl_opts *opts, const sl_fleet *fleet) SL_MUSTCHECK;
int sl_cmd_plan(const sl_opts *opts, sl_job *job) SL_MUSTCHECK;
/* `report JOB [-o FILE]`: the job's journal as one HTML page (report.h). */
int sl_cmd_report(const sl_opts *opts, const char *job) SL_MUSTCHECK;
int sl_cmd_stamp(const sl_opts *opts, sl_job *job, const char *state) SL_MUSTCHECK;
/* `ctl JOB REQUEST`: to the runner's socket in --checkpoints, else (PostgreSQL)
 * through the database to the runner holding the job's lease (ctl.h). idle
 * (a fleet's target, NULL elsewhere): a status or set for a job no runner
 * runs there is no error; it is said as such, *idle set, and 0 returned. */
int sl_cmd_ctl(const sl_opts *opts, const char *job, const char *req, int *idle) SL_MUSTCHECK;
/* target: a job name, "-N" or "base" (README "Commands", `down`). */
int sl_cmd_down(const sl_opts *opts, sl_jobset *jobs, const char *target) SL_MUSTCHECK;

#endif
