/* check.h: a minimal TAP test harness for the C unit tests. */
#ifndef SLUICE_CHECK_H
#define SLUICE_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failed_in_case;
static int check_cases, check_failures;

/* Inside a case: record a failure with its location, go on. */
#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            printf("#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            check_failed_in_case = 1;                                           \
        }                                                                       \
    } while (0)

#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *check_a_ = (a), *check_b_ = (b);                                     \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                 \
            printf("#   %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
                   check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)");      \
            check_failed_in_case = 1;                                                    \
        }                                                                                \
    } while (0)

/* Substring check: haystack contains needle. */
#define CHECK_HAS(hay, needle)                                                                                        \
    do {                                                                                                              \
        const char *check_h_ = (hay), *check_n_ = (needle);                                                           \
        if (!check_h_ || !strstr(check_h_, check_n_)) {                                                               \
            printf("#   %s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, check_h_ ? check_h_ : "(null)", \
                   check_n_);                                                                                         \
            check_failed_in_case = 1;                                                                                 \
        }                                                                                                             \
    } while (0)

#define RUN(fn)                                                                           \
    do {                                                                                  \
        check_failed_in_case = 0;                                                         \
        fn();                                                                             \
        check_cases++;                                                                    \
        if (check_failed_in_case)                                                         \
            check_failures++;                                                             \
        printf("%s %d - %s\n", check_failed_in_case ? "not ok" : "ok", check_cases, #fn); \
    } while (0)

/* Print the plan last (TAP allows it) and return the exit code. */
#define CHECK_DONE() (printf("1..%d\n", check_cases), fflush(stdout), check_failures ? 1 : 0)

#endif
