/* The allocation workloads of pymalloc-bench, in C, for allocators used
   through their C API. Compiled once per allocator by the harness, with one
   of:
     -DALLOC_PYMALLOC   PyObject_Malloc/PyObject_Free of libpymalloc (pymalloc-rs)
     -DALLOC_OBMALLOC   PyObject_Malloc/PyObject_Free of libpython (CPython 3.11)
     -DALLOC_MIMALLOC   mi_malloc/mi_free
     -DALLOC_LIBC       malloc/free (glibc, or jemalloc when linked with -ljemalloc)
   Usage: driver WORKLOAD ALLOCATOR-LABEL
   Prints one JSON object: the time per operation and the resident memory. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(ALLOC_PYMALLOC) || defined(ALLOC_OBMALLOC)
void *PyObject_Malloc(size_t size);
void PyObject_Free(void *ptr);
#define ALLOC(n) PyObject_Malloc(n)
#define FREE(p) PyObject_Free(p)
#elif defined(ALLOC_MIMALLOC)
void *mi_malloc(size_t size);
void mi_free(void *ptr);
#define ALLOC(n) mi_malloc(n)
#define FREE(p) mi_free(p)
#else
#define ALLOC(n) malloc(n)
#define FREE(p) free(p)
#endif

#if defined(ALLOC_PYMALLOC) || defined(ALLOC_OBMALLOC)
void PyMem_SetupDebugHooks(void);
#endif
#ifdef ALLOC_PYMALLOC
int PyMalloc_SetMode(const char *mode);
int PyMalloc_SetupByName(const char *name);
int PyMalloc_InitFromEnv(void);
#endif

/* BENCH_SCALE=k divides the iteration counts (for profiling runs). */
static long scale = 1;
static long scaled(long n) { return n / scale > 0 ? n / scale : 1; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* kB of a /proc/self/status line ("VmRSS", "VmHWM"). */
static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':') v = strtol(line + k + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

/* Resets the peak resident size to the current one. */
static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

#define NSIZES (1 << 20)
static uint32_t sizes[NSIZES];
static void fill_sizes(uint32_t lo, uint32_t hi, int large_percent)
{
    for (size_t i = 0; i < NSIZES; i++) {
        if (large_percent && next() % 100 < (uint64_t)large_percent)
            sizes[i] = 513 + (uint32_t)(next() % (8192 - 513));
        else
            sizes[i] = lo + (uint32_t)(next() % (hi - lo + 1));
    }
}

static void touch(void *p, size_t n)
{
    /* write the first bytes, as an initialiser would */
    ((volatile unsigned char *)p)[0] = (unsigned char)n;
    if (n > 8) ((volatile unsigned char *)p)[n - 1] = 1;
}

static double fastpath(long *ops)
{
    const long n = scaled(20 * 1000 * 1000);
    double t = now();
    for (long i = 0; i < n; i++) {
        void *p = ALLOC(64);
        touch(p, 64);
        FREE(p);
    }
    *ops = n;
    return now() - t;
}

/* A ring of r live blocks of lo..hi bytes (large_percent of them 513..8192
   instead): each step frees the oldest block and allocates a new one. */
static double ring_of(long *ops, uint32_t lo, uint32_t hi, int large_percent, size_t r, long steps)
{
    enum { R = 10000 };
    static void *slot[R];
    const long n = scaled(steps);
    fill_sizes(lo, hi, large_percent);
    for (size_t i = 0; i < r; i++) {
        slot[i] = ALLOC(sizes[i]);
        touch(slot[i], sizes[i]);
    }
    double t = now();
    /* The slot index wraps by comparison, not `i % r`: with a division in
       the loop, gcc -O2 reloads r from the stack each step and the whole
       ring ran about twice as slow for some allocators and 1.6x for others,
       by code layout alone (docs/every-size.md, "Tenth pass"). */
    for (long i = 0, k = 0; i < n; i++) {
        uint32_t s = sizes[(size_t)i & (NSIZES - 1)];
        FREE(slot[k]);
        slot[k] = ALLOC(s);
        touch(slot[k], s);
        if (++k == (long)r) k = 0;
    }
    double dt = now() - t;
    for (size_t i = 0; i < r; i++) FREE(slot[i]);
    *ops = n;
    return dt;
}

static double ring(long *ops, int large_percent)
{
    return ring_of(ops, 1, 512, large_percent, 10000, 10 * 1000 * 1000);
}

/* Random order: five rounds, each allocating 1M blocks of 1..512 bytes and
   freeing them in a random order. From the second round on, an allocator
   that keeps recently freed memory for a while reuses it; one that gave it
   all back faults it in again. */
enum { RANDOM_ROUNDS = 5 };
static double random_order(long *ops)
{
    const size_t n = (size_t)scaled(1000 * 1000);
    void **blocks = malloc(n * sizeof *blocks);
    size_t *order = malloc(n * sizeof *order);
    fill_sizes(1, 512, 0);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next() % (i + 1));
        size_t x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    double t = now();
    for (int r = 0; r < RANDOM_ROUNDS; r++) {
        for (size_t i = 0; i < n; i++) {
            blocks[i] = ALLOC(sizes[i]);
            touch(blocks[i], sizes[i]);
        }
        for (size_t i = 0; i < n; i++) FREE(blocks[order[i]]);
    }
    double dt = now() - t;
    free(blocks);
    free(order);
    *ops = (long)n * RANDOM_ROUNDS;
    return dt;
}

static long survivors_peak, survivors_kept;
static double survivors(long *ops)
{
    const size_t n = (size_t)scaled(2 * 1000 * 1000);
    void **blocks = malloc(n * sizeof *blocks);
    fill_sizes(16, 256, 0);
    double t = now();
    for (size_t i = 0; i < n; i++) {
        blocks[i] = ALLOC(sizes[i & (NSIZES - 1)]);
        touch(blocks[i], sizes[i & (NSIZES - 1)]);
    }
    survivors_peak = status_kib("VmRSS");
    for (size_t i = 0; i < n; i++)
        if (i % 1000 != 0) FREE(blocks[i]);
    double dt = now() - t;
    /* Resident memory once the allocator's own delay has passed (2.5 s
       idle): allocators that keep freed memory for a while (pymalloc-rs's
       decay, mimalloc's purge delay, jemalloc's decay) have had their chance
       to give it back. */
    struct timespec idle = {2, 500000000L};
    nanosleep(&idle, NULL);
    survivors_kept = status_kib("VmRSS");
    for (size_t i = 0; i < n; i += 1000) FREE(blocks[i]);
    free(blocks);
    *ops = (long)n;
    return dt;
}

/* Producer/consumer: one thread allocates, another frees, through a
   single-producer single-consumer ring of pointers. */
enum { Q = 4096 };
static void *_Atomic queue[Q];
static long PC_N = 5 * 1000 * 1000;

static void *consumer(void *arg)
{
    (void)arg;
    for (long i = 0; i < PC_N; i++) {
        size_t k = (size_t)i % Q;
        void *p;
        while ((p = atomic_load_explicit(&queue[k], memory_order_acquire)) == NULL)
            ;
        atomic_store_explicit(&queue[k], NULL, memory_order_relaxed);
        FREE(p);
    }
    return NULL;
}

static double prodcons(long *ops)
{
    fill_sizes(16, 256, 0);
    pthread_t c;
    double t = now();
    pthread_create(&c, NULL, consumer, NULL);
    for (long i = 0; i < PC_N; i++) {
        size_t k = (size_t)i % Q;
        uint32_t s = sizes[(size_t)i & (NSIZES - 1)];
        void *p = ALLOC(s);
        touch(p, s);
        while (atomic_load_explicit(&queue[k], memory_order_relaxed) != NULL)
            ;
        atomic_store_explicit(&queue[k], p, memory_order_release);
    }
    pthread_join(c, NULL);
    *ops = PC_N;
    return now() - t;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s fastpath|ring|random|survivors|prodcons|mixed|medium|large LABEL\n", argv[0]);
        return 2;
    }
    const char *w = argv[1];
    const char *sc = getenv("BENCH_SCALE");
    if (sc && atol(sc) > 0) scale = atol(sc);
    PC_N = scaled(PC_N);
#ifdef ALLOC_PYMALLOC
    /* As a C program using the library would: PYTHONMALLOC and
       PYMALLOC_PURGE (default: the decay policy and its background thread). */
    if (PyMalloc_InitFromEnv() != 0) {
        fprintf(stderr, "PyMalloc_InitFromEnv failed\n");
        return 2;
    }
    const char *mode = getenv("PYMALLOC_MODE");
    if (mode && *mode) {
        if (PyMalloc_SetMode(mode) != 0 || PyMalloc_SetupByName("pymalloc") != 0) {
            fprintf(stderr, "bad PYMALLOC_MODE %s\n", mode);
            return 2;
        }
    }
#endif
#if defined(ALLOC_PYMALLOC) || defined(ALLOC_OBMALLOC)
    /* BENCH_DEBUG_HOOKS=1: CPython's debug hooks over every domain, as
       PYTHONMALLOC=pymalloc_debug installs them (the same call in both
       libraries). */
    const char *hooks = getenv("BENCH_DEBUG_HOOKS");
    if (hooks && *hooks == '1') {
        PyMem_SetupDebugHooks();
        /* The hooks fill fresh blocks with PYMEM_CLEANBYTE. */
        unsigned char *probe = ALLOC(8);
        int on = probe[0] == 0xCD && probe[7] == 0xCD;
        FREE(probe);
        if (!on) {
            fprintf(stderr, "BENCH_DEBUG_HOOKS: the debug hooks are not installed\n");
            return 3;
        }
    }
#endif
    /* Warm up: let each allocator set itself up. */
    FREE(ALLOC(16));
    long base = status_kib("VmRSS");
    reset_peak();
    long ops = 0;
    double secs;
    if (!strcmp(w, "fastpath")) secs = fastpath(&ops);
    else if (!strcmp(w, "ring")) secs = ring(&ops, 0);
    else if (!strcmp(w, "mixed")) secs = ring(&ops, 10);
    /* Medium: 2,000 live blocks of 513 B..32 KiB; large: 64 of 32 KiB..1 MiB. */
    else if (!strcmp(w, "medium")) secs = ring_of(&ops, 513, 32768, 0, 2000, 2 * 1000 * 1000);
    else if (!strcmp(w, "large")) secs = ring_of(&ops, 32769, 1 << 20, 0, 64, 200 * 1000);
    else if (!strcmp(w, "random")) secs = random_order(&ops);
    else if (!strcmp(w, "survivors")) secs = survivors(&ops);
    else if (!strcmp(w, "prodcons")) secs = prodcons(&ops);
    else {
        fprintf(stderr, "unknown workload %s\n", w);
        return 2;
    }
    long peak = status_kib("VmHWM"), fin = status_kib("VmRSS");
    if (!strcmp(w, "survivors")) {
        peak = survivors_peak;
        fin = survivors_kept;
    }
    printf("{\"workload\":\"%s\",\"allocator\":\"%s\",\"ops\":%ld,\"seconds\":%.6f,\"ns_per_op\":%.3f,"
           "\"base_rss_kib\":%ld,\"peak_rss_kib\":%ld,\"final_rss_kib\":%ld}\n",
           w, argv[2], ops, secs, secs * 1e9 / (double)ops, base, peak, fin);
    return 0;
}
