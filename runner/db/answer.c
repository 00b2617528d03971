/* answer.c: what a batch produced, as either driver copies it out: freeing it, reading it, its retryable errors. */
#include "sluice/db/answer.h"

#include <stdlib.h>
#include <string.h>

void sl_result_clear(sl_result *res)
{
    for (int v = 0; !res->packed && res->vals && v < res->nrows * res->ncols; v++)
        free(res->vals[v]);
    free(res->vals);
    free(res->lens);
    res->vals = NULL;
    res->lens = NULL;
    res->nrows = res->ncols = 0;
}

void sl_answer_free(sl_answer *ans)
{
    for (size_t i = 0; i < ans->nresults; i++)
        sl_result_clear(&ans->results[i]);
    free(ans->results);
    free(ans->error);
    memset(ans, 0, sizeof *ans);
}

const char *sl_answer_val(const sl_answer *ans, size_t i, int row, int col)
{
    if (i >= ans->nresults)
        return NULL;
    const sl_result *r = &ans->results[i];
    if (row < 0 || col < 0 || row >= r->nrows || col >= r->ncols)
        return NULL;
    return r->vals[row * r->ncols + col];
}

int sl_answer_true(const char *v)
{
    return v && (strcmp(v, "t") == 0 || strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

int sl_answer_transient(const char *sqlstate)
{
    static const char *const retry[] = {"40001", "40P01", "55P03", "57014", "57P01",
                                        "57P02", "57P03", "26000", "42P05"};
    if (!sqlstate)
        return 0;
    /* Class 08 is a connection that broke or could not be made: worth a
     * retry. But 08P01, protocol_violation, is the server refusing what was
     * sent (a Bind whose values do not match the statement's parameters),
     * which every retry would send again. */
    if (strcmp(sqlstate, "08P01") == 0)
        return 0;
    if (strncmp(sqlstate, "08", 2) == 0)
        return 1;
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++) {
        if (strcmp(sqlstate, retry[i]) == 0)
            return 1;
    }
    return 0;
}

int sl_answer_statement_error(const char *sqlstate)
{
    static const char *const classes[] = {"42", "0A", "53", "57", "58", "XX", "25", "28", "3D", "3F"};
    if (!sqlstate || strlen(sqlstate) != 5 || sl_answer_transient(sqlstate))
        return 0;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
        if (strncmp(sqlstate, classes[i], 2) == 0)
            return 1;
    return 0;
}
