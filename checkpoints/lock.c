/* lock.c: the run lock beside a checkpoint file (fcntl, so it dies with the process). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/checkpoints/ckpt.h"

/* A separate file: fcntl locks on the SQLite file itself would be dropped by
 * SQLite's own close() calls (POSIX releases all of a process's locks on a
 * file when any descriptor of it closes). */
static char *lock_path(const char *ckpt_path)
{
    return sl_asprintf("%s-lock", ckpt_path);
}

int sl_ckpt_lock(const char *ckpt_path, int *fd, sl_err *err)
{
    char *path = lock_path(ckpt_path);
    int lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0) {
        sl_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(lfd, F_SETLK, &fl) != 0) {
        int e = errno;
        close(lfd);
        if (e == EACCES || e == EAGAIN) {
            sl_err_set(err, "%s is locked: another sluice process is running this job with the same checkpoints", path);
            free(path);
            return SL_EREFUSED;
        }
        sl_err_set(err, "%s: cannot lock: %s", path, strerror(e));
        free(path);
        return -1;
    }
    free(path);
    *fd = lfd;
    return 0;
}

void sl_ckpt_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

int sl_ckpt_locked(const char *ckpt_path)
{
    char *path = lock_path(ckpt_path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    close(fd);
    return held;
}
