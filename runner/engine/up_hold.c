/* up_hold.c: account for what holds an `up` run's chunks back: metrics by reason, and the journal's intervals. */
#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

#include "up_internal.h"

/* max-rate waits between most chunks of a capped job, a few ms each:
 * counted, but too many to journal one by one. */
static int journaled(sl_hold hold)
{
    return hold != SL_HOLD_NONE && hold != SL_HOLD_MAX_RATE;
}

static void journal(up_run *r, const char *kind, sl_hold hold, int64_t ms, const char *detail)
{
    json_t *data = json_pack("{ss}", "reason", sl_hold_name(hold));
    if (ms >= 0)
        json_object_set_new(data, "ms", json_integer(ms));
    char *text = json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(data);
    sl_run_event_data(&r->run, kind, detail ? detail : sl_hold_name(hold), text);
    free(text);
}

void up_hold(up_run *r, sl_hold hold, const char *detail)
{
    if (!r->metrics || sl_metrics_current_hold(r->metrics) == hold)
        return;
    int64_t ms = 0;
    sl_hold ended = sl_metrics_hold(r->metrics, hold, sl_mono_ms(), &ms);
    if (journaled(ended))
        journal(r, "hold_end", ended, ms, NULL);
    if (journaled(hold))
        journal(r, "hold_start", hold, -1, detail);
}
