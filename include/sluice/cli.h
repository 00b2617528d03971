/* cli.h: the command line (SPEC "Commands") and the commands behind it. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include "sluice/job.h"
#include "sluice/session.h"

/* `down --on-conflict`: what to do with a row someone else changed after
 * the job wrote it. */
typedef enum sl_on_conflict {
    SL_CONFLICT_STOP,      /* change nothing in that chunk, report, exit 1 (default) */
    SL_CONFLICT_SKIP,      /* leave those rows as they are, restore the rest */
    SL_CONFLICT_OVERWRITE, /* restore them too */
} sl_on_conflict;

/* Global options, resolved from flags and environment. */
typedef struct sl_opts {
    const char *db;             /* conninfo: --db, SLUICE_DB, DATABASE_URL, or "" (libpq's PG* variables) */
    const char *jobs_dir;       /* --jobs, default "./jobs" */
    const char *ckpt_dir;       /* --checkpoints, default SL_DEFAULT_CKPT_DIR */
    int json;                   /* --json */
    int force;                  /* --force: resume a job whose file changed */
    int no_wait;                /* --no-wait */
    int progress_tty;           /* stderr is a terminal: draw a progress line */
    sl_on_conflict on_conflict; /* --on-conflict (down) */
} sl_opts;

#define SL_DEFAULT_CKPT_DIR ".sluice"

/* Entry point of the sluice binary. Returns the process exit code. */
int sl_cli_main(int argc, char **argv);

/* The commands. Each returns an exit code (SL_EXIT_*). jobs are all the jobs
 * of the jobs directory, already validated. */
int sl_cmd_up(const sl_opts *opts, sl_jobset *jobs, const char *only);
int sl_cmd_status(const sl_opts *opts, sl_jobset *jobs, const char *only);
int sl_cmd_history(const sl_opts *opts, sl_jobset *jobs);
int sl_cmd_plan(const sl_opts *opts, sl_job *job);
int sl_cmd_stamp(const sl_opts *opts, sl_job *job, const char *state);
/* target: a job name, "-N" or "base" (see SPEC `down`). */
int sl_cmd_down(const sl_opts *opts, sl_jobset *jobs, const char *target);

/* Run one job's pending chunks on an open session (used by sl_cmd_up). */
int sl_up_job(sl_session *sess, const sl_opts *opts, sl_job *job);

#endif
