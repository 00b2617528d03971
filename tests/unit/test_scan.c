/* test_scan.c: the SQL scanner: statement splitting, quoting forms, :lo/:hi, line numbers, rendering. */
#include "check.h"
#include "sluice/jobs/job.h"

#include <stdlib.h>

static sl_stmt *stmts;
static size_t nstmts;
static sl_err err;

/* Split text as a section body starting at line 10 of "t.sql". */
static int split(const char *text)
{
    sl_stmts_free(stmts, nstmts);
    stmts = NULL;
    nstmts = 0;
    err.msg[0] = '\0';
    return sl_sql_split("t.sql", 10, text, strlen(text), &stmts, &nstmts, &err);
}

static void test_split_basic(void)
{
    CHECK(split("UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi;\nDELETE FROM u WHERE id = :lo;\n") == 0);
    CHECK(nstmts == 2);
    CHECK_STR(stmts[0].text, "UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi");
    CHECK_STR(stmts[1].text, "DELETE FROM u WHERE id = :lo");
    CHECK(stmts[0].line == 10);
    CHECK(stmts[1].line == 11);
    CHECK(stmts[0].uses_lo && stmts[0].uses_hi);
    CHECK(stmts[1].uses_lo && !stmts[1].uses_hi);
}

static void test_split_trailing_text_is_a_statement(void)
{
    CHECK(split("SELECT 1; SELECT :lo") == 0);
    CHECK(nstmts == 2);
    CHECK_STR(stmts[1].text, "SELECT :lo");
    CHECK(stmts[1].uses_lo);
}

static void test_split_drops_empty_statements(void)
{
    CHECK(split(";;\n  ;\nSELECT 1;;\n-- only a comment\n;/* and this */;\n") == 0);
    CHECK(nstmts == 1);
    CHECK_STR(stmts[0].text, "SELECT 1");
    CHECK(split("") == 0);
    CHECK(nstmts == 0);
    CHECK(stmts == NULL);
    CHECK(split("  \n\n -- nothing\n") == 0);
    CHECK(nstmts == 0);
}

static void test_split_line_numbers(void)
{
    /* A statement's line is that of its first code character, past blank
     * lines and leading comments. */
    CHECK(split("\n\n  -- note\n  /* block\n  comment */\n  UPDATE t\n  SET a = 1;\n\nSELECT\n2;") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].line == 15);
    CHECK_STR(stmts[0].text, "UPDATE t\n  SET a = 1");
    CHECK(stmts[1].line == 18);
    CHECK_STR(stmts[1].text, "SELECT\n2");
}

static void test_split_line_numbers_count_newlines_inside_quotes(void)
{
    CHECK(split("SELECT 'a\nb\nc', $$x\ny$$, \"q\nr\" /* \n */;\nSELECT 3;") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[1].line == 16);
}

static void test_split_keeps_inner_comments_drops_outer(void)
{
    CHECK(split("/* lead */ UPDATE t -- why\n SET a = 1 -- trailing\n;") == 0);
    CHECK(nstmts == 1);
    CHECK_STR(stmts[0].text, "UPDATE t -- why\n SET a = 1");
}

static void test_split_crlf(void)
{
    CHECK(split("SELECT :lo;\r\nSELECT :hi;\r\n") == 0);
    CHECK(nstmts == 2);
    CHECK_STR(stmts[1].text, "SELECT :hi");
    CHECK(stmts[1].line == 11);
}

static void test_single_quotes(void)
{
    CHECK(split("SELECT 'a;b :lo :hi', 'it''s; :lo' WHERE id = :hi; SELECT 2") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 1);
    CHECK(stmts[0].uses_hi && !stmts[0].uses_lo);
    /* Without E, a backslash is an ordinary character: the string ends at the second quote. */
    CHECK(split("SELECT 'a\\'; SELECT :lo") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[1].uses_lo);
}

static void test_escape_strings(void)
{
    CHECK(split("SELECT E'it\\'s; :lo'; SELECT e'x\\\\'; SELECT :hi") == 0);
    CHECK(nstmts == 3);
    CHECK(!stmts[0].uses_lo);
    CHECK_STR(stmts[1].text, "SELECT e'x\\\\'");
    CHECK(stmts[2].uses_hi);
    CHECK(split("E'a\\';b'; SELECT :lo") == 0);
    CHECK(nstmts == 2);
    CHECK_STR(stmts[0].text, "E'a\\';b'");
    /* An E that ends a longer word does not make an escape string. */
    CHECK(split("SELECT typE'\\'; SELECT :lo") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[1].uses_lo);
}

static void test_quoted_identifiers(void)
{
    CHECK(split("SELECT \"a\"\";:lo\" FROM \"t;\" WHERE id = :hi; SELECT 2") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 1 && stmts[0].uses_hi);
    CHECK_STR(stmts[0].text, "SELECT \"a\"\";:lo\" FROM \"t;\" WHERE id = :hi");
}

static void test_line_comments(void)
{
    CHECK(split("SELECT 1 -- a ; :lo :hi\n, :hi; SELECT 2") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 1);
    CHECK(stmts[0].uses_hi && !stmts[0].uses_lo);
}

static void test_nested_block_comments(void)
{
    CHECK(split("SELECT /* a /* b ; :lo */ still ; :hi */ :lo; SELECT 2") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 1);
    CHECK(stmts[0].uses_lo && !stmts[0].uses_hi);
}

static void test_dollar_quotes(void)
{
    CHECK(split("DO $$ BEGIN PERFORM 1; PERFORM :lo; END $$; SELECT :hi") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 0);
    CHECK_STR(stmts[0].text, "DO $$ BEGIN PERFORM 1; PERFORM :lo; END $$");
    CHECK(split("SELECT $fn$ a; $$ ; :lo $fn$, $x_1$;$x_1$ WHERE k = :hi; SELECT 3") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[0].nph == 1 && stmts[0].uses_hi);
    /* A different tag does not close the quote. */
    CHECK(split("SELECT $a$ $b$ ; $a$; SELECT 2") == 0);
    CHECK(nstmts == 2);
}

static void test_dollar_that_is_not_a_quote(void)
{
    /* $1 is a parameter (refused: test_positional_parameter) and a$b an identifier: neither opens a
     * dollar quote. */
    CHECK(split("SELECT $1 WHERE id = :lo; SELECT $$ x $$; SELECT :hi") < 0);
    CHECK_HAS(err.msg, "t.sql:10: $1: positional parameters");
    CHECK(split("SELECT a$b$ FROM t WHERE id = :lo; SELECT x$$ ; SELECT :hi") == 0);
    CHECK(nstmts == 3);
    CHECK(stmts[0].uses_lo && stmts[2].uses_hi);
}

static void test_placeholder_rules(void)
{
    CHECK(split("SELECT x::lo, y::hi, :lower, :hi_x, :lo1, :hi$, :LO FROM t") == 0);
    CHECK(nstmts == 1);
    CHECK(stmts[0].nph == 0);
    CHECK(!stmts[0].uses_lo && !stmts[0].uses_hi);
    CHECK(split("WHERE (a, b) BETWEEN :lo AND :hi AND c IN (:lo,:hi)") == 0);
    CHECK(stmts[0].nph == 4);
    CHECK(stmts[0].ph[0].offset == 21 && !stmts[0].ph[0].is_hi && stmts[0].ph[0].length == 3);
    CHECK(stmts[0].ph[1].offset == 29 && stmts[0].ph[1].is_hi);
    CHECK(stmts[0].ph[2].offset == 43 && !stmts[0].ph[2].is_hi);
    CHECK(stmts[0].ph[3].offset == 47 && stmts[0].ph[3].is_hi);
}

static void test_placeholder_offsets_relative_to_statement(void)
{
    CHECK(split("SELECT 1;\n  -- c\n  SELECT :hi") == 0);
    CHECK(nstmts == 2);
    CHECK(stmts[1].nph == 1);
    CHECK(stmts[1].ph[0].offset == 7);
    CHECK(strncmp(stmts[1].text + stmts[1].ph[0].offset, ":hi", 3) == 0);
}

static void test_unterminated(void)
{
    CHECK(split("SELECT 1;\nSELECT 'abc\n;\n") < 0);
    CHECK_STR(err.msg, "t.sql:11: unterminated string literal (hint: close it with ')");
    CHECK(nstmts == 0 && stmts == NULL);
    CHECK(split("SELECT E'abc\\'\n") < 0);
    CHECK_HAS(err.msg, "t.sql:10: unterminated string literal");
    CHECK(split("\n\nSELECT \"abc;\n") < 0);
    CHECK_STR(err.msg, "t.sql:12: unterminated quoted identifier (hint: close it with \")");
    CHECK(split("SELECT 1 /* a /* b */\n;\n") < 0);
    CHECK_STR(err.msg, "t.sql:10: unterminated /* comment (hint: close it with */)");
    CHECK(split("SELECT 1;\n\n\nDO $body$ BEGIN END $$;\n") < 0);
    CHECK_STR(err.msg, "t.sql:13: unterminated dollar-quoted string $body$ (hint: close it with $body$)");
    CHECK(split("SELECT $$") < 0);
    CHECK_HAS(err.msg, "unterminated dollar-quoted string $$");
}

/* $1, $2, ... are the parameters sluice sends :lo and :hi as: one written in job text would be bound to
 * a key of the chunk's bounds. Inside quotes, comments, dollar quotes and identifiers it is no parameter. */
static void test_positional_parameter(void)
{
    CHECK(split("UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi;\nUPDATE t\n  SET a = $1 WHERE id = :lo") < 0);
    CHECK_STR(err.msg, "t.sql:12: $1: positional parameters are sluice's own (it sends :lo and :hi as $1, $2, ...) "
                       "(hint: write :lo or :hi, or the value itself)");
    CHECK(nstmts == 0 && stmts == NULL);
    CHECK(split("SELECT 1 WHERE x = ($12)") < 0);
    CHECK_HAS(err.msg, "t.sql:10: $12: positional parameters");
    CHECK(split("SELECT '$1', \"$1\", $$ $1 $$, $f$ $2 $f$, a$1, x::text -- $1\n/* $1 */") == 0);
    CHECK(nstmts == 1);
    sl_stmt one;
    CHECK(sl_sql_fragment("t.sql", 4, "n > $1", 6, &one, &err) < 0);
    CHECK_STR(err.msg, "t.sql:4: $1: positional parameters are sluice's own (it sends :lo and :hi as $1, $2, ...) "
                       "(hint: write :lo or :hi, or the value itself)");
}

static void test_render(void)
{
    CHECK(split("UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi AND b <> ':lo' AND c::lo IS NOT NULL") == 0);
    char *sql = sl_stmt_render(&stmts[0], "$1::bigint", "$2::bigint");
    CHECK_STR(sql, "UPDATE t SET a = 1 WHERE id BETWEEN $1::bigint AND $2::bigint AND b <> ':lo' AND c::lo IS "
                   "NOT NULL");
    free(sql);
    CHECK(split("WHERE (t, id) BETWEEN :lo AND :hi OR id = :lo") == 0);
    sql = sl_stmt_render(&stmts[0], "($1::int, $2::text)", "($3::int, $4::text)");
    CHECK_STR(sql, "WHERE (t, id) BETWEEN ($1::int, $2::text) AND ($3::int, $4::text) OR id = ($1::int, "
                   "$2::text)");
    free(sql);
    CHECK(split(":hi") == 0);
    sql = sl_stmt_render(&stmts[0], "L", "H");
    CHECK_STR(sql, "H");
    free(sql);
    CHECK(split("SELECT 1") == 0);
    sql = sl_stmt_render(&stmts[0], "L", "H");
    CHECK_STR(sql, "SELECT 1");
    free(sql);
}

static void test_first_word(void)
{
    char word[16];
    CHECK(split("  UPDATE t SET a = :lo") == 0);
    sl_stmt_first_word(&stmts[0], word, sizeof word);
    CHECK_STR(word, "update");
    sl_stmt s = {.text = (char *)"/* x */ -- y\n  BEGIN", .line = 1};
    sl_stmt_first_word(&s, word, sizeof word);
    CHECK_STR(word, "begin");
    s.text = (char *)"(SELECT 1)";
    sl_stmt_first_word(&s, word, sizeof word);
    CHECK_STR(word, "");
    s.text = (char *)"Commit;";
    sl_stmt_first_word(&s, word, sizeof word);
    CHECK_STR(word, "commit");
    s.text = (char *)"savepoint";
    sl_stmt_first_word(&s, word, 5);
    CHECK_STR(word, "save");
    s.text = (char *)"";
    sl_stmt_first_word(&s, word, sizeof word);
    CHECK_STR(word, "");
}

static void test_fragment(void)
{
    sl_stmt frag;
    const char *ok = "  /* c */ status = 'a;b' AND x::lo IS NULL -- trailing; note";
    CHECK(sl_sql_fragment("j.sql", 4, ok, strlen(ok), &frag, &err) == 0);
    CHECK_STR(frag.text, "status = 'a;b' AND x::lo IS NULL");
    CHECK(frag.nph == 0);
    free(frag.text);
    free(frag.ph);
    CHECK(sl_sql_fragment("j.sql", 4, "id > :lo", 8, &frag, &err) == 0);
    CHECK(frag.nph == 1 && frag.uses_lo);
    free(frag.text);
    free(frag.ph);
    CHECK(sl_sql_fragment("j.sql", 4, "a = 1; DROP TABLE t", 19, &frag, &err) < 0);
    CHECK_HAS(err.msg, "j.sql:4: ';' is not allowed here");
    CHECK(sl_sql_fragment("j.sql", 4, "a = 1;", 6, &frag, &err) < 0);
    CHECK_HAS(err.msg, "j.sql:4: ';' is not allowed here");
    CHECK(sl_sql_fragment("j.sql", 4, "-- x", 4, &frag, &err) < 0);
    CHECK_STR(err.msg, "j.sql:4: expected SQL, got nothing");
    CHECK(sl_sql_fragment("j.sql", 4, "a = 'x", 6, &frag, &err) < 0);
    CHECK_HAS(err.msg, "j.sql:4: unterminated string literal");
    /* sluice wraps a fragment in parentheses of its own: it may not close them */
    CHECK(sl_sql_fragment("j.sql", 4, "1=1) OR (1=1", 12, &frag, &err) < 0);
    CHECK_HAS(err.msg, "j.sql:4: unbalanced parentheses: a ')' closes one this value did not open");
    CHECK(sl_sql_fragment("j.sql", 4, "(a = 1", 6, &frag, &err) < 0);
    CHECK_HAS(err.msg, "a '(' is never closed");
    CHECK(sl_sql_fragment("j.sql", 4, "x)", 2, &frag, &err) < 0);
    const char *nested = "(a IN (1, 2)) AND b = ')' AND \"c(\" > 0 /* ) */";
    CHECK(sl_sql_fragment("j.sql", 4, nested, strlen(nested), &frag, &err) == 0);
    free(frag.text);
    free(frag.ph);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* keep the TAP lines printed before a crash */
    RUN(test_split_basic);
    RUN(test_split_trailing_text_is_a_statement);
    RUN(test_split_drops_empty_statements);
    RUN(test_split_line_numbers);
    RUN(test_split_line_numbers_count_newlines_inside_quotes);
    RUN(test_split_keeps_inner_comments_drops_outer);
    RUN(test_split_crlf);
    RUN(test_single_quotes);
    RUN(test_escape_strings);
    RUN(test_quoted_identifiers);
    RUN(test_line_comments);
    RUN(test_nested_block_comments);
    RUN(test_dollar_quotes);
    RUN(test_dollar_that_is_not_a_quote);
    RUN(test_placeholder_rules);
    RUN(test_placeholder_offsets_relative_to_statement);
    RUN(test_unterminated);
    RUN(test_positional_parameter);
    RUN(test_render);
    RUN(test_first_word);
    RUN(test_fragment);
    sl_stmts_free(stmts, nstmts);
    return CHECK_DONE();
}
