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
 * (MySQL, MariaDB, SQL Server, Oracle...), unknown drivers. No message ever holds the password.
 * A password holding an '@' and after it a '/' must be percent-encoded (the '/' would end the host). */
#ifndef SLUICE_DBURL_H
#define SLUICE_DBURL_H

#include "sluice/base/util.h"
#include "sluice/jobs/keys.h"

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

/* sluice's own setting in a PostgreSQL string, which libpq does not know:
 * sluice_pooler=auto|transaction|session|none (README "Production
 * checklist"). sl_dburl_parse keeps it in a URL's query; the driver takes
 * it out (sl_dburl_take_param) before libpq sees the string. */
#define SL_DBURL_POOLER "sluice_pooler"

/* Take the parameter key out of conninfo: a postgresql:// URL's query
 * parameter, or a pair of a key=value string. Returns 1 with *value (as
 * libpq would read it: decoded, unquoted) and *rest (conninfo without it),
 * or 0 with *value NULL and *rest a copy of conninfo. Both malloc'd. */
int sl_dburl_take_param(const char *conninfo, const char *key, char **value, char **rest);

/* The parts of a "scheme://..." URL, as sl_dburl_parse reads them: offsets
 * into the string. */
typedef struct sl_dburl_parts {
    size_t scheme_len; /* "postgresql+psycopg2" */
    size_t auth;       /* just after "://" */
    int has_user;      /* user info (and an '@') before the host */
    size_t user_len;   /* the user name, from auth */
    int has_password;  /* a ':' in the user info */
    size_t pw_off, pw_len;
    size_t host;  /* what follows the user info: host[:port][,...][/dbname] */
    size_t query; /* the '?' that opens the query, or the end */
} sl_dburl_parts;

/* Split s into parts: 1 when s is a "scheme://..." URL, else 0. The user
 * info ends at the last '@' before the host (see sl_dburl_parse). */
int sl_dburl_split(const char *s, sl_dburl_parts *parts);

/* Percent-decode len bytes of s the way SQLAlchemy (Python's unquote) does:
 * an invalid escape stays as it is; with plus_is_space, '+' is a space (a
 * query, to Python's parse_qsl). A decoded NUL is kept; *out_len (when not
 * NULL) is the decoded length. Returns a malloc'd, NUL-terminated string. */
char *sl_dburl_decode(const char *s, size_t len, int plus_is_space, size_t *out_len);

/* Percent-encode every byte outside RFC 3986's unreserved set, hex digits in
 * upper case, or lower case when lower is set. malloc'd. */
char *sl_dburl_encode(const char *s, size_t len, int lower);

#endif
