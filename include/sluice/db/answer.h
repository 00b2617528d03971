/* answer.h: a batch's queries and what they produced, copied out of the driver (libpq or sqlite3) to outlive it. */
#ifndef SLUICE_ANSWER_H
#define SLUICE_ANSWER_H

#include <stddef.h>
#include <stdint.h>

/* One query of a batch. params are text-format values (NULL = SQL NULL).
 * With prepare set, the statement is parsed and planned once per connection
 * and executed from then on: for the statements every chunk repeats.
 * PostgreSQL binds $1..$n; SQLite binds $1..$n by name, and refuses SQL
 * with a parameter of any other form (lite.c). */
typedef struct sl_query {
    const char *sql;
    int nparams;
    const char *const *params;
    int prepare;
    /* PostgreSQL only, both or neither: each parameter's length and format
     * (1: binary, params[i] is lengths[i] bytes; 0: text). NULL: all text. */
    const int *lengths, *formats;
    int binary_result; /* PostgreSQL only: every column in binary format (sl_result.lens) */
} sl_query;

/* One statement's result. */
typedef struct sl_result {
    int nrows, ncols;
    char **vals;        /* nrows * ncols, row-major; NULL for SQL NULL */
    int64_t cmd_tuples; /* rows affected (PQcmdTuples, sqlite3_changes), -1 if none */
    int packed;         /* the strings live in the vals block itself (PostgreSQL's): never free one alone */
    int *lens;          /* a binary result's: each value's length in bytes (vals are NUL-terminated too), else NULL */
} sl_result;

typedef struct sl_answer {
    int ok;
    int conn_lost;
    int failed_index; /* -1 if none */
    char sqlstate[6]; /* PostgreSQL's; for SQLite the nearest one (busy: 55P03, interrupted: 57014, constraints: 23xxx)
                       */
    char *error;      /* malloc'd, NULL if ok */
    size_t nresults;
    sl_result *results; /* one per query; zeroed where aborted */
} sl_answer;

void sl_answer_free(sl_answer *ans);
/* Free one result's rows (it keeps cmd_tuples): for a large value read
 * and copied out before the rest of the answer is done with. */
void sl_result_clear(sl_result *res);
/* Value of row/col of result i, or NULL (also when out of range). */
const char *sl_answer_val(const sl_answer *ans, size_t i, int row, int col);

/* A boolean result as text is true: PostgreSQL prints "t", SQLite 1. */
int sl_answer_true(const char *v);

/* True for SQLSTATEs worth retrying (SQLite's answers carry the nearest
 * one, see sl_answer): serialization failure, deadlock, lock
 * not available, statement/lock timeout cancellation, admin shutdown, a
 * named statement missing or already there (26000, 42P05: the server
 * session changed under a pooler, and the driver now sends them unnamed), and
 * connection exceptions (class 08) but for 08P01, protocol_violation: the
 * server refused what was sent, such as a Bind with the wrong number of
 * parameters, and would refuse it again. */
int sl_answer_transient(const char *sqlstate);

/* True for SQLSTATEs that cannot come from one row's data, so that
 * on-error skip stops instead of setting every row aside one by one: the
 * statement or the role (class 42: a privilege, a column or table gone),
 * a feature not supported (0A), the server's resources, state or health
 * (53 disk full or out of memory, 57, 58, XX), the transaction's state
 * (25), authorization and catalog names (28, 3D, 3F). Data errors (22),
 * constraint violations (23), a trigger's RAISE (P0) and the rest stay
 * splittable. */
int sl_answer_statement_error(const char *sqlstate);

#endif
