/* main.c: the sluice binary; everything else lives in the library the tests link too. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include "sluice/base/log.h"
#include "sluice/cli/cli.h"

/* A cron line with `>&- 2>&- <&-` starts us with fds 0, 1 or 2 closed; the
 * next descriptor opened (libuv's epoll, a socket, a checkpoint file) would
 * then take that number, be written to as stdout or stderr, and libuv aborts
 * closing it at exit (it asserts fd > STDERR_FILENO). open() returns the
 * lowest free number, so going 0, 1, 2 puts /dev/null exactly on each hole. */
static int fill_std_fds(void)
{
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int got = open("/dev/null", O_RDWR);
        if (got != fd) {
            if (got >= 0)
                close(got);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* Nothing to report on: stderr itself may be the missing descriptor. */
    if (fill_std_fds() != 0)
        return SL_EXIT_USAGE;
    /* SQLite's memory statistics (on by default) take one process-wide mutex
     * on every allocation, which the checkpoint's connection on this thread
     * and a SQLite target's on its own thread then contend for; sluice never
     * reads them. Only allowed before SQLite initialises (sqlite3_config). */
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* Log lines go through a thread of their own from here on, so that a
     * stderr nobody reads cannot stop the event loop (log.h). */
    sl_log_writer_start();
    int code = sl_cli_main(argc, argv);
    /* Every line out before exit, as before; but a pipe that takes nothing
     * must not keep a stopping runner (exit 3 on SIGINT) alive. */
    sl_log_writer_stop(2000);
    return code;
}
