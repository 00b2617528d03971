/* progress.h: rows, percent, rate and ETA, on an updating terminal line (one a target) or as periodic log lines. */
#ifndef SLUICE_PROGRESS_H
#define SLUICE_PROGRESS_H

#include <stdint.h>

/* Start showing progress for job. total is the estimated number of rows
 * (-1 unknown); done is what earlier runs already did. tty selects the
 * updating line (else a log line every 10 s). */
void sl_progress_begin(const char *job, int64_t total, int64_t done, int tty);
/* After each chunk: rows done so far (all runs), the current batch size, and
 * the rate shown and the ETA is told by (rows per second: sl_metrics_rate,
 * over the last minute the run ran). */
void sl_progress_update(int64_t done, int64_t batch, double rate);
/* A note shown on the progress line until cleared with NULL ("paused: replica
 * lag ..."). The log says the same separately. */
void sl_progress_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Erase the line and stop (prints nothing else). */
void sl_progress_end(void);
/* Several runs at once (a fleet's targets): owner names the one calling,
 * and each gets a line of its own on a terminal, and a total. */
void sl_progress_set_owner(const char *(*owner)(void));

#endif
