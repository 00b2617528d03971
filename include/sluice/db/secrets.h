/* secrets.h: the passwords in a database string: where they are, blanked in argv, scrubbed from messages. */
#ifndef SLUICE_SECRETS_H
#define SLUICE_SECRETS_H

#include <stddef.h>

/* A secret as written in a string: bytes [off, off + len). */
typedef struct sl_secret_span {
    size_t off, len;
} sl_secret_span;

/* Where the secrets of s (any form dburl.h reads) are, as written: a URL's
 * password, and the values of password= and sslpassword= (URL query
 * parameters or libpq key=value pairs). An unquoted value runs on over the
 * words after it that are no key=value pair ("password=a b host=x"), and a
 * query value over the pieces with no '=' ("password=a&b"), as those can
 * only be more of it. Fills up to max spans; returns how many there are. */
size_t sl_secrets_find(const char *s, sl_secret_span *spans, size_t max);

/* Overwrite the bytes of every secret of s with '*', in place: for the
 * program's own argv, which /proc/PID/cmdline shows to every user. */
void sl_secrets_hide(char *s);

/* A malloc'd copy of message with every secret of conninfo replaced by
 * "***": the password and sslpassword libpq reads from conninfo (and from
 * PGPASSWORD), raw and percent-encoded in upper and lower case, and the
 * secrets as written in conninfo (word by word too, when libpq cannot parse
 * it: its error then quotes a token, maybe a piece of one); of a URL split
 * by a password's unencoded '/', '?' or '@' (its database name holds an
 * '@'), the host and the database name too. conninfo may be NULL (nothing
 * but PGPASSWORD to scrub). */
char *sl_secrets_scrub(const char *message, const char *conninfo);

#endif
