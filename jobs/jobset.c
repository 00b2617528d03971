/* jobset.c: the jobs of a directory: every *.sql file, loaded and validated, in file-name order. */
#include "sluice/jobs/job.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_job_file(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".sql") == 0;
}

/* dir/name, without a doubled '/'. */
static char *job_path(const char *dir, const char *name)
{
    size_t dlen = strlen(dir);
    return sl_asprintf("%s%s%s", dir, dlen > 0 && dir[dlen - 1] == '/' ? "" : "/", name);
}

/* err collects the message of each failure, one a line. */
static void collect(sl_err *err, int *failed, const sl_err *one)
{
    if ((*failed)++ == 0)
        sl_err_set(err, "%s", one->msg);
    else
        sl_err_append(err, "%s", one->msg);
}

/* The sorted "*.sql" names of dir. A dir that cannot be read (missing,
 * say) is an error unless unread_ok (then no names). */
static int list_job_files(const char *dir, int unread_ok, char ***out, size_t *nout, sl_err *err)
{
    *out = NULL;
    *nout = 0;
    DIR *dh = opendir(dir);
    if (!dh && unread_ok)
        return 0;
    if (!dh) {
        if (errno == ENOENT)
            sl_err_set(err,
                       "jobs directory \"%s\" does not exist (hint: create it, or name another with --jobs "
                       "DIR)",
                       dir);
        else
            sl_err_set(err, "cannot read jobs directory \"%s\": %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        if (!is_job_file(de->d_name))
            continue;
        names = sl_realloc(names, (n + 1) * sizeof *names);
        names[n++] = sl_strdup(de->d_name);
    }
    closedir(dh);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);
    *out = names;
    *nout = n;
    return 0;
}

/* A job's name is its file's: it shows in logs, status and the checkpoint's
 * file name, so it must be text: UTF-8 without control characters. */
static int check_name(const char *path, const char *name, sl_err *err)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < len;) {
        uint32_t code;
        size_t n = sl_utf8_decode(name + i, len - i, &code);
        if (n == 0 || code < 0x20 || (code >= 0x7F && code <= 0x9F)) {
            sl_buf shown = {0};
            sl_buf_add_visible(&shown, path, strlen(path), 1);
            sl_err_set(err, "%s: a job file's name must be UTF-8 text without control characters (hint: rename it)",
                       shown.data);
            sl_buf_free(&shown);
            return -1;
        }
        i += n;
    }
    return 0;
}

/* A job's name must be one the commands can take: down reads "base" as
 * every job and "-N" as the last N, and a name starting with '-' reads as
 * an option, so such a job could run but never be rolled back by name. */
static int check_addressable(const char *path, const char *name, sl_err *err)
{
    size_t stem = strlen(name) - 4; /* without ".sql" */
    if (name[0] == '-')
        sl_err_set(err,
                   "%s: a job's name may not start with '-': down -N means the last N jobs, and the other commands "
                   "read it as an option (hint: rename it, such as 0001_%.*s.sql)",
                   path, (int)stem - 1, name + 1);
    else if (stem == 4 && strncmp(name, "base", 4) == 0)
        sl_err_set(err,
                   "%s: a job may not be named \"base\": down base means every job (hint: rename it, such as "
                   "0001_base.sql)",
                   path);
    else
        return 0;
    return -1;
}

/* Every "*.sql" of the jobs directory is a job: its name must be one, and
 * it must be a file (or a link to one). Anything else so named (a
 * directory, a FIFO, a link to nothing) is refused, not passed over: a job
 * in the wrong shape would go unrun unnoticed. The file is not read. */
static int check_entry(const char *path, const char *name, sl_err *err)
{
    if (check_name(path, name, err) != 0 || check_addressable(path, name, err) != 0)
        return -1;
    return sl_file_check(path, err);
}

int sl_jobset_check_files(const char *dir, sl_err *err)
{
    char **names;
    size_t n;
    if (list_job_files(dir, 1, &names, &n, err) != 0)
        return -1;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = job_path(dir, names[i]);
        sl_err one;
        if (check_entry(path, names[i], &one) != 0)
            collect(err, &failed, &one);
        free(path);
    }
    free_strv(names, n);
    return failed ? -1 : 0;
}

static int load_one(const char *path, const char *name, sl_job *job, sl_err *err)
{
    if (check_entry(path, name, err) != 0)
        return -1;
    return sl_job_load(path, job, err);
}

int sl_jobset_load(const char *dir, sl_jobset *set, sl_err *err)
{
    memset(set, 0, sizeof *set);
    char **names;
    size_t nnames;
    if (list_job_files(dir, 0, &names, &nnames, err) != 0)
        return -1;
    int failed = 0;
    set->jobs = sl_calloc(nnames ? nnames : 1, sizeof *set->jobs);
    for (size_t i = 0; i < nnames; i++) {
        char *path = job_path(dir, names[i]);
        sl_err one;
        if (load_one(path, names[i], &set->jobs[set->njobs], &one) == 0)
            set->njobs++;
        else
            collect(err, &failed, &one);
        free(path);
    }
    free_strv(names, nnames);
    if (failed) {
        sl_jobset_free(set);
        return -1;
    }
    return 0;
}

sl_job *sl_jobset_find(sl_jobset *set, const char *name)
{
    size_t n = strlen(name);
    if (n > 4 && strcmp(name + n - 4, ".sql") == 0)
        n -= 4;
    for (size_t i = 0; i < set->njobs; i++) {
        if (strlen(set->jobs[i].name) == n && strncmp(set->jobs[i].name, name, n) == 0)
            return &set->jobs[i];
    }
    return NULL;
}

void sl_jobset_free(sl_jobset *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->njobs; i++)
        sl_job_free(&set->jobs[i]);
    free(set->jobs);
    memset(set, 0, sizeof *set);
}
