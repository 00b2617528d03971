/* progress.c: the progress line (terminal) or periodic progress log lines (pipes, files); one per running target. */
#include "sluice/services/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "sluice/base/log.h"
#include "sluice/base/util.h"
#include "sluice/base/width.h"

/* A fleet runs several targets at once: a line each, and a total. */
#define MAX_SLOTS 64

typedef struct slot {
    int active;
    char owner[64]; /* the target ("" for one database) */
    char job[128];
    int64_t total, done, batch;
    double rate; /* rows per second, as the run last told it */
    int64_t last_log_ms;
    char note[256];
} slot;

static struct {
    int tty;
    slot slots[MAX_SLOTS];
    int drawn_lines;      /* lines drawn on the terminal, to erase before a log line */
    int64_t last_draw_ms; /* the terminal is redrawn at most every 100 ms */
    const char *(*owner)(void);
} prog;

static slot *current(int create)
{
    const char *owner = prog.owner ? prog.owner() : NULL;
    if (!owner)
        owner = "";
    slot *free_slot = NULL;
    for (int i = 0; i < MAX_SLOTS; i++) {
        slot *s = &prog.slots[i];
        if (s->active && strcmp(s->owner, owner) == 0)
            return s;
        if (!s->active && !free_slot)
            free_slot = s;
    }
    if (!create || !free_slot)
        return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    snprintf(free_slot->owner, sizeof free_slot->owner, "%s", owner);
    return free_slot;
}

static int active_slots(void)
{
    int n = 0;
    for (int i = 0; i < MAX_SLOTS; i++)
        n += prog.slots[i].active;
    return n;
}

/* Seconds left at the run's rate, -1 when that cannot be told. */
static int64_t eta_seconds(const slot *s, double rate)
{
    if (s->total <= 0 || rate <= 0 || s->total <= s->done)
        return -1;
    return (int64_t)((double)(s->total - s->done) / rate);
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

/* How much a line says: a terminal narrower than the whole line drops the
 * bar first, then the batch, the rate, the note, the estimate, the ETA. */
enum { SHOW_ALL, NO_BAR, NO_BATCH, NO_RATE, NO_NOTE, NO_TOTAL, NO_ETA, SHOW_LEAST = NO_ETA };

/* with_who: the target's name first (the terminal's lines; a log line has its own prefix) */
static void format_line(const slot *s, int with_who, int drop, char *out, size_t outsz)
{
    double rate = s->rate;
    char pct[16] = "", eta[32] = "", who[80] = "", bar[32] = "", total[48] = "", speed[40] = "", batch[40] = "";
    if (s->owner[0] && with_who)
        snprintf(who, sizeof who, "[%s] ", s->owner);
    if (s->total > 0) {
        double p = 100.0 * (double)s->done / (double)s->total;
        if (p > 99.9)
            p = 99.9; /* estimates are estimates: 100 % is said by "done" */
        snprintf(pct, sizeof pct, " (%.1f%%)", p);
        if (prog.tty && drop < NO_BAR)
            format_bar(p, bar, sizeof bar);
        if (drop < NO_TOTAL)
            snprintf(total, sizeof total, " of ~%lld", (long long)s->total);
        int64_t secs = eta_seconds(s, rate);
        if (secs >= 0 && drop < NO_ETA) {
            snprintf(eta, sizeof eta, ", eta %lld:%02lld:%02lld", (long long)(secs / 3600), (long long)(secs / 60 % 60),
                     (long long)(secs % 60));
        }
    }
    if (drop < NO_RATE)
        snprintf(speed, sizeof speed, ", %.0f rows/s", rate);
    if (drop < NO_BATCH)
        snprintf(batch, sizeof batch, ", batch %lld", (long long)s->batch);
    int note = s->note[0] && drop < NO_NOTE;
    snprintf(out, outsz, "%s%s%s: %lld%s rows%s%s%s%s%s%s", who, bar, s->job, (long long)s->done, total, pct, speed,
             batch, eta, note ? " | " : "", note ? s->note : "");
}

/* The terminal's width (read at each redraw: it may have been resized);
 * 80 when it cannot be told. */
static size_t term_columns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Append a line as the terminal shows it, within cols columns: a line that
 * wraps would be left behind by the redraw, which erases one row per line. */
static void add_fitted(sl_buf *all, const slot *s, const char *text, size_t cols)
{
    sl_buf vis = {0};
    for (int drop = SHOW_ALL; drop <= SHOW_LEAST; drop++) {
        char line[512];
        if (s)
            format_line(s, 1, drop, line, sizeof line);
        else
            snprintf(line, sizeof line, "%s", text);
        sl_buf_reset(&vis);
        /* the job's name is a file name: it may hold anything */
        sl_buf_add_visible(&vis, line, strlen(line), 1);
        if (!s || sl_width_of(vis.data, vis.len) <= cols)
            break;
    }
    sl_buf_add(all, vis.data, sl_width_prefix(vis.data, vis.len, cols)); /* else cut at the edge */
    sl_buf_free(&vis);
}

/* Erase what is drawn: the cursor sits at the end of the last line. */
static void clear_lines(void)
{
    if (!prog.tty || prog.drawn_lines == 0)
        return;
    /* through the log's writer, as the log lines it makes room for: a
     * terminal that stalls blocks neither, and they cannot interleave */
    sl_buf erase = {0};
    sl_buf_adds(&erase, "\r\033[K");
    for (int i = 1; i < prog.drawn_lines; i++)
        sl_buf_adds(&erase, "\033[A\r\033[K");
    sl_log_write(erase.data, erase.len);
    sl_buf_free(&erase);
    prog.drawn_lines = 0;
}

/* A line a running target (one alone: no total), and with several a total. */
static void draw_lines(void)
{
    if (!prog.tty || active_slots() == 0)
        return;
    sl_buf all = {0};
    int lines = 0;
    /* a column short of the edge: some terminals wrap as soon as it is written */
    size_t cols = term_columns();
    cols = cols > 1 ? cols - 1 : 1;
    int64_t done = 0;
    double rate = 0;
    for (int i = 0; i < MAX_SLOTS; i++) {
        const slot *s = &prog.slots[i];
        if (!s->active)
            continue;
        if (lines++)
            sl_buf_addc(&all, '\n');
        add_fitted(&all, s, NULL, cols);
        done += s->done;
        rate += s->rate;
    }
    if (lines > 1) {
        char total[128];
        snprintf(total, sizeof total, "total: %lld rows in %d targets, %.0f rows/s", (long long)done, lines, rate);
        sl_buf_addc(&all, '\n');
        add_fitted(&all, NULL, total, cols);
        lines++;
    }
    sl_log_write(all.data, all.len);
    sl_buf_free(&all);
    prog.drawn_lines = lines;
}

void sl_progress_set_owner(const char *(*owner)(void))
{
    prog.owner = owner;
}

void sl_progress_begin(const char *job, int64_t total, int64_t done, int tty)
{
    slot *s = current(1);
    if (!s)
        return; /* more targets at once than lines: they log their progress still */
    clear_lines();
    char owner[64];
    snprintf(owner, sizeof owner, "%s", s->owner);
    memset(s, 0, sizeof *s);
    snprintf(s->owner, sizeof s->owner, "%s", owner);
    snprintf(s->job, sizeof s->job, "%s", job);
    s->total = total;
    s->done = done;
    s->last_log_ms = sl_mono_ms();
    s->active = 1;
    prog.tty = tty;
    sl_log_set_hooks(clear_lines, draw_lines);
}

void sl_progress_update(int64_t done, int64_t batch, double rate)
{
    slot *s = current(0);
    if (!s)
        return;
    s->done = done;
    s->batch = batch;
    s->rate = rate;
    if (s->total >= 0 && done > s->total)
        s->total = done; /* the estimate was low */
    int64_t now = sl_mono_ms();
    if (prog.tty) {
        if (now - prog.last_draw_ms < 100 && prog.drawn_lines)
            return;
        prog.last_draw_ms = now;
        clear_lines();
        draw_lines();
    } else if (now - s->last_log_ms >= 10000) {
        s->last_log_ms = now;
        char line[512];
        format_line(s, 0, SHOW_ALL, line, sizeof line);
        json_t *fields = json_pack("{sIsIsfsI}", "rows", (json_int_t)s->done, "batch", (json_int_t)s->batch, "rate",
                                   rate, "eta_s", (json_int_t)eta_seconds(s, rate));
        if (s->total > 0)
            json_object_set_new(fields, "rows_estimated", json_integer(s->total));
        sl_log_event(SL_LOG_INFO, "progress", fields, "%s", line);
    }
}

void sl_progress_note(const char *fmt, ...)
{
    slot *s = current(0);
    if (!s)
        return;
    s->note[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->note, sizeof s->note, fmt, ap);
        va_end(ap);
    }
    if (prog.tty) {
        clear_lines();
        draw_lines();
    }
}

void sl_progress_end(void)
{
    slot *s = current(0);
    clear_lines();
    if (s)
        s->active = 0;
    if (active_slots() == 0)
        sl_log_set_hooks(NULL, NULL);
    else
        draw_lines();
}
