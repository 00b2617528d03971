/* pq.c: libpq loaded on first use (pq.h). */
#include "sluice/db/pq.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "sluice/base/log.h"

/* Its soname since PostgreSQL 8.0 (libpq5 on Debian). SL_LIBPQ_DIR: meson.build. */
#define LIBPQ_SONAME "libpq.so.5"
#define HINT         "hint: install libpq 14 or later (Debian and Ubuntu: apt-get install libpq5)"

#define SL_PQ_DEFINE(f) __typeof__(sl_pq_##f) sl_pq_##f;
SL_PQ_FUNCS(SL_PQ_DEFINE)
#undef SL_PQ_DEFINE

atomic_int sl_pq_loaded;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
    /* RTLD_LOCAL: its symbols, and its dependencies', stay out of the way of
     * the rest of the process (SQLite, libuv). Where the loader looks (the
     * library path, its cache), else where it was when sluice was built, as a
     * binary linked to it would have found it through its run path. */
    void *lib = dlopen(LIBPQ_SONAME, RTLD_NOW | RTLD_LOCAL);
    char why[512] = "";
    if (!lib) {
        snprintf(why, sizeof why, "%s", dlerror());
        if (*SL_LIBPQ_DIR)
            lib = dlopen(SL_LIBPQ_DIR "/" LIBPQ_SONAME, RTLD_NOW | RTLD_LOCAL);
    }
    const char *missing = NULL;
    if (lib) {
        /* *(void **)& is how POSIX has dlsym's answer taken as a function */
#define SL_PQ_FIND(f)                                         \
    if (!missing && !(*(void **)&sl_pq_##f = dlsym(lib, #f))) \
        missing = #f;
        SL_PQ_FUNCS(SL_PQ_FIND)
#undef SL_PQ_FIND
    }
    if (!lib || missing) {
        if (lib)
            sl_error("%s has no %s: sluice needs libpq 14 or later\n%s", LIBPQ_SONAME, missing, HINT);
        else
            sl_error("cannot load libpq, which PostgreSQL databases need: %s\n%s", why, HINT);
        sl_log_writer_stop(2000); /* the lines out first, as main does */
        exit(SL_EXIT_FAILED);
    }
    atomic_store_explicit(&sl_pq_loaded, 1, memory_order_release);
}

void sl_pq_load(void)
{
    pthread_once(&load_once, load);
}
