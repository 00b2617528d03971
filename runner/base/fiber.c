/* fiber.c: fibers on ucontext, a scheduler that turns the one loop between them, and AddressSanitizer told of each
 * switch. */
/* MAP_ANONYMOUS and the ucontext calls are outside POSIX.1-2008 (glibc has them under _DEFAULT_SOURCE). */
#define _DEFAULT_SOURCE
#include "sluice/base/fiber.h"

#include <assert.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "sluice/base/util.h"

/* Deep enough for a run's call chains (several 4 KiB sl_err on the way)
 * under the sanitizers' larger frames; only the pages touched are used. */
#define FIBER_STACK (4u << 20)

/* AddressSanitizer keeps shadow state per stack: it must know when the stack
 * changes (compiler-rt's common_interface_defs.h, "fiber" API). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define START_SWITCH(save, bottom, size)  __sanitizer_start_switch_fiber(save, bottom, size)
#define FINISH_SWITCH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define START_SWITCH(save, bottom, size)  ((void)(save), (void)(bottom), (void)(size))
#define FINISH_SWITCH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

struct sl_fiber {
    ucontext_t ctx;
    ucontext_t caller;         /* whoever resumed it last: a scheduler, on the main stack or a fiber's */
    sl_fiber *parent;          /* the fiber that resumed it, NULL: the main stack */
    const void *caller_bottom; /* the resumer's stack, for AddressSanitizer */
    size_t caller_size;
    void (*fn)(void *arg);
    void *arg;
    char *map; /* the stack, a guard page first */
    size_t map_size;
    void *fake; /* ASan's fake stack while switched out */
    const void *tag;
    int started, finished;
};

static sl_fiber *current;

sl_fiber *sl_fiber_new(void (*fn)(void *arg), void *arg)
{
    sl_fiber *f = sl_calloc(1, sizeof *f);
    f->fn = fn;
    f->arg = arg;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    f->map_size = FIBER_STACK + page;
    void *map = mmap(NULL, f->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        sl_error("cannot allocate a stack of %u bytes", FIBER_STACK);
        abort();
    }
    f->map = map;
    (void)mprotect(f->map, page, PROT_NONE); /* an overflow faults instead of writing over the heap */
    return f;
}

void sl_fiber_free(sl_fiber *fiber)
{
    if (!fiber)
        return;
    assert((!fiber->started || fiber->finished) && "BUG: freeing a fiber that has not finished");
    munmap(fiber->map, fiber->map_size);
    free(fiber);
}

sl_fiber *sl_fiber_current(void)
{
    return current;
}

void *sl_fiber_arg(const sl_fiber *fiber)
{
    return fiber->arg;
}

void sl_fiber_set_tag(sl_fiber *fiber, const void *tag)
{
    fiber->tag = tag;
}

const void *sl_fiber_tag(const sl_fiber *fiber)
{
    return fiber->tag;
}

static const void *lent;

const void *sl_fiber_lend_tag(const void *tag)
{
    const void *before = lent;
    lent = tag;
    return before;
}

const void *sl_fiber_current_tag(void)
{
    return current ? current->tag : lent;
}

static void entry(void)
{
    sl_fiber *f = current;
    FINISH_SWITCH(NULL, &f->caller_bottom, &f->caller_size);
    f->fn(f->arg);
    f->finished = 1;
    START_SWITCH(NULL, f->caller_bottom, f->caller_size); /* NULL: this stack is done with */
    /* returning resumes uc_link: the scheduler that resumed it */
}

/* Run f until it yields or ends. */
static void resume(sl_fiber *f)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!f->started) {
        f->started = 1;
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = f->map + page;
        f->ctx.uc_stack.ss_size = FIBER_STACK;
        f->ctx.uc_link = &f->caller;
        makecontext(&f->ctx, entry, 0);
    }
    f->parent = current;
    current = f;
    void *fake = NULL;
    START_SWITCH(&fake, f->map + page, FIBER_STACK);
    swapcontext(&f->caller, &f->ctx);
    FINISH_SWITCH(fake, NULL, NULL);
    current = f->parent;
}

/* Turn the loop once. uv_run(UV_RUN_ONCE) runs the timers already due first
 * and then blocks in poll until the next event or timer, even when one of
 * those timers did what the caller waits for: a connect that failed at once
 * and is reported from a timer of 0 ms would wait for the status watchdog
 * (3 s), a pause that ended while a chunk's answer was read for the next
 * event. With a timer due (or anything else that would not block: pending
 * callbacks, handles closing, nothing active), the turn does not wait. */
static void turn(uv_loop_t *loop)
{
    uv_update_time(loop);
    uv_run(loop, uv_backend_timeout(loop) == 0 ? UV_RUN_NOWAIT : UV_RUN_ONCE);
}

void sl_fiber_wait(uv_loop_t *loop)
{
    sl_fiber *f = current;
    if (!f) {
        turn(loop);
        return;
    }
    START_SWITCH(&f->fake, f->caller_bottom, f->caller_size);
    swapcontext(&f->ctx, &f->caller);
    FINISH_SWITCH(f->fake, &f->caller_bottom, &f->caller_size);
}

void sl_fiber_run_all(uv_loop_t *loop, sl_fiber **fibers, size_t n, size_t parallel)
{
    size_t next = 0, done = 0;
    if (parallel < 1)
        parallel = 1;
    while (done < n) {
        size_t running = 0;
        for (size_t i = 0; i < next; i++)
            running += !fibers[i]->finished;
        for (; next < n && running < parallel; next++, running++)
            resume(fibers[next]);
        for (size_t i = 0; i < next; i++)
            if (fibers[i]->started && !fibers[i]->finished)
                resume(fibers[i]);
        done = 0;
        running = 0;
        for (size_t i = 0; i < next; i++) {
            done += fibers[i]->finished;
            running += !fibers[i]->finished;
        }
        if (running > 0)
            sl_fiber_wait(loop); /* in a fiber itself, its own scheduler turns the loop */
    }
}
