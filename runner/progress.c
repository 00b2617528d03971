/* progress.c: the progress line (terminal) or periodic progress log lines (pipes, files). */
#include "sluice/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

static void format_line(char *out, size_t outsz)
{
    double rate = sl_progress_rate();
    char pct[16] = "", eta[32] = "";
    if (prog.total > 0) {
        double p = 100.0 * (double)prog.done / (double)prog.total;
        if (p > 99.9)
            p = 99.9; /* estimates are estimates: 100 % is said by "done" */
        snprintf(pct, sizeof pct, " (%.1f%%)", p);
        if (rate > 0 && prog.total > prog.done) {
            int64_t secs = (int64_t)((double)(prog.total - prog.done) / rate);
            snprintf(eta, sizeof eta, ", eta %lld:%02lld:%02lld", (long long)(secs / 3600), (long long)(secs / 60 % 60),
                     (long long)(secs % 60));
        }
    }
    if (prog.total > 0)
        snprintf(out, outsz, "%s: %lld of ~%lld rows%s, %.0f rows/s, batch %lld%s%s%s", prog.job, (long long)prog.done,
                 (long long)prog.total, pct, rate, (long long)prog.batch, eta, prog.note[0] ? " | " : "", prog.note);
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
        char line[256];
        format_line(line, sizeof line);
        sl_info("%s", line);
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
