/* The engine's own threads: a task cut into chunks that the calling thread and the pool's
   workers claim one at a time.

   pm_pool_run(fn, arg, chunks) runs fn(arg, c, chunks) once for each c in [0, chunks) and
   returns when all have run. The caller claims chunks itself, as the workers do, so a worker
   that the operating system has not scheduled (another process holds the core) costs nothing:
   the caller takes its chunk. It only waits for a chunk a worker has already begun. Workers
   spin for a while after a task (a training step runs a product every 100 us or so) and then
   sleep on a condition variable.

   pm_pool_set_parts(n) sets how many threads share a task (1: the caller alone, no worker
   started); pm_pool_parts() reads it. A call made while another one runs (another thread of
   the process, or a chunk calling in again) runs its chunks on its own thread. A forked child
   starts with no workers and starts them again when it needs them.

   Only engine/pool.pyx includes this file: the pool is one per process. Other kernel modules
   reach it through the table of _pool_client.h (pm_pool_api), which pool.pyx hands out.

   The claim word holds the task's generation (high 32 bits), its chunk count (16 bits) and the
   next chunk to claim (16 bits): a worker that wakes late sees another generation and claims
   nothing, and it reads fn and arg only once its claim succeeded, when the caller cannot
   finish the task before that chunk is done. */

#ifndef PM_POOL_H
#define PM_POOL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PM_POOL_PAUSE() __asm__ __volatile__("" ::: "memory")
#else
#define PM_POOL_PAUSE() ((void) 0)
#endif

#include "_pool_client.h"  /* pm_pool_fn and the table pool.pyx hands out */

/* Most threads a task is shared by; chunks per task at most 65535. */
#define PM_POOL_MOST 64
/* Nanoseconds an idle worker polls for the next task before it sleeps: a step's products
   come a few hundred microseconds apart at most (the optimiser's update, the loss), and a
   sleeping worker takes tens of microseconds to wake. It yields the core every 64 polls. */
#define PM_POOL_SPIN_NS 2000000

static inline int64_t pm_pool_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

static struct {
    _Atomic uint64_t claim;
    _Atomic uint32_t gen;
    _Atomic int done;
    _Atomic int busy;
    _Atomic int sleepers;
    _Atomic int parts;
    pm_pool_fn fn;
    void *arg;
    int workers;
    int forks_registered;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pm_pool = {.parts = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Whether products that call the BLAS may be cut: only when the BLAS runs each call on one
   thread (a BLAS on several threads shares them already, and threads of both would contend). */
static _Atomic int pm_pool_blas_single = 1;

static int pm_pool_split_blas(void) {
    return atomic_load_explicit(&pm_pool_blas_single, memory_order_relaxed);
}

static void pm_pool_set_blas_single(int single) {
    atomic_store(&pm_pool_blas_single, single != 0);
}

static int pm_pool_parts(void) {
    return atomic_load_explicit(&pm_pool.parts, memory_order_relaxed);
}

static int pm_pool_start(int want);

/* Set the threads a task is shared by; the workers start now (when no task runs), so that
   the first task does not pay for their creation. */
static void pm_pool_set_parts(int n) {
    int zero = 0;
    n = n < 1 ? 1 : n > PM_POOL_MOST ? PM_POOL_MOST : n;
    atomic_store(&pm_pool.parts, n);
    if (n > 1 && pm_pool.workers < n - 1 &&
            atomic_compare_exchange_strong(&pm_pool.busy, &zero, 1)) {
        pm_pool_start(n - 1);
        atomic_store_explicit(&pm_pool.busy, 0, memory_order_release);
    }
}

/* Claim and run chunks of task ``gen`` until none is left or another task began. */
static void pm_pool_work(uint32_t gen) {
    uint64_t c = atomic_load_explicit(&pm_pool.claim, memory_order_acquire);
    for (;;) {
        uint32_t chunks = (uint32_t) (c >> 16) & 0xFFFF, next = (uint32_t) c & 0xFFFF;
        if ((uint32_t) (c >> 32) != gen || next >= chunks)
            return;
        if (!atomic_compare_exchange_weak_explicit(&pm_pool.claim, &c, c + 1,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;  /* c now holds the word another claimer left */
        pm_pool.fn(pm_pool.arg, (int) next, (int) chunks);
        atomic_fetch_add_explicit(&pm_pool.done, 1, memory_order_release);
        c = atomic_load_explicit(&pm_pool.claim, memory_order_acquire);
    }
}

static void *pm_pool_worker(void *unused) {
    uint32_t seen = atomic_load(&pm_pool.gen), gen;
    (void) unused;
    for (;;) {
        int64_t since = pm_pool_now_ns();
        unsigned spins = 0;
        while ((gen = atomic_load_explicit(&pm_pool.gen, memory_order_acquire)) == seen) {
            PM_POOL_PAUSE();
            if ((++spins & 63) != 0)
                continue;
            sched_yield();
            if (pm_pool_now_ns() - since < PM_POOL_SPIN_NS)
                continue;
            pthread_mutex_lock(&pm_pool.mu);
            atomic_fetch_add(&pm_pool.sleepers, 1);
            while (atomic_load(&pm_pool.gen) == seen)
                pthread_cond_wait(&pm_pool.cv, &pm_pool.mu);
            atomic_fetch_sub(&pm_pool.sleepers, 1);
            pthread_mutex_unlock(&pm_pool.mu);
        }
        seen = gen;
        pm_pool_work(gen);
    }
    return NULL;
}

/* The child of a fork has only the thread that forked: no workers, no task. */
static void pm_pool_after_fork(void) {
    pm_pool.workers = 0;
    atomic_store(&pm_pool.busy, 0);
    atomic_store(&pm_pool.sleepers, 0);
    pthread_mutex_init(&pm_pool.mu, NULL);
    pthread_cond_init(&pm_pool.cv, NULL);
}

/* Start workers up to ``want`` (the caller owns the pool); the number running. */
static int pm_pool_start(int want) {
    pthread_attr_t attr;
    pthread_t t;
    if (!pm_pool.forks_registered) {
        if (pthread_atfork(NULL, NULL, pm_pool_after_fork) != 0)
            return pm_pool.workers;
        pm_pool.forks_registered = 1;
    }
    if (pthread_attr_init(&attr) != 0)
        return pm_pool.workers;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pm_pool.workers < want && pthread_create(&t, &attr, pm_pool_worker, NULL) == 0)
        pm_pool.workers++;
    pthread_attr_destroy(&attr);
    return pm_pool.workers;
}

static void pm_pool_run(pm_pool_fn fn, void *arg, int chunks) {
    int c, zero = 0, parts = pm_pool_parts();
    uint32_t gen;
    if (chunks > 0xFFFF)
        chunks = 0xFFFF;  /* callers cut far fewer; a bound keeps the claim word exact */
    if (chunks < 2 || parts < 2 ||
            !atomic_compare_exchange_strong(&pm_pool.busy, &zero, 1)) {
        for (c = 0; c < chunks; c++)
            fn(arg, c, chunks);
        return;
    }
    if (pm_pool.workers < parts - 1 && pm_pool_start(parts - 1) == 0) {
        atomic_store_explicit(&pm_pool.busy, 0, memory_order_release);
        for (c = 0; c < chunks; c++)
            fn(arg, c, chunks);
        return;
    }
    pm_pool.fn = fn;
    pm_pool.arg = arg;
    atomic_store_explicit(&pm_pool.done, 0, memory_order_relaxed);
    gen = atomic_load_explicit(&pm_pool.gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&pm_pool.claim, ((uint64_t) gen << 32) | ((uint64_t) chunks << 16),
                          memory_order_release);
    atomic_store(&pm_pool.gen, gen);
    if (atomic_load(&pm_pool.sleepers) > 0) {
        pthread_mutex_lock(&pm_pool.mu);
        pthread_cond_broadcast(&pm_pool.cv);
        pthread_mutex_unlock(&pm_pool.mu);
    }
    pm_pool_work(gen);
    for (c = 1; atomic_load_explicit(&pm_pool.done, memory_order_acquire) < chunks; c++) {
        PM_POOL_PAUSE();  /* a worker runs a chunk it claimed */
        if ((c & 255) == 0)
            sched_yield();
    }
    atomic_store_explicit(&pm_pool.busy, 0, memory_order_release);
}

#endif
