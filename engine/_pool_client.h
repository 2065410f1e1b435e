/* A kernel module's handle on the engine's threads (engine/_pool.h, owned by engine/pool.pyx).

   Each compiled module has its own copy of these statics: ``pm_pool_client`` points at the
   table pool.pyx publishes (its capsule ``api``), set once by ``attach_pool`` (engine/blas.pxd)
   the first time the module needs it; until then, or when it cannot be had, everything runs on
   the calling thread. */

#ifndef PM_POOL_CLIENT_H
#define PM_POOL_CLIENT_H

typedef void (*pm_pool_fn)(void *arg, int chunk, int chunks);

typedef struct {
    int (*parts)(void);
    int (*split_blas)(void);
    void (*run)(pm_pool_fn fn, void *arg, int chunks);
} pm_pool_api;

/* NULL: not attached yet; pm_pool_none: attaching failed (one thread for good). */
static const pm_pool_api *pm_pool_client = 0;

static int pm_pool_one(void) { return 1; }

static void pm_pool_alone(pm_pool_fn fn, void *arg, int chunks) {
    int c;
    for (c = 0; c < chunks; c++)
        fn(arg, c, chunks);
}

static const pm_pool_api pm_pool_none = {pm_pool_one, pm_pool_one, pm_pool_alone};

static inline int pm_pool_client_ready(void) { return pm_pool_client != 0; }

static inline void pm_pool_client_set(const void *api) {
    pm_pool_client = api ? (const pm_pool_api *) api : &pm_pool_none;
}

/* Threads that may share a task, when this module is attached. */
static inline int pm_pool_client_parts(void) {
    return pm_pool_client ? pm_pool_client->parts() : 1;
}

static inline int pm_pool_client_split_blas(void) {
    return pm_pool_client ? pm_pool_client->split_blas() : 0;
}

static inline void pm_pool_client_run(pm_pool_fn fn, void *arg, int chunks) {
    if (pm_pool_client)
        pm_pool_client->run(fn, arg, chunks);
    else
        pm_pool_alone(fn, arg, chunks);
}

#endif
