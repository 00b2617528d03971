/* test_secrets.c: where the passwords of a database string are, blanking them, scrubbing them from messages. */
#include <stdlib.h>

#include "check.h"
#include "sluice/base/util.h"
#include "sluice/db/secrets.h"

typedef struct secret_case {
    const char *given;
    const char *secrets[3]; /* as written, in order */
} secret_case;

static const secret_case secret_cases[] = {
    {"postgresql://alice:s3cret@h/app", {"s3cret"}},
    {"postgresql+psycopg2://alice:p/ss@w:rd@h/app", {"p/ss@w:rd"}},
    {"postgresql://alice:p%40ss@h/app?sslpassword=k3y&sslmode=require", {"p%40ss", "k3y"}},
    {"postgresql://alice@h/app?password=a&b&sslmode=require", {"a&b"}},
    {"postgresql://alice@h/app", {NULL}},
    {"postgresql://alice:@h/app", {NULL}},
    {"host=h password=s3cret user=x", {"s3cret"}},
    {"host=h password = 's3 cr\\'et' user=x", {"s3 cr\\'et"}},
    {"password=a b c host=h sslpassword=k", {"a b c", "k"}},
    {"host=h", {NULL}},
    {"bogus password=s3cret", {"s3cret"}},
    {"password =s3cret host= h", {"s3cret"}},
    {"sqlite:///app.db", {NULL}},
    {"sqlite:app.db", {NULL}},
    /* a URL inside what libpq reads as key=value, and quotes in its error */
    {"\"postgresql://alice:s3cret@h/app?sslpassword=k3y\"", {"s3cret", "k3y\""}}, /* to the end: more is safe */
    {"DATABASE_URL=postgresql://alice:s3cret@h/app", {"s3cret"}},
    {" postgres://alice:s3cret@h/app", {"s3cret"}},
    {"password=a1 x=postgresql://bob:b2@h/app", {"a1", "b2"}},
};

static void test_find(void)
{
    for (size_t i = 0; i < sizeof secret_cases / sizeof secret_cases[0]; i++) {
        const secret_case *c = &secret_cases[i];
        sl_secret_span spans[4];
        size_t n = sl_secrets_find(c->given, spans, 4);
        size_t want = 0;
        while (want < 3 && c->secrets[want])
            want++;
        if (n != want)
            printf("#   %s: %zu secrets, expected %zu\n", c->given, n, want);
        CHECK(n == want);
        for (size_t k = 0; k < n && k < want; k++) {
            char *got = sl_strndup(c->given + spans[k].off, spans[k].len);
            CHECK_STR(got, c->secrets[k]);
            free(got);
        }
    }
}

static void test_hide(void)
{
    char url[] = "postgresql://alice:p/ss@w:rd@h:5432/app?sslmode=require";
    sl_secrets_hide(url);
    CHECK_STR(url, "postgresql://alice:*********@h:5432/app?sslmode=require");
    char kv[] = "host=h password='s3 cret' user=x";
    sl_secrets_hide(kv);
    CHECK_STR(kv, "host=h password='*******' user=x");
    char none[] = "sqlite:///app.db";
    sl_secrets_hide(none);
    CHECK_STR(none, "sqlite:///app.db");
}

/* Passwords with @ : / % spaces and quotes, given every way libpq takes
 * them: each form a message may quote is scrubbed. */
typedef struct scrub_case {
    const char *conninfo;
    const char *message;
    const char *want;
} scrub_case;

static const scrub_case scrub_cases[] = {
    /* as libpq reads it, decoded from the URL */
    {"postgresql://alice:p%40ss%3Aw%2Frd%25%20x%22q%27z@h/app", "got p@ss:w/rd% x\"q'z here", "got *** here"},
    /* percent-encoded, upper and lower case */
    {"postgresql://alice:p%40ss%3Aw%2Frd%25%20x%22q%27z@h/app", "token \"p%40ss%3Aw%2Frd%25%20x%22q%27z\"",
     "token \"***\""},
    {"postgresql://alice:p%40ss%3Aw%2Frd%25%20x%22q%27z@h/app", "p%40ss%3aw%2frd%25%20x%22q%27z!", "***!"},
    /* key=value, quoted */
    {"host=h password='p@ss:w/rd% x\"q\\'z' user=alice", "it was p@ss:w/rd% x\"q'z", "it was ***"},
    /* sslpassword and a query password */
    {"postgresql://alice@h/app?sslpassword=k%40y&password=s3cr%2Fet", "k@y and s3cr/et", "*** and ***"},
    /* every occurrence, and the user name stays */
    {"postgresql://alice:s3cret@h/app", "alice s3cret s3cret.", "alice *** ***."},
    /* libpq cannot parse it: the secret as written, and word by word */
    {"postgresql://alice:s3cr%zzet@h/app", "invalid percent-encoded token: \"s3cr%zzet\"",
     "invalid percent-encoded token: \"***\""},
    {"host=h password=s3cr x9z7 bogus=1", "missing \"=\" after \"x9z7\" in connection info string",
     "missing \"=\" after \"***\" in connection info string"},
    /* a URL in quotes: libpq quotes the whole of it back */
    {"\"postgresql://alice:s3cret@h/app\"",
     "missing \"=\" after \"\"postgresql://alice:s3cret@h/app\"\" in connection info string",
     "missing \"=\" after \"\"postgresql://alice:***@h/app\"\" in connection info string"},
    /* nothing to scrub */
    {"host=h user=alice", "could not connect to alice@h", "could not connect to alice@h"},
    {"sqlite:app.db", "plain", "plain"},
};

static void test_scrub(void)
{
    unsetenv("PGPASSWORD");
    for (size_t i = 0; i < sizeof scrub_cases / sizeof scrub_cases[0]; i++) {
        char *got = sl_secrets_scrub(scrub_cases[i].message, scrub_cases[i].conninfo);
        CHECK_STR(got, scrub_cases[i].want);
        free(got);
    }
}

/* PGPASSWORD is what libpq sends when the string has none. */
static void test_scrub_pgpassword(void)
{
    setenv("PGPASSWORD", "env:pw/1", 1);
    char *got = sl_secrets_scrub("x env:pw/1 env%3Apw%2F1 y", "host=h");
    CHECK_STR(got, "x *** *** y");
    free(got);
    got = sl_secrets_scrub("x env:pw/1 y", NULL);
    CHECK_STR(got, "x *** y");
    free(got);
    unsetenv("PGPASSWORD");
}

int main(void)
{
    RUN(test_find);
    RUN(test_hide);
    RUN(test_scrub);
    RUN(test_scrub_pgpassword);
    return CHECK_DONE();
}
