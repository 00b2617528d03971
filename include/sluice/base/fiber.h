/* fiber.h: several straight-line runs on one libuv loop: each target of a fleet runs in a fiber of its own.
 *
 * sluice's commands are written as sequential C that waits for the loop
 * (session.h: send, then run the loop until the answer is in). To run
 * several targets at once from the one loop, each runs in a fiber (its own
 * stack, switched with ucontext): where it would run the loop it yields
 * instead (sl_fiber_wait), and the scheduler (sl_fiber_run_all) turns the
 * loop once and resumes every fiber, which looks again at what it waits for.
 * Callbacks run on the scheduler's stack and only set flags, as they always
 * did, so nothing else changes. Outside a fiber sl_fiber_wait just turns the
 * loop: one target runs exactly as before. */
#ifndef SLUICE_FIBER_H
#define SLUICE_FIBER_H

#include <stddef.h>
#include <uv.h>

typedef struct sl_fiber sl_fiber;

/* A fiber that will run fn(arg) on a stack of its own (started by
 * sl_fiber_run_all). */
sl_fiber *sl_fiber_new(void (*fn)(void *arg), void *arg);
void sl_fiber_free(sl_fiber *fiber);

/* The fiber running now, or NULL on the main stack. */
sl_fiber *sl_fiber_current(void);
/* What the fiber was made with (its arg). */
void *sl_fiber_arg(const sl_fiber *fiber);
/* A pointer for whoever asks who runs now (a fleet's target), NULL unset. */
void sl_fiber_set_tag(sl_fiber *fiber, const void *tag);
const void *sl_fiber_tag(const sl_fiber *fiber);

/* Whose work the main stack does now: a callback of the loop that serves
 * one fiber's connection (its answer, a server's notice) lends that fiber's
 * tag while it runs, so that what it logs names the fiber's target. Returns
 * the tag lent before, to lend back. */
const void *sl_fiber_lend_tag(const void *tag);
/* The running fiber's tag; on the main stack, the tag lent to it (NULL:
 * none). */
const void *sl_fiber_current_tag(void);

/* Wait for the loop once: in a fiber, yield to the scheduler (which turns
 * the loop and resumes it); outside one, uv_run(loop, UV_RUN_ONCE), or
 * UV_RUN_NOWAIT when a timer is already due (fiber.c). */
void sl_fiber_wait(uv_loop_t *loop);

/* Run fibers[0..n) to their end on loop, at most `parallel` at a time, in
 * order: each starts when one before it ended. Called in a fiber (a fleet's
 * target running the workers of a `down`), it waits for the loop through
 * that fiber's own scheduler: fibers nest. */
void sl_fiber_run_all(uv_loop_t *loop, sl_fiber **fibers, size_t n, size_t parallel);

#endif
