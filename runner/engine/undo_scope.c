/* undo_scope.c: what an undo snapshot can put back: rows of the table the job walks, nothing else.
 *
 * Before a job's first chunk (and in `plan`), the up statements' plans
 * (EXPLAIN VERBOSE, FORMAT JSON, with NULL bounds: nothing runs) tell which
 * tables they write. A write that `down` could not undo is refused then,
 * rather than found out after the data is gone:
 * - an UPDATE, DELETE or MERGE of another table: the snapshot holds none of
 *   its rows;
 * - a DELETE (or MERGE) of the walked table that a foreign key carries on
 *   into rows the snapshot does not hold (ON DELETE CASCADE, SET NULL, SET
 *   DEFAULT), in another table or in rows of the same table outside the
 *   chunk.
 * - a DELETE of the walked table under snapshot(COL, ...), whose saved
 *   columns are not a row down could insert again (SQLite too, from the
 *   statement's first word).
 * An INSERT into another table is only warned about: down leaves those rows,
 * it destroys nothing; so is one into the walked table, whose rows down
 * deletes only within the chunk's range (all of them stay under
 * snapshot(COL, ...)). Statements EXPLAIN cannot plan (CALL, DO), triggers
 * and functions that write are not seen. PostgreSQL only: SQLite enforces
 * foreign keys only where a connection turns them on, and sluice's does
 * not.
 *
 * EXPLAIN does not name the columns an UPDATE assigns, so the scanner reads
 * them from the statements' text (sl_stmt_updates), on both databases and
 * for every undo kind. Of the walked table:
 * - a key column (on SQLite also rowid, _rowid_ or oid when the key is the
 *   INTEGER PRIMARY KEY), with a snapshot: refused. down puts rows back by key, so
 *   a moved row would come back beside its new self, and the walk meets a
 *   row moved ahead of it again and changes it twice. Without a snapshot
 *   only the second holds: warned about (a key normalisation is legitimate);
 * - a column that snapshot(COL, ...) does not save: refused, down would
 *   leave it changed. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "undo_internal.h"

typedef struct scope {
    sl_session *sess;
    const sl_job *job;
    const sl_keyspec *ks;
    const sl_stmt *st;
    size_t stmt_no;
    char **warnings; /* one a line, NULL-terminated */
    size_t nwarnings;
    sl_err *err;
    int rc; /* 0, SL_EREFUSED or -1 */
} scope;

/* The written table: its quoted name, and whether it is the walked table. */
static const char table_sql[] =
    "SELECT c.oid = to_regclass($3)::oid, c.oid::regclass::text"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";

/* Foreign keys that carry a delete of the walked table (or of a partitioned
 * table it is a partition of) on into other rows. */
static const char cascade_sql[] =
    "SELECT con.conrelid::regclass::text, quote_ident(con.conname), con.confdeltype::text"
    " FROM pg_constraint con"
    " WHERE con.contype = 'f' AND con.conparentid = 0 AND con.confdeltype IN ('c', 'n', 'd')"
    "  AND (con.confrelid = to_regclass($1)"
    "   OR con.confrelid IN (SELECT relid FROM pg_partition_ancestors(to_regclass($1))))"
    " ORDER BY 1, 2";

static int ask(scope *s, const char *sql, int n, const char *const *params, sl_answer *ans)
{
    if (sl_session_exec1(s->sess, sql, n, params, ans) == 0 && ans->ok)
        return 0;
    sl_err_set(s->err, "%s: cannot read which tables its up statements write: %s", s->job->name,
               ans->error ? ans->error : "connection lost");
    sl_answer_free(ans);
    s->rc = -1;
    return -1;
}

static const char *verb(const char *op)
{
    return strcmp(op, "Insert") == 0   ? "inserts into"
           : strcmp(op, "Update") == 0 ? "updates"
           : strcmp(op, "Delete") == 0 ? "deletes from"
                                       : "merges into";
}

static void refuse_other(scope *s, const char *op, const char *table, const char *undo)
{
    sl_err_set(s->err,
               "%s:%d: up statement %zu %s %s, but undo %s saves rows of %s only: down could not put %s's rows back",
               s->job->path, s->st->line, s->stmt_no, verb(op), table, undo, s->ks->table, table);
    sl_err_append(s->err,
                  "hint: change %s in a job of its own (walking its key, with its own snapshot), or undo with a "
                  "-- sluice:down section that reverses both",
                  table);
    s->rc = SL_EREFUSED;
}

static void check_cascades(scope *s, const char *op, const char *undo)
{
    const char *params[] = {s->ks->table};
    sl_answer ans;
    if (ask(s, cascade_sql, 1, params, &ans) != 0)
        return;
    if (ans.results[0].nrows > 0) {
        const char *child = sl_answer_val(&ans, 0, 0, 0), *action = sl_answer_val(&ans, 0, 0, 2);
        int cascade = strcmp(action, "c") == 0, set_null = strcmp(action, "n") == 0;
        sl_err_set(s->err,
                   "%s:%d: up statement %zu %s %s%s, and the foreign key %s of %s (ON DELETE %s) %s the rows of %s "
                   "that refer to those: undo %s saves rows of %s only, so down could not put them back",
                   s->job->path, s->st->line, s->stmt_no, verb(op), s->ks->table,
                   strcmp(op, "Delete") == 0 ? "" : " (which may delete)", sl_answer_val(&ans, 0, 0, 1), child,
                   cascade    ? "CASCADE"
                   : set_null ? "SET NULL"
                              : "SET DEFAULT",
                   cascade    ? "deletes"
                   : set_null ? "sets to NULL the reference in"
                              : "sets to its default the reference in",
                   child, undo, s->ks->table);
        sl_err_append(s->err,
                      "hint: first delete or change the rows of %s that refer to them, in a job of its own with its "
                      "own snapshot (down undoes jobs in reverse order); or drop the undo line if this job needs no "
                      "way back",
                      child);
        s->rc = SL_EREFUSED;
    }
    sl_answer_free(&ans);
}

static void add_warning(scope *s, char *line)
{
    s->warnings = sl_realloc(s->warnings, (s->nwarnings + 2) * sizeof(char *));
    s->warnings[s->nwarnings++] = line;
    s->warnings[s->nwarnings] = NULL;
}

/* A DELETE of the walked table under snapshot(COL, ...): the saved columns
 * are not a row, so down cannot insert a deleted row again. table NULL: a
 * DELETE of a table no plan named (SQLite). */
static void refuse_delete(scope *s, const char *table, const char *undo)
{
    sl_err_set(s->err,
               "%s:%d: up statement %zu deletes %s%s, but undo %s saves only those columns of %s: down could not "
               "put the deleted rows back",
               s->job->path, s->st->line, s->stmt_no, table ? "from " : "rows", table ? table : "", undo, s->ks->table);
    sl_err_append(s->err, "hint: save whole rows: -- sluice:undo snapshot(*)");
    s->rc = SL_EREFUSED;
}

/* An INSERT into the walked table: down sees the rows of each chunk's
 * range only (its record holds them), so a row inserted with a key outside
 * it stays; under snapshot(COL, ...) every inserted row stays. */
static void warn_insert(scope *s, const char *undo)
{
    if (s->job->undo == SL_UNDO_SNAPSHOT_COLS)
        add_warning(s, sl_asprintf("%s:%d: up statement %zu inserts into %s: down leaves the rows it inserts (undo "
                                   "%s writes saved columns back; it deletes no row)",
                                   s->job->path, s->st->line, s->stmt_no, s->ks->table, undo));
    else
        add_warning(s, sl_asprintf("%s:%d: up statement %zu inserts into %s: down deletes the rows it inserts with a "
                                   "key inside the chunk's :lo .. :hi, and leaves any it inserts outside it (the "
                                   "chunk's undo record holds its range's rows only)",
                                   s->job->path, s->st->line, s->stmt_no, s->ks->table));
}

static void check_write(scope *s, const char *op, const char *schema, const char *rel)
{
    if (!op || !schema || !rel)
        return;
    const char *params[] = {schema, rel, s->ks->table};
    sl_answer ans;
    if (ask(s, table_sql, 3, params, &ans) != 0)
        return;
    int walked = sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    char *table = sl_strdup(sl_answer_val(&ans, 0, 0, 1) ? sl_answer_val(&ans, 0, 0, 1) : rel);
    sl_answer_free(&ans);
    char *undo = undo_snapshot_words(s->job->undo, s->job->undo_cols, s->job->nundo_cols);
    if (!walked && strcmp(op, "Insert") == 0)
        add_warning(s, sl_asprintf("%s:%d: up statement %zu inserts into %s: down leaves those rows (undo %s puts back "
                                   "rows of %s only)",
                                   s->job->path, s->st->line, s->stmt_no, table, undo, s->ks->table));
    else if (!walked)
        refuse_other(s, op, table, undo);
    else if (strcmp(op, "Delete") == 0 && s->job->undo == SL_UNDO_SNAPSHOT_COLS)
        refuse_delete(s, table, undo);
    else if (strcmp(op, "Delete") == 0 || strcmp(op, "Merge") == 0)
        check_cascades(s, op, undo);
    else if (strcmp(op, "Insert") == 0)
        warn_insert(s, undo);
    free(undo);
    free(table);
}

static void walk(scope *s, json_t *node)
{
    if (!json_is_object(node) || s->rc != 0)
        return;
    const char *type = json_string_value(json_object_get(node, "Node Type"));
    if (type && strcmp(type, "ModifyTable") == 0)
        check_write(s, json_string_value(json_object_get(node, "Operation")),
                    json_string_value(json_object_get(node, "Schema")),
                    json_string_value(json_object_get(node, "Relation Name")));
    size_t i;
    json_t *child;
    json_array_foreach(json_object_get(node, "Plans"), i, child) walk(s, child);
}

static void check_stmt(scope *s)
{
    size_t n = s->ks->ncols;
    char *body = sl_keys_stmt_sql(s->ks, s->st);
    char *sql = sl_asprintf("EXPLAIN (VERBOSE, FORMAT JSON) %s", body);
    const char *nulls[2 * SL_MAX_KEY_COLS] = {0};
    sl_answer ans;
    int failed = sl_session_exec1(s->sess, sql, (s->st->uses_lo + s->st->uses_hi) * (int)n, nulls, &ans) != 0;
    free(sql);
    free(body);
    if (failed || !ans.ok) { /* sl_up_check_sql reports a statement the server refuses */
        if (!failed)
            sl_answer_free(&ans);
        return;
    }
    json_t *plan = json_loads(sl_answer_val(&ans, 0, 0, 0) ? sl_answer_val(&ans, 0, 0, 0) : "", 0, NULL);
    sl_answer_free(&ans);
    walk(s, json_object_get(json_array_get(plan, 0), "Plan"));
    json_decref(plan);
}

/* Whether target, an UPDATE's relation as written, is the walked table:
 * PostgreSQL resolves both names as the statements' search_path does. */
static int is_walked(scope *s, const char *target)
{
    if (s->sess->dialect == SL_DIALECT_SQLITE) {
        char *schema[2], *table[2];
        sl_catalog_split_name(target, &schema[0], &table[0]);
        sl_catalog_split_name(s->ks->table, &schema[1], &table[1]);
        int same = strcasecmp(schema[0], schema[1]) == 0 && strcasecmp(table[0], table[1]) == 0;
        for (int i = 0; i < 2; i++) {
            free(schema[i]);
            free(table[i]);
        }
        return same;
    }
    const char *params[] = {target, s->ks->table};
    sl_answer ans;
    if (sl_session_exec1(s->sess, "SELECT to_regclass($1) = to_regclass($2)", 2, params, &ans) != 0) {
        sl_err_set(s->err, "%s: cannot read which tables its up statements write: connection lost", s->job->name);
        s->rc = -1;
        return 0;
    }
    /* a name to_regclass cannot read is no table the statement could write (EXPLAIN said so already) */
    int same = ans.ok && sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
    return same;
}

/* Whether col (a name as the database knows it) is among the n names, as
 * written (quoted or not). SQLite's names ignore ASCII case. */
static int among(const scope *s, const char *col, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *name = sl_catalog_fold_ident(names[i]);
        int same = s->sess->dialect == SL_DIALECT_SQLITE ? strcasecmp(name, col) == 0 : strcmp(name, col) == 0;
        free(name);
        if (same)
            return 1;
    }
    return 0;
}

/* Whether col, assigned on SQLite, is the rowid by one of its names (rowid,
 * _rowid_, oid) and so the key when the key is the INTEGER PRIMARY KEY: unless
 * the table has a column of that name, which the name then means. */
static int lite_rowid(scope *s, const char *col)
{
    if (s->sess->dialect != SL_DIALECT_SQLITE || !s->ks->rowid_alias ||
        (strcasecmp(col, "rowid") != 0 && strcasecmp(col, "_rowid_") != 0 && strcasecmp(col, "oid") != 0))
        return 0;
    char *schema, *table;
    sl_catalog_split_name(s->ks->table, &schema, &table);
    const char *params[] = {table, schema, col};
    sl_answer ans;
    int named = 1; /* unread: not taken for the key */
    if (sl_session_exec1(s->sess, "SELECT count(*) FROM pragma_table_xinfo($1, $2) WHERE name = $3 COLLATE NOCASE", 3,
                         params, &ans) == 0) {
        named = !ans.ok || strcmp(sl_answer_val(&ans, 0, 0, 0), "0") != 0;
        sl_answer_free(&ans);
    }
    free(schema);
    free(table);
    return !named;
}

/* col as a job file would write it: quoted unless a plain lower-case name. */
static char *written(const char *col)
{
    int plain = (*col >= 'a' && *col <= 'z') || *col == '_';
    for (const char *c = col; *c && plain; c++)
        plain = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
    return plain ? sl_strdup(col) : sl_quote_ident(col);
}

static void moved_key(scope *s, const char *col, int line)
{
    int snapshot = s->job->undo == SL_UNDO_SNAPSHOT_COLS || s->job->undo == SL_UNDO_SNAPSHOT_ALL;
    if (!snapshot) {
        add_warning(s, sl_asprintf("%s:%d: up statement %zu assigns %s, a key column of %s: a row whose key moves "
                                   "ahead of the walk is met again by a later chunk and changed again",
                                   s->job->path, line, s->stmt_no, col, s->ks->table));
        return;
    }
    char *undo = undo_snapshot_words(s->job->undo, s->job->undo_cols, s->job->nundo_cols);
    sl_err_set(s->err,
               "%s:%d: up statement %zu assigns %s, a key column of %s, but undo %s puts rows back by their key: down "
               "would bring the old row back beside the moved one, and a row moved ahead of the walk would be met "
               "again and changed twice",
               s->job->path, line, s->stmt_no, col, s->ks->table, undo);
    sl_err_append(s->err,
                  "hint: leave the key alone in a job with a snapshot; to change keys, undo with a -- "
                  "sluice:down section that moves them back, or drop the undo line if the job needs no way back");
    free(undo);
    s->rc = SL_EREFUSED;
}

static void unsaved(scope *s, const char *col, int line)
{
    char *undo = undo_snapshot_words(s->job->undo, s->job->undo_cols, s->job->nundo_cols);
    char *name = written(col);
    sl_err_set(s->err,
               "%s:%d: up statement %zu assigns %s of %s, which undo %s does not save: down would leave it "
               "changed",
               s->job->path, line, s->stmt_no, col, s->ks->table, undo);
    undo[strlen(undo) - 1] = '\0'; /* "snapshot(b" */
    sl_err_append(s->err, "hint: save it too: -- sluice:undo %s, %s), or snapshot(*)", undo, name);
    free(name);
    free(undo);
    s->rc = SL_EREFUSED;
}

/* The columns of the walked table that the up statements' UPDATEs assign
 * (on SQLite the rowid too, when it is the key). */
static void check_assigned(scope *s)
{
    sl_sql_update *ups = NULL;
    size_t nups = sl_stmt_updates(s->st, &ups);
    for (size_t u = 0; u < nups && s->rc == 0; u++) {
        if (!is_walked(s, ups[u].target))
            continue;
        for (size_t c = 0; c < ups[u].ncols && s->rc == 0; c++) {
            const char *col = ups[u].cols[c];
            if (among(s, col, s->ks->cols, s->ks->ncols) || lite_rowid(s, col))
                moved_key(s, col, ups[u].col_lines[c]);
            else if (s->job->undo == SL_UNDO_SNAPSHOT_COLS && !among(s, col, s->job->undo_cols, s->job->nundo_cols))
                unsaved(s, col, ups[u].col_lines[c]);
        }
    }
    sl_sql_updates_free(ups, nups);
}

/* A statement that writes and uses neither :lo nor :hi runs over whatever
 * it matches in every chunk, not over the chunk's rows: the section as a
 * whole uses both (job.c), so a second statement can slip by. Warned, not
 * refused: a counter bumped once a chunk is a job's own business. */
static void check_bounded(scope *s)
{
    static const char *const writes[] = {"update", "delete", "insert", "merge", "replace"};
    char word[16];
    sl_stmt_first_word(s->st, word, sizeof word);
    int writing = 0;
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
        writing |= strcmp(word, writes[i]) == 0;
    if (writing && !s->st->uses_lo && !s->st->uses_hi)
        add_warning(s, sl_asprintf("%s:%d: up statement %zu uses neither :lo nor :hi: it runs over every row it "
                                   "matches in each chunk, not over the chunk's (hint: limit it, e.g. WHERE id "
                                   "BETWEEN :lo AND :hi)",
                                   s->job->path, s->st->line, s->stmt_no));
}

/* SQLite, where no plan names the tables a statement writes: a DELETE
 * under snapshot(COL, ...) deletes rows down could not put back, whichever
 * table it deletes from (another table's rows are not saved at all). */
static void check_lite_delete(scope *s)
{
    char word[16];
    sl_stmt_first_word(s->st, word, sizeof word);
    if (strcmp(word, "delete") != 0)
        return;
    char *undo = undo_snapshot_words(s->job->undo, s->job->undo_cols, s->job->nundo_cols);
    refuse_delete(s, NULL, undo);
    free(undo);
}

int sl_undo_check_scope(sl_session *sess, const sl_job *job, const sl_keyspec *ks, char ***warnings, sl_err *err)
{
    *warnings = NULL;
    scope s = {.sess = sess, .job = job, .ks = ks, .err = err};
    int snapshot = job->undo == SL_UNDO_SNAPSHOT_COLS || job->undo == SL_UNDO_SNAPSHOT_ALL;
    for (size_t i = 0; s.rc == 0 && i < job->up.nstmts; i++) {
        s.st = &job->up.stmts[i];
        s.stmt_no = i + 1;
        check_assigned(&s);
        check_bounded(&s);
        if (s.rc == 0 && job->undo == SL_UNDO_SNAPSHOT_COLS && sess->dialect == SL_DIALECT_SQLITE)
            check_lite_delete(&s);
        if (s.rc == 0 && snapshot && sess->dialect == SL_DIALECT_PG && sl_stmt_explainable(s.st))
            check_stmt(&s);
    }
    *warnings = s.warnings;
    return s.rc;
}
