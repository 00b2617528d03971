/* cli_help.c: what `sluice --help` and `sluice COMMAND --help` print, and the command names alembic's habits bring. */
#include "sluice/base/log.h"
#include "sluice/cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "cli_internal.h"

const char sl_cli_usage_text[] =
    "usage: sluice [--db URL ...|--targets FILE] [--jobs DIR] [--checkpoints DIR] [--json]\n"
    "              [--metrics HOST:PORT] [--log-format text|json] COMMAND [ARGS]\n"
    "\n"
    "Runs data migrations over large tables in keyset-paginated chunks, each one short\n"
    "transaction, checkpointed so an interrupted run resumes exactly where it stopped.\n"
    "\n"
    "commands:\n"
    "  up [JOB]                run pending jobs in order (or only JOB); resume any that stopped\n"
    "  down JOB | -N | base    roll back JOB and every later applied job / the last N / all\n"
    "  status [JOB]            each job's state, read from the database (else the checkpoint files)\n"
    "  history                 every run, with times and row counts\n"
    "  plan JOB [--sample N]   dry run: validate, estimate rows and chunks, show chunk SQL and its plan;\n"
    "                          --sample N runs the first N chunks, each rolled back, and times them\n"
    "  stamp JOB done|pending  record a job's state without running it\n"
    "  report JOB [-o FILE]    the job's runs as one HTML page with charts (from its checkpoint file)\n"
    "  ctl JOB pause|resume|status|set NAME=VALUE   talk to a running job\n"
    "  (upgrade, downgrade and current are aliases of up, down and status)\n"
    "\n"
    "options:\n"
    "  --db URL           postgresql://..., postgres://..., SQLAlchemy's postgresql+DRIVER://..., a libpq\n"
    "                     key=value string, sqlite:PATH or sqlite:///PATH (default: $SLUICE_DB, else\n"
    "                     $DATABASE_URL, else libpq's PG* variables); a password is better kept there\n"
    "                     or in PGPASSWORD or ~/.pgpass than on the command line. Given several times:\n"
    "                     a fleet, every command applies to each database\n"
    "  --targets FILE     a fleet: one \"NAME URL\" a line (# comments); checkpoints in <checkpoints>/NAME/\n"
    "  --target NAME      only this target of the fleet\n"
    "  --parallel N       up and down: at most N targets at once (default 4)\n"
    "  --jobs DIR         directory of job files (default ./jobs)\n"
    "  --checkpoints DIR  directory of checkpoint files (default ./" SL_DEFAULT_CKPT_DIR ")\n"
    "  --json             machine-readable output (status, history)\n"
    "  --metrics HOST:PORT  up, down: serve Prometheus metrics at http://HOST:PORT/metrics while running\n"
    "  --log-format FMT   text (default) or json: one JSON object a log line on stderr\n"
    "  --version          print sluice's version\n"
    "  --allow-changed-statements  resume a job whose file changed after its first chunk (what it walks,\n"
    "                     table, key, where and undo columns, must stay as it was)\n"
    "  --allow-no-index   walk a key no btree index leads with (every chunk scans the table)\n"
    "  --allow-lost-undo  go on with a snapshot job whose undo records are gone: up continues it, down\n"
    "                     leaves those chunks as they are\n"
    "  --no-wait          outside the job's windows, exit 3 instead of waiting\n"
    "  --replica URL      a streaming replica of the database (repeatable; default: $SLUICE_REPLICAS, URLs\n"
    "                     separated by spaces): max-replica-lag measures the lag there\n"
    "  --allow-unmeasured-lag  run a job with max-replica-lag whose lag cannot be measured\n"
    "  --on-conflict MODE down: rows changed by someone else since the job wrote them:\n"
    "                     stop (default: change nothing in that chunk, exit 1), skip (leave them), overwrite\n"
    "  -h, --help         this text; `sluice COMMAND --help` for one command\n"
    "\n"
    "exit codes: 0 done, 1 a job failed (resumable), 2 bad usage or refused (nothing changed),\n"
    "            3 stopped before done (resumable)\n";

typedef struct command_help {
    const char *name;
    const char *text;
} command_help;

static const command_help helps[] = {
    {"up", "usage: sluice up [JOB]\n\n"
           "Run every pending job in file-name order, or only JOB. A job that stopped or failed resumes\n"
           "after its last committed chunk. Jobs already done are skipped. Every job file is validated\n"
           "before anything runs. SIGINT/SIGTERM/SIGHUP: the chunk in flight finishes, then exit 3; a\n"
           "second signal aborts the chunk (it rolls back). --allow-changed-statements resumes a job whose\n"
           "file changed (not what it walks); --allow-no-index walks a key without an index.\n"},
    {"down", "usage: sluice down JOB | -N | base [--on-conflict stop|skip|overwrite]\n\n"
             "Roll back JOB and every later applied job, the last N applied jobs, or all of them, newest\n"
             "first, one chunk per transaction, newest chunk first. Works on done, stopped and failed jobs\n"
             "and undoes only the chunks that committed; resumable like up (SIGINT: exit 3). Each job rolls\n"
             "back the way its undo directive says: its down section, or the values saved by\n"
             "snapshot(COL, ...) / snapshot(*). A row someone else changed after the job wrote it is a\n"
             "conflict: stop (default) changes nothing in that chunk and exits 1; skip leaves those rows as\n"
             "they are; overwrite restores them too. A job with no way back is refused. downgrade is an alias.\n"},
    {"status", "usage: sluice status [JOB] [--json]\n\n"
               "Each job's state, rows, chunks, last key, read from the checkpoint files (no database needed).\n"},
    {"history", "usage: sluice history [--json]\n\nEvery run of every job, oldest first, with times and row counts,\n"
                "as the database records them (sluice_runs); where it cannot tell, from the checkpoint files.\n"},
    {"plan", "usage: sluice plan JOB [--sample N]\n\n"
             "Dry run against the live database: table, key, index, estimated rows and chunks, the first\n"
             "chunk's bounds, its SQL and EXPLAIN; requires and verify; warns about sequential scans. Changes\n"
             "nothing. --sample N (1 to 1000) runs the first N chunks, each in a transaction that is rolled\n"
             "back, and estimates the job from them: time per chunk (median, p90), total time at the job's\n"
             "pace, WAL per chunk on PostgreSQL. No row of sluice's is written, no table created. Exits 2\n"
             "when up would refuse the job (no index, a statement the server cannot plan, ...), after\n"
             "showing each reason; 0 otherwise (requires not true yet is shown, not counted).\n"},
    {"report", "usage: sluice report JOB [-o FILE]\n\n"
               "Write the job's journal (its checkpoint file: runs, chunks, holds, retries, splits, rows set aside)\n"
               "as one self-contained HTML page with charts, to FILE (default JOB.report.html), created 0600.\n"
               "Works for finished, stopped and running jobs, and for down runs. No database needed while the\n"
               "file is there; without one (a lost directory) the page is made from the database's records.\n"},
    {"stamp", "usage: sluice stamp JOB done|pending\n\n"
              "Record a job's state without running it. pending forgets its progress (in the checkpoint file\n"
              "and in the database's sluice_progress table) so the next `up` runs it from the start.\n"},
    {"ctl", "usage: sluice ctl JOB pause|resume|status|set NAME=VALUE\n\n"
            "Talk to a running job: its up or its down, through its socket in --checkpoints; on PostgreSQL,\n"
            "when no runner listens there (it runs on another machine), through the database (--db).\n"},
};

const char *sl_cli_canonical_command(const char *cmd)
{
    if (strcmp(cmd, "upgrade") == 0)
        return "up";
    if (strcmp(cmd, "downgrade") == 0)
        return "down";
    if (strcmp(cmd, "current") == 0)
        return "status";
    return cmd;
}

int sl_cli_print_command_help(const char *cmd)
{
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        if (strcmp(helps[i].name, cmd) == 0) {
            fputs(helps[i].text, stdout);
            return SL_EXIT_OK;
        }
    }
    sl_error("unknown command \"%s\" (hint: sluice --help lists the commands)", cmd);
    return SL_EXIT_USAGE;
}
