/* dburl.h: the database strings sluice accepts (libpq's, SQLAlchemy's, sqlite:PATH), turned into what its drivers take.
 *
 * Accepted (README "Databases"):
 *   ""                                  libpq's PG* environment
 *   host=... dbname=...                 a libpq key=value string, handed over as it is
 *   postgresql://..., postgres://...    libpq URLs
 *   postgresql+DRIVER://...             SQLAlchemy's, DRIVER one of psycopg2, psycopg, psycopg_async,
 *                                       asyncpg, pg8000, psycopg2cffi: the +DRIVER is dropped
 *   sqlite:PATH                         a SQLite file; PATH is everything after "sqlite:"
 *   sqlite:///REL, sqlite:////ABS       SQLAlchemy's: a path relative to the current directory, absolute
 *   sqlite+pysqlite://..., sqlite+aiosqlite://...
 *
 * A PostgreSQL URL's user info ends at the last '@' before the host (no host name holds an '@'), so
 * a password with an unescaped '@', '/' or '%' is read whole, and it is percent-encoded again for
 * libpq. Query parameters must be libpq's own: anything else is refused, as dropping it could change
 * where or how securely sluice connects. On SQLite, the options of Python's sqlite3 module (timeout,
 * check_same_thread, ...) configure the application's driver, not the file: they are dropped, with a
 * note. Refused: in-memory SQLite databases (they die with the process), other databases' URLs
 * (MySQL, MariaDB, SQL Server, Oracle...), unknown drivers. No message ever holds the password. */
#ifndef SLUICE_DBURL_H
#define SLUICE_DBURL_H

#include "sluice/keys.h"
#include "sluice/util.h"

typedef struct sl_dburl {
    sl_dialect dialect; /* SL_DIALECT_PG or SL_DIALECT_SQLITE */
    char *conninfo;     /* PostgreSQL: for libpq ("", key=value, or a postgresql:// URL); SQLite: "sqlite:PATH" */
    char note[512];     /* non-empty: what was left out of the string and why; safe to print */
} sl_dburl;

/* Read given (never NULL). 0: out is filled (free it with sl_dburl_free);
 * the result parses to itself again. -1: refused, err says why and how to
 * write it instead, without the password. libpq still checks the rest
 * (sl_pg_init). */
int sl_dburl_parse(const char *given, sl_dburl *out, sl_err *err) SL_MUSTCHECK;

void sl_dburl_free(sl_dburl *url);

/* Where the secrets of s are, as written: a URL's password, and the values
 * of password= and sslpassword= (URL query parameters or key=value pairs;
 * an unquoted value runs on over the words after it that are no key=value
 * pair, as those can only be more of it). */
typedef struct sl_dburl_span {
    size_t off, len;
} sl_dburl_span;

/* Fill up to max spans; returns how many there are (may exceed max). */
size_t sl_dburl_secrets(const char *s, sl_dburl_span *spans, size_t max);

/* Overwrite the bytes of every secret of s with '*', in place: for the
 * program's own argv, which /proc/PID/cmdline shows to every user. */
void sl_dburl_hide_secrets(char *s);

/* Percent-decode len bytes of s the way SQLAlchemy (Python's unquote) does:
 * an invalid escape stays as it is. A decoded NUL is kept; *out_len is the
 * decoded length. Returns a malloc'd, NUL-terminated string. */
char *sl_dburl_decode(const char *s, size_t len, size_t *out_len);

/* Percent-encode every byte outside RFC 3986's unreserved set, hex digits in
 * upper case, or lower case when lower is set. malloc'd. */
char *sl_dburl_encode(const char *s, size_t len, int lower);

#endif
