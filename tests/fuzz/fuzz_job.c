/* fuzz_job.c: libFuzzer target for the job-file parser (sl_job_parse), with the invariants a parsed job must keep. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/jobs/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PATH "jobs/0001_fuzz.sql"

/* Whether the rendered statements of sec hold the markers put in for :lo
 * (\x01) and :hi (\x02): bytes a job file may not hold, so they come from
 * the placeholders alone. A section that passed the parser's ":lo/:hi must
 * be used" check must send them to the database. */
static void check_section(const sl_section *sec, int must_use, int nlines)
{
    int lo = 0, hi = 0;
    for (size_t i = 0; i < sec->nstmts; i++) {
        const sl_stmt *st = &sec->stmts[i];
        size_t len = strlen(st->text);
        if (len == 0 || st->line <= sec->line || st->line > nlines)
            abort(); /* an empty statement, or one placed outside its section */
        for (size_t k = 0; k < st->nph; k++) {
            const sl_placeholder *ph = &st->ph[k];
            if (ph->offset + ph->length > len || memcmp(st->text + ph->offset, ph->is_hi ? ":hi" : ":lo", 3) != 0)
                abort(); /* a placeholder beyond the text that is sent, or not where it was seen */
        }
        char *sql = sl_stmt_render(st, "\x01", "\x02");
        lo |= strchr(sql, '\x01') != NULL;
        hi |= strchr(sql, '\x02') != NULL;
        free(sql);
    }
    if (must_use && (!lo || !hi))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_job job;
    sl_err err;
    err.msg[0] = '\0';
    if (sl_job_parse(PATH, (const char *)data, size, &job, &err) != 0) {
        /* every refusal names the file */
        if (strncmp(err.msg, PATH, strlen(PATH)) != 0)
            abort();
        return 0;
    }
    if (!job.table || !job.up.present || job.up.nstmts == 0)
        abort();
    int nlines = 1;
    for (size_t i = 0; i < size; i++)
        nlines += data[i] == '\n';
    check_section(&job.up, 1, nlines);
    if (job.down.present)
        check_section(&job.down, 1, nlines);
    sl_job_free(&job);
    return 0;
}
