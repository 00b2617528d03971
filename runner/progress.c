/* progress.c: the progress line (terminal) or periodic progress log lines (pipes, files). */
#include "sluice/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/util.h"

static struct {
    int active, tty, drawn;
    char job[128];
    int64_t total, start_done, done, batch;
    int64_t start_ms, last_draw_ms;
    char line[512];
    char note[256];
} prog;

static void clear_line(void)
{
    if (prog.active && prog.tty && prog.drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static void draw_line(void)
{
    if (prog.active && prog.tty && prog.line[0]) {
        /* the job's name is a file name: it may hold anything */
        sl_buf shown = {0};
        sl_buf_add_visible(&shown, prog.line, strlen(prog.line), 1);
        fputs(shown.data, stderr);
        sl_buf_free(&shown);
        fflush(stderr);
        prog.drawn = 1;
    }
}

double sl_progress_rate(void)
{
    int64_t elapsed = sl_mono_ms() - prog.start_ms;
    if (elapsed <= 0)
        return 0;
    return (double)(prog.done - prog.start_done) * 1000.0 / (double)elapsed;
}

/* Seconds left at this run's rate, -1 when that cannot be told. */
static int64_t eta_seconds(double rate)
{
    if (prog.total <= 0 || rate <= 0 || prog.total <= prog.done)
        return -1;
    return (int64_t)((double)(prog.total - prog.done) / rate);
}

/* "[#######.............] " for the terminal: the share of the estimate done. */
static void format_bar(double pct, char *out, size_t outsz)
{
    enum { WIDTH = 20 };
    char bar[WIDTH + 1];
    int filled = (int)(pct * WIDTH / 100.0);
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    snprintf(out, outsz, "[%s] ", bar);
}

static void format_line(char *out, size_t outsz)
{
    double rate = sl_progress_rate();
    char pct[16] = "", eta[32] = "", bar[32] = "";
    if (prog.total > 0) {
        double p = 100.0 * (double)prog.done / (double)prog.total;
        if (p > 99.9)
            p = 99.9; /* estimates are estimates: 100 % is said by "done" */
        snprintf(pct, sizeof pct, " (%.1f%%)", p);
        if (prog.tty)
            format_bar(p, bar, sizeof bar);
        if (eta_seconds(rate) >= 0) {
            int64_t secs = eta_seconds(rate);
            snprintf(eta, sizeof eta, ", eta %lld:%02lld:%02lld", (long long)(secs / 3600), (long long)(secs / 60 % 60),
                     (long long)(secs % 60));
        }
    }
    if (prog.total > 0)
        snprintf(out, outsz, "%s%s: %lld of ~%lld rows%s, %.0f rows/s, batch %lld%s%s%s", bar, prog.job,
                 (long long)prog.done, (long long)prog.total, pct, rate, (long long)prog.batch, eta,
                 prog.note[0] ? " | " : "", prog.note);
    else
        snprintf(out, outsz, "%s: %lld rows, %.0f rows/s, batch %lld%s%s", prog.job, (long long)prog.done, rate,
                 (long long)prog.batch, prog.note[0] ? " | " : "", prog.note);
}

void sl_progress_begin(const char *job, int64_t total, int64_t done, int tty)
{
    memset(&prog, 0, sizeof prog);
    snprintf(prog.job, sizeof prog.job, "%s", job);
    prog.total = total;
    prog.start_done = prog.done = done;
    prog.tty = tty;
    prog.start_ms = prog.last_draw_ms = sl_mono_ms();
    prog.active = 1;
    sl_log_set_hooks(clear_line, draw_line);
}

void sl_progress_update(int64_t done, int64_t batch)
{
    if (!prog.active)
        return;
    prog.done = done;
    prog.batch = batch;
    if (prog.total >= 0 && done > prog.total)
        prog.total = done; /* the estimate was low */
    int64_t now = sl_mono_ms();
    if (prog.tty) {
        if (now - prog.last_draw_ms < 100 && prog.drawn)
            return;
        prog.last_draw_ms = now;
        clear_line();
        format_line(prog.line, sizeof prog.line);
        draw_line();
    } else if (now - prog.last_draw_ms >= 10000) {
        prog.last_draw_ms = now;
        char line[512];
        format_line(line, sizeof line);
        double rate = sl_progress_rate();
        json_t *fields = json_pack("{sIsIsfsI}", "rows", (json_int_t)prog.done, "batch", (json_int_t)prog.batch, "rate",
                                   rate, "eta_s", (json_int_t)eta_seconds(rate));
        if (prog.total > 0)
            json_object_set_new(fields, "rows_estimated", json_integer(prog.total));
        sl_log_event(SL_LOG_INFO, "progress", fields, "%s", line);
    }
}

void sl_progress_note(const char *fmt, ...)
{
    prog.note[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prog.note, sizeof prog.note, fmt, ap);
        va_end(ap);
    }
    if (prog.active && prog.tty) {
        clear_line();
        format_line(prog.line, sizeof prog.line);
        draw_line();
    }
}

void sl_progress_end(void)
{
    clear_line();
    prog.active = 0;
    prog.drawn = 0;
    sl_log_set_hooks(NULL, NULL);
}
