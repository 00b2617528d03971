/* report.h: a job's journal (its checkpoint file) as one self-contained HTML page with charts. */
#ifndef SLUICE_REPORT_H
#define SLUICE_REPORT_H

#include "sluice/checkpoints/ckpt.h"

/* The numbers of the report's summary table. */
typedef struct sl_report_summary {
    int64_t rows, chunks;               /* the journal's summary row: what the committed chunks hold */
    int64_t rows_undone, chunks_undone; /* by down runs */
    int64_t undone_unknown;             /* from the database: downs killed before they ended, whose counts
                                           it does not have (the two above lack theirs) */
    int64_t wall_ms;                    /* every run's time, start to end (a running one: to now; one killed:
                                           to the last thing the journal recorded while it ran) */
    int64_t throttled_ms;               /* intervals held back (ctl pause, windows, health), max-rate aside */
    int64_t median_ms, p99_ms;          /* chunk time of the committed chunks (nearest rank), -1 none */
    int64_t retries, splits, set_aside, runs;
} sl_report_summary;

/* Write the page for ckpt to out, and its summary to *sum. now_ms (wall
 * clock) ends a run still under way. lost_dir: NULL for a checkpoint file;
 * else ckpt was made from the database's records because the checkpoint
 * directory lost_dir has no file for the job, and the page says so. 0, or
 * -1 with err. */
int sl_report_build(sl_ckpt *ckpt, int64_t now_ms, const char *lost_dir, sl_buf *out, sl_report_summary *sum,
                    sl_err *err) SL_MUSTCHECK;

#endif
