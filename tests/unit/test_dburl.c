/* test_dburl.c: every database string form sluice accepts or refuses, normalised for the drivers. */
#include <stdlib.h>

#include "check.h"
#include "sluice/db/dburl.h"

typedef struct accepted {
    const char *given;
    sl_dialect dialect;
    const char *conninfo;
} accepted;

static const accepted forms[] = {
    /* libpq's own */
    {"", SL_DIALECT_PG, ""},
    {"host=db.example dbname=app", SL_DIALECT_PG, "host=db.example dbname=app"},
    {"host=h password='a b\\'c' user=x", SL_DIALECT_PG, "host=h password='a b\\'c' user=x"},
    {"postgresql://alice:s3cret@db.example:5432/app", SL_DIALECT_PG, "postgresql://alice:s3cret@db.example:5432/app"},
    {"postgresql://db.example/app", SL_DIALECT_PG, "postgresql://db.example/app"},
    {"postgresql:///app", SL_DIALECT_PG, "postgresql:///app"},
    /* sluice's own setting stays for the driver to take out */
    {"postgresql://db.example/app?sslmode=require&sluice_pooler=transaction", SL_DIALECT_PG,
     "postgresql://db.example/app?sslmode=require&sluice_pooler=transaction"},
    {"postgresql://", SL_DIALECT_PG, "postgresql://"},
    {"postgresql://alice@[::1]:5432,h2:5433/app?sslmode=require&connect_timeout=5", SL_DIALECT_PG,
     "postgresql://alice@[::1]:5432,h2:5433/app?sslmode=require&connect_timeout=5"},
    {"postgresql://alice@h/app?application_name=a+b", SL_DIALECT_PG, "postgresql://alice@h/app?application_name=a+b"},
    {"postgresql://alice@h/app?ssl=true", SL_DIALECT_PG, "postgresql://alice@h/app?ssl=true"},
    {"postgres://alice:s3cret@h/app", SL_DIALECT_PG, "postgresql://alice:s3cret@h/app"},
    /* SQLAlchemy's drivers: dropped */
    {"postgresql+psycopg2://alice:s3cret@h:5432/app", SL_DIALECT_PG, "postgresql://alice:s3cret@h:5432/app"},
    {"postgresql+psycopg://alice:s3cret@h/app", SL_DIALECT_PG, "postgresql://alice:s3cret@h/app"},
    {"postgresql+psycopg_async://alice@h/app", SL_DIALECT_PG, "postgresql://alice@h/app"},
    {"postgresql+asyncpg://alice:s3cret@h/app", SL_DIALECT_PG, "postgresql://alice:s3cret@h/app"},
    {"postgresql+pg8000://alice:s3cret@h/app", SL_DIALECT_PG, "postgresql://alice:s3cret@h/app"},
    {"postgresql+psycopg2cffi://alice@h/app", SL_DIALECT_PG, "postgresql://alice@h/app"},
    {"postgres+psycopg2://alice@h/app", SL_DIALECT_PG, "postgresql://alice@h/app"},
    {"postgresql+psycopg2://alice:pw@/app?host=/var/run/postgresql", SL_DIALECT_PG,
     "postgresql://alice:pw@/app?host=/var/run/postgresql"},
    /* SQLAlchemy's query values: '+' is a space */
    {"postgresql+psycopg2://alice@h/app?application_name=my+app", SL_DIALECT_PG,
     "postgresql://alice@h/app?application_name=my%20app"},
    /* passwords: percent-encoded as given, or with unescaped characters read whole */
    {"postgresql://alice:p%40ss%3A%2F%25%20%27%22@h/app", SL_DIALECT_PG,
     "postgresql://alice:p%40ss%3A%2F%25%20%27%22@h/app"},
    {"postgresql://alice:p@ss@h/app", SL_DIALECT_PG, "postgresql://alice:p%40ss@h/app"},
    {"postgresql://alice:pa/ss@h:5432/app", SL_DIALECT_PG, "postgresql://alice:pa%2Fss@h:5432/app"},
    {"postgresql://alice:pa:ss@h/app", SL_DIALECT_PG, "postgresql://alice:pa%3Ass@h/app"},
    {"postgresql://alice:p%zz@h/app", SL_DIALECT_PG, "postgresql://alice:p%25zz@h/app"},
    {"postgresql://alice:a b'c\"d@h/app", SL_DIALECT_PG, "postgresql://alice:a%20b%27c%22d@h/app"},
    {"postgresql://alice:a@b?c@h/app", SL_DIALECT_PG, "postgresql://alice:a%40b%3Fc@h/app"},
    {"postgresql://me@corp.example@h/app", SL_DIALECT_PG, "postgresql://me%40corp.example@h/app"},
    {"postgresql://me@corp:pw@h/app", SL_DIALECT_PG, "postgresql://me%40corp:pw@h/app"},
    {"postgresql://alice:pw@h?application_name=me@laptop", SL_DIALECT_PG,
     "postgresql://alice:pw@h?application_name=me@laptop"},
    {"postgresql://h/my@db", SL_DIALECT_PG, "postgresql://h/my@db"},
    {"postgresql://alice@h/app?password=p%zz", SL_DIALECT_PG, "postgresql://alice@h/app?password=p%25zz"},
    {"postgresql://alice:a+b@h/app?password=c+d", SL_DIALECT_PG, "postgresql://alice:a%2Bb@h/app?password=c%2Bd"},
    {"postgresql+psycopg2://alice:a+b@h/app?password=c+d", SL_DIALECT_PG,
     "postgresql://alice:a%2Bb@h/app?password=c%20d"},
    /* SQLite */
    {"sqlite:app.db", SL_DIALECT_SQLITE, "sqlite:app.db"},
    {"sqlite:/srv/app.db", SL_DIALECT_SQLITE, "sqlite:/srv/app.db"},
    {"sqlite:data/app.db?x", SL_DIALECT_SQLITE, "sqlite:data/app.db?x"},
    {"sqlite:///app.db", SL_DIALECT_SQLITE, "sqlite:app.db"},
    {"sqlite:///data/app.db", SL_DIALECT_SQLITE, "sqlite:data/app.db"},
    {"sqlite:////srv/app.db", SL_DIALECT_SQLITE, "sqlite:/srv/app.db"},
    {"sqlite://///srv/app.db", SL_DIALECT_SQLITE, "sqlite:/srv/app.db"},
    {"sqlite:///my%20app.db", SL_DIALECT_SQLITE, "sqlite:my app.db"},
    {"sqlite+pysqlite:///app.db", SL_DIALECT_SQLITE, "sqlite:app.db"},
    {"sqlite+aiosqlite:////srv/app.db", SL_DIALECT_SQLITE, "sqlite:/srv/app.db"},
};

static void test_accepted_forms(void)
{
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        sl_dburl url;
        sl_err err = {{0}};
        int rc = sl_dburl_parse(forms[i].given, &url, &err);
        if (rc != 0) {
            printf("#   %s: refused: %s\n", forms[i].given, err.msg);
            CHECK(rc == 0);
            continue;
        }
        CHECK_STR(url.conninfo, forms[i].conninfo);
        CHECK(url.dialect == forms[i].dialect);
        CHECK(url.note[0] == '\0');
        /* What comes out reads the same when read again (sessions parse it again). */
        sl_dburl again;
        CHECK(sl_dburl_parse(url.conninfo, &again, &err) == 0);
        CHECK_STR(again.conninfo, url.conninfo);
        CHECK(again.dialect == url.dialect);
        sl_dburl_free(&again);
        sl_dburl_free(&url);
    }
}

/* Python's sqlite3 options are left out, with a note that names them. */
static void test_sqlite_driver_options_dropped(void)
{
    sl_dburl url;
    sl_err err = {{0}};
    CHECK(sl_dburl_parse("sqlite:///app.db?timeout=20&check_same_thread=false", &url, &err) == 0);
    CHECK_STR(url.conninfo, "sqlite:app.db");
    CHECK(url.dialect == SL_DIALECT_SQLITE);
    CHECK_HAS(url.note, "timeout, check_same_thread");
    CHECK_HAS(url.note, "Python's sqlite3");
    sl_dburl_free(&url);
}

typedef struct refused {
    const char *given;
    const char *says; /* in the message */
} refused;

static const refused refusals[] = {
    {"sqlite://", "in-memory"},
    {"sqlite:///", "in-memory"},
    {"sqlite:///:memory:", "in-memory"},
    {"sqlite::memory:", "in-memory"},
    {"sqlite+pysqlite://", "in-memory"},
    {"sqlite:///?timeout=3", "in-memory"},
    {"sqlite://host/app.db", "not a host"},
    {"sqlite://:s3cret@/app.db", "not a host"},
    {"sqlite+pysqlcipher://:s3cret@/app.db", "SQLCipher"},
    {"sqlite+foo:///app.db", "unknown SQLite driver \"foo\""},
    {"sqlite:///app.db?uri=true", "SQLite URI"},
    {"sqlite:///app.db?mode=ro", "SQLite URI"},
    {"sqlite:///app.db?bogus=1", "\"bogus\""},
    {"sqlite:///app%00.db", "NUL"},
    {"mysql://alice:s3cret@h/app", "MySQL URL: sluice speaks PostgreSQL and SQLite"},
    {"mysql+pymysql://alice:s3cret@h/app", "MySQL"},
    {"mysql+mysqldb://alice:s3cret@h/app", "MySQL"},
    {"mariadb+mariadbconnector://alice:s3cret@h/app", "MariaDB"},
    {"mssql+pyodbc://alice:s3cret@dsn", "SQL Server"},
    {"oracle+cx_oracle://alice:s3cret@h:1521/app", "Oracle"},
    {"oracle+oracledb://alice:s3cret@h/app", "Oracle"},
    {"redis://:s3cret@h:6379/0", "unknown database URL scheme \"redis://\""},
    {"jdbc:postgresql://h/app?password=s3cret", "unknown database URL scheme"},
    {"postgresql+foo://alice:s3cret@h/app", "unknown PostgreSQL driver \"foo\""},
    {"postgresql+pygresql://alice:s3cret@h/app", "unknown PostgreSQL driver"},
    {"postgresql://alice:s3cret@h/app?prepared_statement_cache_size=0", "\"prepared_statement_cache_size\" is not"},
    {"postgresql+asyncpg://alice:s3cret@h/app?ssl=require", "sslmode=require"},
    {"postgresql://alice:s3cret@h/app?host=a&host=b", "given twice"},
    {"postgresql://alice:s3cret@h/app?sslmode", "no \"=\""},
    {"postgresql://alice:s3%00cret@h/app", "NUL"},
    {"postgresql://alice@h/app?password=s3%00cret", "NUL"},
    /* quotes kept from a .env file: never echoed, they hold the password */
    {"\"postgresql://alice:s3cret@h/app\"", "starts with a quote (\")"},
    {"'postgresql://alice:s3cret@h/app'", "starts with a quote (')"},
    {"'host=h password=s3cret'", "give it without the quotes"},
};

static void test_refusals(void)
{
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        sl_dburl url = {0};
        sl_err err = {{0}};
        int rc = sl_dburl_parse(refusals[i].given, &url, &err);
        if (rc == 0) {
            printf("#   %s: accepted as %s\n", refusals[i].given, url.conninfo);
            sl_dburl_free(&url);
        }
        CHECK(rc < 0);
        CHECK(url.conninfo == NULL);
        CHECK_HAS(err.msg, refusals[i].says);
        CHECK(strstr(err.msg, "s3") == NULL);
    }
}

static void test_encode_decode(void)
{
    char *enc = sl_dburl_encode("a b@c/%~", 8, 0);
    CHECK_STR(enc, "a%20b%40c%2F%25~");
    free(enc);
    enc = sl_dburl_encode("/", 1, 1);
    CHECK_STR(enc, "%2f");
    free(enc);
    size_t n;
    char *dec = sl_dburl_decode("a%20b%zz%4", 10, 0, &n);
    CHECK_STR(dec, "a b%zz%4");
    CHECK(n == 8);
    free(dec);
    dec = sl_dburl_decode("a+b%2B", 6, 1, NULL);
    CHECK_STR(dec, "a b+");
    free(dec);
}

/* sluice_pooler out of each form of string, the rest as libpq reads it. */
static void test_take_param(void)
{
    static const struct {
        const char *given, *value, *rest;
    } cases[] = {
        {"postgresql://h/db?sluice_pooler=transaction", "transaction", "postgresql://h/db"},
        {"postgresql://h/db?sslmode=require&sluice_pooler=none&connect_timeout=5", "none",
         "postgresql://h/db?sslmode=require&connect_timeout=5"},
        {"postgresql://h/db?sluice_pooler=session&sslmode=require", "session", "postgresql://h/db?sslmode=require"},
        {"host=h sluice_pooler=transaction dbname=db", "transaction", "host=h  dbname=db"},
        {"host=h dbname=db sluice_pooler = 'trans\\'action'", "trans'action", "host=h dbname=db"},
        {"sluice_pooler=none", "none", ""},
        {"postgresql://h/db?sslmode=require", NULL, "postgresql://h/db?sslmode=require"},
        {"host=h password='sluice_pooler=x'", NULL, "host=h password='sluice_pooler=x'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *value, *rest;
        int found = sl_dburl_take_param(cases[i].given, SL_DBURL_POOLER, &value, &rest);
        CHECK(found == (cases[i].value != NULL));
        if (cases[i].value)
            CHECK_STR(value, cases[i].value);
        CHECK_STR(rest, cases[i].rest);
        free(value);
        free(rest);
    }
}

int main(void)
{
    RUN(test_accepted_forms);
    RUN(test_sqlite_driver_options_dropped);
    RUN(test_refusals);
    RUN(test_encode_decode);
    RUN(test_take_param);
    return CHECK_DONE();
}
