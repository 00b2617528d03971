/* commands_internal.h: what status (commands.c) and history (commands_history.c) share. */
#ifndef SLUICE_COMMANDS_INTERNAL_H
#define SLUICE_COMMANDS_INTERNAL_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/base/util.h"
#include "sluice/cli/cli.h"

/* The names of jobs, sorted. */
typedef struct sl_cmd_names {
    char **v;
    size_t n, cap;
} sl_cmd_names;

/* Every job with a file in the jobs directory or the checkpoint directory,
 * and every job the database knows (sess NULL: none). */
void sl_cmd_names_collect(const sl_opts *opts, sl_session *sess, sl_cmd_names *ns);
void sl_cmd_names_free(sl_cmd_names *ns);

/* A session on the target for status and history, when it can be reached
 * (NULL when not: unless quiet, it says so; *unread, when asked for, then
 * says why, malloc'd). sess is the storage. */
sl_session *sl_cmd_status_session(const sl_opts *opts, uv_loop_t *loop, sl_session *sess, int quiet, char **unread);

/* An ISO 8601 time, null for 0. */
json_t *sl_cmd_json_time(int64_t ms);
/* One JSON array on stdout, an object a line. */
void sl_cmd_print_array(json_t *all);

/* Text from a job file, the database or a checkpoint file, for the terminal. */
void sl_cmd_add_text(sl_buf *b, const char *s);
/* The same in a column w wide, and a space. */
void sl_cmd_add_column(sl_buf *b, const char *s, size_t w);

#endif
