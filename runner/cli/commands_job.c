/* commands_job.c: the commands over one job: plan, stamp (record a state without running) and report. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/cli/cli.h"
#include "sluice/engine/plan.h"
#include "sluice/engine/run.h"
#include "sluice/services/ctl.h"
#include "sluice/services/report.h"

/* Open a session on opts->db (connect_ms: its connect timeout, 0 for the
 * session's own), saying nothing: 0; SL_EXIT_USAGE with err for a database
 * string it cannot use (libpq's refusal of its settings too),
 * SL_EXIT_FAILED with err when it cannot connect. */
static int connect_db(const sl_opts *opts, uv_loop_t *loop, sl_session *sess, int64_t connect_ms, sl_err *err)
{
    uv_loop_init(loop);
    if (sl_session_init(sess, loop, opts->db, err) != 0) {
        uv_loop_close(loop);
        return SL_EXIT_USAGE;
    }
    if (connect_ms > 0)
        sess->connect_timeout_ms = connect_ms;
    int rc = sl_session_connect(sess, err);
    if (rc != 0) {
        sl_session_close(sess);
        uv_loop_close(loop);
        return rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    }
    return 0;
}

/* Open a session for a single-job command; 0 or an exit code, said. */
static int open_session(const sl_opts *opts, uv_loop_t *loop, sl_session *sess)
{
    sl_err err = {{0}};
    int code = connect_db(opts, loop, sess, 0, &err);
    if (code != 0)
        sl_error("%s", err.msg);
    return code;
}

static void close_session(uv_loop_t *loop, sl_session *sess)
{
    sl_session_close(sess);
    if (uv_loop_close(loop) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
}

int sl_cmd_plan(const sl_opts *opts, sl_job *job)
{
    uv_loop_t loop;
    sl_session sess;
    int code = open_session(opts, &loop, &sess);
    if (code != 0)
        return code;
    code = sl_plan_job(&sess, &opts->run, job, opts->sample);
    close_session(&loop, &sess);
    return code;
}

int sl_cmd_stamp(const sl_opts *opts, sl_job *job, const char *state_name)
{
    sl_state state;
    if (sl_state_parse(state_name, &state) != 0 || (state != SL_STATE_DONE && state != SL_STATE_PENDING)) {
        sl_error("stamp: state must be done or pending, got \"%s\"", state_name);
        return SL_EXIT_USAGE;
    }
    uv_loop_t loop;
    sl_session sess;
    int code = open_session(opts, &loop, &sess);
    if (code != 0)
        return code;
    /* the job's lock: refused while a runner holds the job, so a stamp never races a run */
    sl_run run;
    int rc = sl_run_open(&run, &sess, &opts->run, job, SL_RUN_STAMP, 0);
    if (rc == 0)
        rc = sl_run_stamp(&run, state);
    if (rc == SL_STOPPED) {
        sl_info("%s", run.err.msg);
        code = SL_EXIT_STOPPED;
    } else if (rc != 0) {
        sl_error("%s", run.err.msg);
        code = rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    } else {
        sl_info("%s: stamped %s", job->name, sl_state_name(state));
    }
    sl_run_close(&run);
    close_session(&loop, &sess);
    return code;
}

/* Write text to path through a file created 0600 beside it, renamed into
 * place. A path that is there and is no regular file (a device, a FIFO, a
 * directory, a symbolic link) is refused, SL_EREFUSED: the rename would
 * put the page in its place (as root, -o /dev/null would replace
 * /dev/null). */
static int write_private(const char *path, const char *text, size_t len, sl_err *err)
{
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        const char *what = S_ISLNK(st.st_mode)    ? "a symbolic link"
                           : S_ISDIR(st.st_mode)  ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "not a regular file";
        sl_err_set(err,
                   "-o %s: it is %s; report writes a new file in its place, so it takes a regular file or a new "
                   "name",
                   path, what);
        sl_err_append(err, "hint: -o - writes the page to standard output");
        return SL_EREFUSED;
    }
    char *tmp = sl_asprintf("%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) { /* nothing written: a place the page cannot go (no permission, read-only) */
        sl_err_set(err, "-o %s: cannot create a file there: %s", path, strerror(errno));
        free(tmp);
        return SL_EREFUSED;
    }
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < len;) {
        ssize_t n = write(fd, text + at, len - at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -1;
        else
            at += (size_t)n;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -1;
    if (rc != 0)
        sl_err_set(err, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        sl_err_set(err, "cannot write %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* Where path would be: its directory's device and inode, and its last
 * component, so that two spellings (ck/x, ./ck/../ck/x) compare equal,
 * whether or not the file is there. -1 when the directory is not there. */
typedef struct file_place {
    struct stat dir;
    const char *base;
} file_place;

static int place_of(const char *path, file_place *place)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? sl_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : sl_strdup(".");
    int rc = stat(dir, &place->dir) == 0 && S_ISDIR(place->dir.st_mode) ? 0 : -1;
    free(dir);
    place->base = slash ? slash + 1 : path;
    return rc;
}

/* Whether a and b name one file: the same device and inode when both are
 * there (a hard link too), else the same name in the same directory. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    file_place pa, pb;
    return place_of(a, &pa) == 0 && place_of(b, &pb) == 0 && pa.dir.st_dev == pb.dir.st_dev &&
           pa.dir.st_ino == pb.dir.st_ino && strcmp(pa.base, pb.base) == 0;
}

/* A job file in dir that out names, or a new "*.sql" there (the next `up`
 * would read the page as a job): its path, malloc'd, else NULL. */
static char *job_file_at(const char *dir, const char *out)
{
    file_place place;
    struct stat jobs;
    size_t len;
    if (place_of(out, &place) == 0 && stat(dir, &jobs) == 0 && place.dir.st_dev == jobs.st_dev &&
        place.dir.st_ino == jobs.st_ino && (len = strlen(place.base)) > 4 && strcmp(place.base + len - 4, ".sql") == 0)
        return sl_strdup(out);
    DIR *d = opendir(dir);
    struct dirent *e;
    char *found = NULL;
    while (d && !found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 4 || strcmp(e->d_name + n - 4, ".sql") != 0)
            continue;
        char *path = sl_asprintf("%s/%s", dir, e->d_name);
        if (same_file(out, path))
            found = path;
        else
            free(path);
    }
    if (d)
        closedir(d);
    return found;
}

/* -o's file, before anything is read: its directory must be there, and it
 * may not be the job's checkpoint file or a companion of it, nor a job
 * file; report would replace it with the page. 0, or -1 with err. */
static int check_report_out(const sl_opts *opts, const char *job, const char *out, sl_err *err)
{
    static const char *const companions[] = {"", "-lock", "-ctl", "-wal", "-shm", "-journal"};
    file_place place;
    if (place_of(out, &place) != 0) {
        sl_err_set(err,
                   "-o %s: its directory is not there (hint: create it, or -o - writes the page to standard "
                   "output)",
                   out);
        return -1;
    }
    char *ckpt = sl_ckpt_path(opts->run.ckpt_dir, job);
    for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
        char *path = sl_asprintf("%s%s", ckpt, companions[i]);
        int same = same_file(out, path);
        if (same)
            sl_err_set(err, "-o %s: that is %s, %s of job %s; report would replace it with the page", out, path,
                       i == 0 ? "the checkpoint file" : "a companion of the checkpoint file", job);
        free(path);
        if (same) {
            free(ckpt);
            return -1;
        }
    }
    free(ckpt);
    char *job_file = job_file_at(opts->jobs_dir, out);
    if (job_file) {
        sl_err_set(err, "-o %s: that names job file %s; report would put the page where up reads its jobs", out,
                   job_file);
        free(job_file);
        return -1;
    }
    return 0;
}

/* Remove the journal report_from_db made, and its directory. */
static void remove_scratch(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *path = sl_asprintf("%s/%s", dir, e->d_name);
        unlink(path);
        free(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* The page of a job whose checkpoint file is not in --checkpoints, from
 * what the database records: its state and times, and each committed chunk
 * (sluice_progress), put in a journal of its own in a scratch directory.
 * An exit code; the page in *html. */
static int report_from_db(const sl_opts *opts, const char *job, sl_buf *html)
{
    if (!opts->db) {
        sl_error("no checkpoint file for job \"%s\" in %s, and no database to read the job from\nhint: --db URL "
                 "(the database records each chunk), or --checkpoints DIR where the job ran",
                 job, opts->run.ckpt_dir);
        return SL_EXIT_USAGE;
    }
    uv_loop_t loop;
    sl_session sess;
    sl_err err = {{0}};
    int code = connect_db(opts, &loop, &sess, 0, &err);
    if (code != SL_EXIT_OK) {
        sl_error("no checkpoint file for job \"%s\" in %s, and the database, which would have the job's chunks, "
                 "cannot be read: %s\nhint: --checkpoints DIR where the job ran, or --db URL of its database",
                 job, opts->run.ckpt_dir, err.msg);
        return SL_EXIT_USAGE;
    }
    sl_job_row row;
    if (sl_run_read_row(&sess, job, &row, &err) != 0) {
        sl_error("%s", err.msg);
        close_session(&loop, &sess);
        return SL_EXIT_FAILED;
    }
    if (!row.exists || (row.state == SL_STATE_PENDING && !row.stamped)) {
        sl_error("no checkpoint file for job \"%s\" in %s, and %s has no record of it: it has not run there", job,
                 opts->run.ckpt_dir, sl_session_display(&sess));
        sl_job_row_free(&row);
        close_session(&loop, &sess);
        return SL_EXIT_USAGE;
    }
    const char *tmp = getenv("TMPDIR");
    char *dir = sl_asprintf("%s/sluice-report.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    sl_ckpt *ckpt = NULL;
    int rc = mkdtemp(dir) ? 0 : -1;
    if (rc != 0)
        sl_err_set(&err, "cannot make a scratch directory %s: %s", dir, strerror(errno));
    char *path = sl_ckpt_path(dir, job);
    if (rc == 0)
        rc = sl_ckpt_open(path, job, 1, &ckpt, &err);
    int64_t run_id = 0, after = 0;
    /* the runs sluice_runs records, each with the chunks that committed while it ran; else one run, the job's
     * span as its row gives it */
    sl_ckpt_run *runs = NULL;
    size_t nruns = 0, mine = 0;
    if (rc == 0 && sl_run_history(&sess, &runs, &nruns, &err) != 0)
        nruns = 0; /* it cannot be read: the job's row alone */
    int64_t *starts = sl_calloc(nruns + 1, sizeof *starts), *ids = sl_calloc(nruns + 1, sizeof *ids);
    for (size_t i = 0; rc == 0 && i < nruns; i++) {
        if (strcmp(runs[i].job, job) != 0)
            continue;
        /* one that ended says what it did; an up that did not (killed, or running now) counts the chunks
         * that committed while it ran; a down's are its own (unknown when it did not close) */
        int open = runs[i].ended_at_ms <= 0 && strcmp(runs[i].kind, "down") != 0;
        int64_t id = 0;
        rc = sl_ckpt_add_past_run(ckpt, runs[i].kind, runs[i].outcome, runs[i].started_at_ms, runs[i].ended_at_ms,
                                  open ? 0 : runs[i].rows, open ? 0 : runs[i].chunks, runs[i].error, &id, &err);
        ids[mine] = open ? id : 0;
        starts[mine++] = runs[i].started_at_ms;
    }
    int64_t ended = row.state == SL_STATE_RUNNING || row.state == SL_STATE_ROLLING_BACK ? 0 : row.updated_at_ms;
    if (rc == 0 && mine == 0)
        rc = sl_ckpt_add_past_run(ckpt, sl_run_row_kind(&row), sl_state_name(row.state),
                                  row.started_at_ms ? row.started_at_ms : row.updated_at_ms, ended, 0, 0, row.error,
                                  &run_id, &err);
    sl_run_spans spans = {starts, ids, mine};
    for (int got = 1000; rc == 0 && got == 1000;) {
        got = sl_run_copy_chunks(&sess, ckpt, run_id, mine ? &spans : NULL, job, NULL, 1000, &after, &err);
        rc = got < 0 ? -1 : 0;
    }
    for (size_t i = 0; i < nruns; i++)
        sl_ckpt_run_free(&runs[i]);
    free(runs);
    free(starts);
    free(ids);
    if (rc == 0)
        rc = sl_ckpt_set_job_as(ckpt, row.state, row.error, sl_session_display(&sess), row.started_at_ms,
                                row.updated_at_ms, &err);
    sl_report_summary sum;
    if (rc == 0)
        rc = sl_report_build(ckpt, sl_now_ms(), opts->run.ckpt_dir, html, &sum, &err);
    if (rc != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_FAILED;
    }
    if (ckpt)
        sl_ckpt_close(ckpt);
    remove_scratch(dir);
    free(path);
    free(dir);
    sl_job_row_free(&row);
    close_session(&loop, &sess);
    return code;
}

int sl_cmd_report(const sl_opts *opts, const char *name)
{
    size_t len = strlen(name);
    char *job = sl_strndup(name, len > 4 && strcmp(name + len - 4, ".sql") == 0 ? len - 4 : len);
    char *path = sl_ckpt_path(opts->run.ckpt_dir, job);
    /* a fleet's targets each get a page of their own */
    char *out_path = opts->out_file ? sl_strdup(opts->out_file)
                     : opts->target ? sl_asprintf("%s.%s.report.html", job, opts->target)
                                    : sl_asprintf("%s.report.html", job);
    sl_ckpt *ckpt = NULL;
    sl_err err = {{0}};
    int code = SL_EXIT_OK;
    sl_buf html = {0};
    if (strcmp(out_path, "-") != 0 && check_report_out(opts, job, out_path, &err) != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_USAGE;
    }
    int rc = code == SL_EXIT_OK ? sl_ckpt_open(path, job, 0, &ckpt, &err) : 0;
    if (rc == SL_CKPT_MISSING) {
        code = report_from_db(opts, job, &html);
    } else if (rc != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_USAGE;
    }
    sl_report_summary sum;
    if (code == SL_EXIT_OK && ckpt && sl_report_build(ckpt, sl_now_ms(), NULL, &html, &sum, &err) != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_USAGE; /* what the file holds cannot be read: a damaged checkpoint, as for status */
    }
    int wrote = 0;
    if (code == SL_EXIT_OK && strcmp(out_path, "-") == 0) {
        fwrite(html.data, 1, html.len, stdout);
    } else if (code == SL_EXIT_OK && (wrote = write_private(out_path, html.data, html.len, &err)) != 0) {
        sl_error("%s", err.msg);
        code = wrote == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    } else if (code == SL_EXIT_OK) {
        printf("%s\n", out_path);
    }
    sl_buf_free(&html);
    if (ckpt)
        sl_ckpt_close(ckpt);
    free(out_path);
    free(path);
    free(job);
    return code;
}

/* `ctl` through the database, after the socket in --checkpoints had no
 * runner (it runs on another machine, or its socket path was too long):
 * as sl_ctl_request. err holds the socket's reason on entry. */
static int ctl_through_db(const sl_opts *opts, const char *job, const char *path, const char *req, char **response,
                          sl_err *err)
{
    int lite = opts->db && strncmp(opts->db, "sqlite:", 7) == 0;
    /* SQLite's runners are on the file's machine, and the socket is the way to them; with none, a pause
     * or resume is recorded in the file */
    if (!opts->db || (lite && strcmp(req, "pause") != 0 && strcmp(req, "resume") != 0))
        return SL_CTL_NOT_LISTENING;
    uv_loop_t loop;
    sl_session sess;
    sl_err why = {{0}};
    int code = connect_db(opts, &loop, &sess, getenv("SLUICE_CONNECT_TIMEOUT") ? 0 : 5000, &why);
    if (code == SL_EXIT_USAGE) {
        sl_err_append(err, "the database cannot be asked either: %s", why.msg);
        return -1; /* whether a runner runs the job is not known */
    }
    if (code != 0) {
        sl_err_append(err, "the database, through which a runner on another machine answers, cannot be reached: %s",
                      why.msg);
        return -1;
    }
    char *runner = NULL;
    int rc = sl_ctl_request_db(&sess, job, req, response, &runner, &why);
    if (rc == SL_CTL_NOT_LISTENING) {
        sl_err_set(err, "no runner of job %s is listening at %s, and %s", job, path, why.msg);
        sl_err_append(err, "hint: `up` and `down` answer there while they run the job, and through the database "
                           "from another machine");
    } else if (rc != 0)
        *err = why;
    else if (runner)
        sl_info("%s: answered through %s by %s", job, sl_session_display(&sess), runner);
    free(runner);
    close_session(&loop, &sess);
    return rc;
}

int sl_cmd_ctl(const sl_opts *opts, const char *job, const char *req, int *idle)
{
    char *path = sl_ctl_path(opts->run.ckpt_dir, job);
    char *response = NULL;
    sl_err err = {{0}};
    int rc = sl_ctl_request(path, req, &response, &err);
    if (rc == SL_CTL_NOT_LISTENING)
        rc = ctl_through_db(opts, job, path, req, &response, &err);
    /* a pause or resume with no runner was recorded, or could not be (the job never ran there) */
    if (rc == SL_CTL_NOT_LISTENING && idle && strcmp(req, "pause") != 0 && strcmp(req, "resume") != 0) {
        sl_info("job %s does not run on this target now", job);
        *idle = 1;
        free(path);
        return SL_EXIT_OK;
    }
    if (rc == 0 && opts->target) {
        sl_buf shown = {0};
        for (const char *line = response; *line;) {
            const char *end = strchr(line, '\n');
            size_t len = end ? (size_t)(end - line + 1) : strlen(line);
            sl_buf_printf(&shown, "%s: ", opts->target);
            sl_buf_add(&shown, line, len);
            line += len;
        }
        fputs(shown.data ? shown.data : "", stdout);
        sl_buf_free(&shown);
    } else if (rc == 0) {
        fputs(response, stdout);
    } else {
        sl_error("%s", err.msg);
    }
    free(response);
    free(path);
    return rc == 0 ? SL_EXIT_OK : rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
}
