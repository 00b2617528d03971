/* job_internal.h: what the job-file parser (job.c) and its value parsers (job_values.c) share. */
#ifndef SLUICE_JOB_INTERNAL_H
#define SLUICE_JOB_INTERNAL_H

#include "sluice/jobs/job.h"

/* Longest part of a user's value quoted back in an error message. */
#define SHOWN_VALUE_MAX 80

/* One job file being parsed, and where its errors go. */
typedef struct parser {
    const char *path;
    sl_job *job;
    sl_err *err;
    int line; /* of the directive being parsed */
} parser;

/* Parse the value of directive d (on line p->line) into p->job: 0, or -1 with p->err filled. */
int job_parse_value(parser *p, sl_directive d, const char *value) SL_MUSTCHECK;
/* Free n strings and the array that holds them. */
void job_free_strv(char **v, size_t n);

#endif
