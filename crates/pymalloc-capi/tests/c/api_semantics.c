/* CPython's allocation rules through every function of the three domains,
   under every PYTHONMALLOC configuration: zero sizes, overflow, realloc
   chains that keep contents, calloc zeroing, alignment, the typed and
   upper-case macros; then the configuration functions, PyMem_GetAllocator /
   PyMem_SetAllocator with bad arguments, PyMem_SetupDebugHooks, the arena
   allocator's NULL handling and PyTraceMalloc_*. */
#include "check.h"

#include <pymalloc.h>

typedef struct {
    const char *name;
    PyMemAllocatorDomain domain;
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
} api_t;

static const api_t APIS[3] = {
    {"raw", PYMEM_DOMAIN_RAW, PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree},
    {"mem", PYMEM_DOMAIN_MEM, PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free},
    {"obj", PYMEM_DOMAIN_OBJ, PyObject_Malloc, PyObject_Calloc, PyObject_Realloc, PyObject_Free},
};

#define SSIZE_MAX_U ((size_t)PY_SSIZE_T_MAX)

/* The byte expected at offset i of a block with seed s. */
static unsigned char pattern(size_t i, unsigned s) { return (unsigned char)(s * 131u + i * 7u + (i >> 8)); }

static void fill(void *p, size_t n, unsigned s)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = pattern(i, s);
}

static int intact(const void *p, size_t n, unsigned s)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pattern(i, s)) return 0;
    return 1;
}

static int all_bytes(const void *p, size_t n, unsigned char v)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != v) return 0;
    return 1;
}

static int is_debug;  /* the configuration has the debug hooks */

static void zero_sizes(const api_t *a)
{
    void *p = a->malloc(0), *q = a->malloc(0);
    CHECKF(p != NULL && q != NULL && p != q, "%s: malloc(0) twice gave %p %p", a->name, p, q);
    CHECK(ALIGNED16(p) && ALIGNED16(q));
    void *c1 = a->calloc(0, 8), *c2 = a->calloc(8, 0), *c3 = a->calloc(0, 0);
    CHECK(c1 != NULL && c2 != NULL && c3 != NULL);
    CHECK(c1 != c2 && c2 != c3 && c1 != c3 && c1 != p && c1 != q);
    void *r = a->realloc(NULL, 0);
    CHECK(r != NULL && r != p && r != q);
    /* realloc(p, 0) resizes: non-NULL, and the result is still a live block
       (freeing it is the only free). */
    void *q2 = a->realloc(q, 0);
    CHECK(q2 != NULL);
    /* realloc of a non-empty block down to 0 keeps it alive too. */
    void *s = a->malloc(40);
    CHECK(s != NULL);
    void *s2 = a->realloc(s, 0);
    CHECK(s2 != NULL);
    void *s3 = a->realloc(s2, 40);
    CHECK(s3 != NULL);
    fill(s3, 40, 2);
    CHECK(intact(s3, 40, 2));
    a->free(p);
    a->free(q2);
    a->free(c1);
    a->free(c2);
    a->free(c3);
    a->free(r);
    a->free(s3);
    a->free(NULL); /* does nothing */
}

static void overflow(const api_t *a)
{
    CHECK(a->malloc(SSIZE_MAX_U + 1) == NULL);
    CHECK(a->malloc(SIZE_MAX) == NULL);
    CHECK(a->malloc(SSIZE_MAX_U) == NULL); /* allowed, but no machine has it */
    CHECK(a->calloc(SIZE_MAX, 2) == NULL);             /* wraps size_t */
    CHECK(a->calloc(SSIZE_MAX_U / 2 + 1, 2) == NULL);  /* > PY_SSIZE_T_MAX */
    CHECK(a->calloc(2, SSIZE_MAX_U / 2 + 1) == NULL);
    CHECK(a->calloc(1, SSIZE_MAX_U + 1) == NULL);
    CHECK(a->calloc(SSIZE_MAX_U + 1, 1) == NULL);
    CHECK(a->calloc((size_t)1 << 32, (size_t)1 << 32) == NULL); /* 2^64 wraps to 0 */
    CHECK(a->realloc(NULL, SSIZE_MAX_U + 1) == NULL);

    /* A failed realloc returns NULL and leaves the block valid and intact:
       refused by the size check, and refused by the allocator. */
    size_t sizes[] = {1, 24, 500, 600, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = a->malloc(n);
        CHECK(p != NULL);
        fill(p, n, 3);
        CHECK(a->realloc(p, SSIZE_MAX_U + 1) == NULL);
        CHECK(a->realloc(p, SIZE_MAX) == NULL);
        CHECK(a->realloc(p, SSIZE_MAX_U) == NULL);
        CHECK(a->realloc(p, SSIZE_MAX_U - 64) == NULL);
        CHECKF(intact(p, n, 3), "%s: block of %zu changed by failed realloc", a->name, n);
        /* still a live block: it grows and frees normally */
        p = a->realloc(p, n + 100);
        CHECK(p != NULL && intact(p, n, 3));
        a->free(p);
    }
}

/* Grows a block byte by byte, then geometrically across the small/large
   boundary to 2 MiB, then shrinks it back: contents always kept. */
static void realloc_chain(const api_t *a, unsigned seed)
{
    size_t n = 1;
    unsigned char *p = a->malloc(n);
    CHECK(p != NULL);
    fill(p, n, seed);
    while (n < (size_t)2 << 20) {
        size_t m = n < 600 ? n + 1 : n + n / 2;
        unsigned char *q = a->realloc(p, m);
        CHECKF(q != NULL, "%s: realloc to %zu", a->name, m);
        CHECK(ALIGNED16(q));
        CHECKF(intact(q, n, seed), "%s: contents lost growing %zu -> %zu", a->name, n, m);
        if (is_debug) CHECK(all_bytes(q + n, m - n, 0xCD)); /* fresh bytes */
        fill(q, m, seed);
        p = q;
        n = m;
    }
    while (n > 1) {
        size_t m = n > 600 ? n / 3 : n - 1;
        unsigned char *q = a->realloc(p, m);
        CHECK(q != NULL && ALIGNED16(q));
        CHECKF(intact(q, m, seed), "%s: contents lost shrinking %zu -> %zu", a->name, n, m);
        p = q;
        n = m;
    }
    p = a->realloc(p, 0);
    CHECK(p != NULL);
    a->free(p);
}

static void calloc_zeroes(const api_t *a)
{
    size_t sizes[] = {1, 15, 16, 17, 100, 511, 512, 513, 4096, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        /* dirty memory of the same size first, so a reused block shows */
        for (int k = 0; k < 4; k++) {
            unsigned char *d = a->malloc(n);
            CHECK(d != NULL);
            memset(d, 0xAA, n);
            a->free(d);
        }
        unsigned char *p = a->calloc(n, 1), *q = a->calloc(1, n);
        unsigned char *r = a->calloc((n + 3) / 4, 4);
        CHECK(p != NULL && q != NULL && r != NULL);
        CHECKF(all_bytes(p, n, 0) && all_bytes(q, n, 0) && all_bytes(r, (n + 3) / 4 * 4, 0),
               "%s: calloc of %zu not zeroed", a->name, n);
        CHECK(ALIGNED16(p) && ALIGNED16(q) && ALIGNED16(r));
        a->free(p);
        a->free(q);
        a->free(r);
    }
}

/* Many live blocks of mixed sizes: aligned, distinct, not overlapping. */
static void many_blocks(const api_t *a)
{
    enum { N = 3000 };
    static unsigned char *blocks[N];
    static size_t sizes[N];
    unsigned lcg = 12345;
    for (int i = 0; i < N; i++) {
        lcg = lcg * 1103515245u + 12345u;
        size_t n = (lcg >> 8) % 8 == 0 ? 513 + (lcg >> 12) % 5000 : (lcg >> 12) % 520;
        blocks[i] = a->malloc(n);
        sizes[i] = n;
        CHECK(blocks[i] != NULL && ALIGNED16(blocks[i]));
        if (is_debug && n) CHECK(all_bytes(blocks[i], n, 0xCD));
        fill(blocks[i], n, (unsigned)i);
    }
    for (int i = 0; i < N; i++) CHECKF(intact(blocks[i], sizes[i], (unsigned)i), "%s: block %d overwritten", a->name, i);
    /* free in a scrambled order */
    for (int k = 0; k < N; k++) {
        int i = (int)(((unsigned)k * 2654435761u) % N);
        while (blocks[i] == NULL) i = (i + 1) % N;
        a->free(blocks[i]);
        blocks[i] = NULL;
    }
}

static void every_domain_rule(void)
{
    for (int d = 0; d < 3; d++) {
        zero_sizes(&APIS[d]);
        overflow(&APIS[d]);
        realloc_chain(&APIS[d], 10u + (unsigned)d);
        calloc_zeroes(&APIS[d]);
        many_blocks(&APIS[d]);
    }
}

/* The macros, which use MEM (PyMem_*) or OBJ (PyObject_*). */
static void macros(void)
{
    int *v = PyMem_New(int, 10);
    CHECK(v != NULL && ALIGNED16(v));
    for (int i = 0; i < 10; i++) v[i] = i * i;
    int *old = v;
    CHECK(PyMem_Resize(v, int, 1000) != NULL && v != NULL);
    for (int i = 0; i < 10; i++) CHECK(v[i] == i * i);
    for (int i = 0; i < 1000; i++) v[i] = -i;

    /* Overflow: NULL, p is clobbered with NULL (CPython's semantics) and the
       block is still allocated and unchanged. */
    old = v;
    CHECK(PyMem_Resize(v, int, SSIZE_MAX_U / sizeof(int) + 1) == NULL);
    CHECK(v == NULL);
    for (int i = 0; i < 1000; i++) CHECK(old[i] == -i);
    v = old;
    CHECK(PyMem_RESIZE(v, int, SIZE_MAX) == NULL && v == NULL);
    v = old;
    /* n exactly at the limit passes the macro's check and fails in the
       allocator: NULL as well */
    CHECK(PyMem_Resize(v, int, SSIZE_MAX_U / sizeof(int)) == NULL && v == NULL);
    v = old;
    for (int i = 0; i < 1000; i++) CHECK(v[i] == -i);
    /* Shrink keeps the prefix. */
    CHECK(PyMem_RESIZE(v, int, 3) != NULL && v != NULL);
    CHECK(v[0] == 0 && v[1] == -1 && v[2] == -2);
    PyMem_Del(v);

    CHECK(PyMem_New(int, SSIZE_MAX_U / sizeof(int) + 1) == NULL);
    CHECK(PyMem_NEW(double, SIZE_MAX) == NULL);
    CHECK(PyMem_New(char, -1) == NULL); /* a negative count is huge */
    CHECK(PyMem_New(long, (size_t)1 << 62) == NULL);
    struct big { char b[4096]; };
    CHECK(PyMem_New(struct big, SSIZE_MAX_U / 4096 + 1) == NULL);

    int *z = PyMem_New(int, 0), *z2 = PyMem_NEW(int, 0);
    CHECK(z != NULL && z2 != NULL && z != z2);
    PyMem_DEL(z);
    PyMem_Del(z2);

    double *w = PyMem_NEW(double, 5);
    CHECK(w != NULL);
    w[4] = 2.5;
    CHECK(PyMem_RESIZE(w, double, 500) != NULL && w[4] == 2.5);
    PyMem_DEL(w);

    /* Resize from NULL allocates. */
    short *s = NULL;
    CHECK(PyMem_Resize(s, short, 7) != NULL && s != NULL);
    PyMem_Del(s);

    char *m = PyMem_MALLOC(33);
    CHECK(m != NULL);
    fill(m, 33, 5);
    m = PyMem_REALLOC(m, 3333);
    CHECK(m != NULL && intact(m, 33, 5));
    CHECK(PyMem_MALLOC(SIZE_MAX) == NULL);
    CHECK(PyMem_REALLOC(m, SIZE_MAX) == NULL && intact(m, 33, 5));
    PyMem_FREE(m);

    /* PyMem_Del, PyMem_DEL and the PyObject_ aliases have no parameters in
       CPython so that they can be used as function pointers. */
    void (*mem_free)(void *) = PyMem_Del;
    void (*mem_free2)(void *) = PyMem_DEL;
    void *(*obj_malloc)(size_t) = PyObject_MALLOC;
    void *(*obj_realloc)(void *, size_t) = PyObject_REALLOC;
    void (*obj_free)(void *) = PyObject_FREE;
    void (*obj_del)(void *) = PyObject_Del;
    void (*obj_del2)(void *) = PyObject_DEL;
    CHECK(mem_free == PyMem_Free && mem_free2 == PyMem_Free);
    CHECK(obj_malloc == PyObject_Malloc && obj_realloc == PyObject_Realloc);
    CHECK(obj_free == PyObject_Free && obj_del == PyObject_Free && obj_del2 == PyObject_Free);
    mem_free(PyMem_Malloc(10));
    mem_free2(PyMem_Malloc(10));
    char *o = obj_malloc(20);
    CHECK(o != NULL);
    o = obj_realloc(o, 2000);
    CHECK(o != NULL);
    obj_free(o);
    obj_del(PyObject_MALLOC(8));
    obj_del2(PyObject_REALLOC(NULL, 8));
    PyObject_Del(PyObject_Malloc(1));
    PyObject_DEL(PyObject_Malloc(1));
    PyObject_FREE(PyObject_Malloc(1));
}

static size_t class_blocks(unsigned cls)
{
    PyMalloc_Stats s;
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK);
    return s.classes[cls].blocks_in_use;
}

/* MEM and OBJ use pymalloc's pools in the pymalloc configurations, the C
   library in the malloc ones. */
static void check_backend(int want_pymalloc)
{
    enum { K = 50 };
    void *blocks[K];
    for (int d = 1; d < 3; d++) {
        size_t before = class_blocks(6); /* 97..112 bytes */
        for (int i = 0; i < K; i++) blocks[i] = APIS[d].malloc(100 - (is_debug ? 32 : 0));
        size_t during = class_blocks(6);
        for (int i = 0; i < K; i++) APIS[d].free(blocks[i]);
        CHECKF(during - before == (want_pymalloc ? K : 0), "%s: %zu pool blocks for %d mallocs",
               APIS[d].name, during - before, K);
        CHECK(class_blocks(6) == before);
    }
    /* RAW never uses pools */
    size_t before = class_blocks(6);
    void *r = PyMem_RawMalloc(100);
    CHECK(class_blocks(6) == before);
    PyMem_RawFree(r);
}

struct config {
    const char *name;      /* given to PyMalloc_SetupByName */
    const char *canonical; /* what PyMalloc_GetAllocatorName says */
    int pymalloc, debug;
};

static const struct config CONFIGS[] = {
    {"default", "pymalloc", 1, 0},
    {"pymalloc", "pymalloc", 1, 0},
    {"malloc", "malloc", 0, 0},
    {"debug", "pymalloc_debug", 1, 1},
    {"pymalloc_debug", "pymalloc_debug", 1, 1},
    {"malloc_debug", "malloc_debug", 0, 1},
};

static void same_allocator(const PyMemAllocatorEx *x, const PyMemAllocatorEx *y)
{
    CHECK(x->ctx == y->ctx && x->malloc == y->malloc && x->calloc == y->calloc);
    CHECK(x->realloc == y->realloc && x->free == y->free);
}

static void snapshot(PyMemAllocatorEx out[3])
{
    for (int d = 0; d < 3; d++) PyMem_GetAllocator((PyMemAllocatorDomain)d, &out[d]);
}

static void same_snapshot(const PyMemAllocatorEx x[3], const PyMemAllocatorEx y[3])
{
    for (int d = 0; d < 3; d++) same_allocator(&x[d], &y[d]);
}

static void configuration_functions(void)
{
    CHECK(strcmp(PyMalloc_AllocatorNames(),
                 "default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug, pymalloc_all, pymalloc_all_debug") == 0);
    CHECK(PyMalloc_SetupByName("malloc") == PYMALLOC_OK);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "malloc") == 0);
    PyMemAllocatorEx before[3], after[3];
    snapshot(before);
    const char *bad[] = {"jemalloc", "PYMALLOC", "pymalloc ", " malloc", "debug_malloc", "mallo",
                         "\xff\xfe", "malloc\n", "pymalloc_debug_"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECKF(PyMalloc_SetupByName(bad[i]) == PYMALLOC_ERR_UNKNOWN_NAME, "name '%s'", bad[i]);
        CHECK(strcmp(PyMalloc_GetAllocatorName(), "malloc") == 0);
        snapshot(after);
        same_snapshot(before, after);
    }
    check_backend(0); /* still malloc */
    /* NULL and "" are PYTHONMALLOC unset: the default */
    CHECK(PyMalloc_SetupByName(NULL) == PYMALLOC_OK);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
    CHECK(PyMalloc_SetupByName("malloc_debug") == PYMALLOC_OK);
    CHECK(PyMalloc_SetupByName("") == PYMALLOC_OK);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
}

static void get_set_allocator_arguments(void)
{
    CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
    PyMemAllocatorEx before[3], after[3];
    snapshot(before);
    for (int d = 0; d < 3; d++)
        CHECK(before[d].malloc && before[d].calloc && before[d].realloc && before[d].free);

    /* Unknown domain: every member set to NULL. */
    int unknown[] = {3, 4, -1, 1000, 0x7fffffff};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        PyMemAllocatorEx a;
        memset(&a, 0x5A, sizeof a);
        PyMem_GetAllocator((PyMemAllocatorDomain)unknown[i], &a);
        CHECK(a.ctx == NULL && a.malloc == NULL && a.calloc == NULL && a.realloc == NULL &&
              a.free == NULL);
    }
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, NULL); /* tolerated */

    /* Set: unknown domains, NULL and NULL members are ignored. */
    PyMemAllocatorEx other;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &other);
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++)
        PyMem_SetAllocator((PyMemAllocatorDomain)unknown[i], &other);
    for (int d = 0; d < 3; d++) PyMem_SetAllocator((PyMemAllocatorDomain)d, NULL);
    for (int member = 0; member < 4; member++) {
        PyMemAllocatorEx partial = other;
        if (member == 0) partial.malloc = NULL;
        if (member == 1) partial.calloc = NULL;
        if (member == 2) partial.realloc = NULL;
        if (member == 3) partial.free = NULL;
        for (int d = 1; d < 3; d++) PyMem_SetAllocator((PyMemAllocatorDomain)d, &partial);
    }
    snapshot(after);
    same_snapshot(before, after);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);

    /* Setting what Get returned is a no-op. */
    for (int d = 0; d < 3; d++) PyMem_SetAllocator((PyMemAllocatorDomain)d, &before[d]);
    snapshot(after);
    same_snapshot(before, after);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);

    /* Swapping MEM and OBJ's allocators for RAW's (the malloc configuration,
       by hand) is recognised as such. */
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &other);
    CHECK(PyMalloc_GetAllocatorName() == NULL); /* a mix */
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &other);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "malloc") == 0);
    check_backend(0);
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &before[1]);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &before[2]);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
}

static void setup_debug_hooks(void)
{
    const char *bases[] = {"pymalloc", "malloc"};
    const char *debugged[] = {"pymalloc_debug", "malloc_debug"};
    for (int i = 0; i < 2; i++) {
        CHECK(PyMalloc_SetupByName(bases[i]) == PYMALLOC_OK);
        PyMemAllocatorEx plain[3], hooked[3], again[3];
        snapshot(plain);
        PyMem_SetupDebugHooks();
        CHECK(strcmp(PyMalloc_GetAllocatorName(), debugged[i]) == 0);
        snapshot(hooked);
        for (int d = 0; d < 3; d++) CHECK(hooked[d].ctx != plain[d].ctx);
        PyMem_SetupDebugHooks(); /* already hooked: unchanged */
        snapshot(again);
        same_snapshot(hooked, again);
        for (int d = 0; d < 3; d++) {
            unsigned char *p = APIS[d].malloc(50);
            CHECK(p != NULL && all_bytes(p, 50, 0xCD));
            p = APIS[d].realloc(p, 80);
            CHECK(p != NULL && all_bytes(p, 80, 0xCD));
            APIS[d].free(p);
        }
    }
    CHECK(PyMalloc_SetupByName("default") == PYMALLOC_OK);
}

static void arena_allocator_arguments(void)
{
    PyObjectArenaAllocator a, b;
    memset(&a, 0, sizeof a);
    PyObject_GetArenaAllocator(&a);
    CHECK(a.alloc != NULL && a.free != NULL);
    PyObject_GetArenaAllocator(NULL); /* tolerated */
    PyObject_SetArenaAllocator(NULL); /* ignored */
    PyObjectArenaAllocator partial = a;
    partial.alloc = NULL;
    PyObject_SetArenaAllocator(&partial); /* ignored */
    partial = a;
    partial.free = NULL;
    PyObject_SetArenaAllocator(&partial); /* ignored */
    PyObject_GetArenaAllocator(&b);
    CHECK(a.ctx == b.ctx && a.alloc == b.alloc && a.free == b.free);
    /* The default arena allocator works when called directly. */
    void *arena = a.alloc(a.ctx, (size_t)1 << 20);
    CHECK(arena != NULL);
    memset(arena, 1, (size_t)1 << 20);
    a.free(a.ctx, arena, (size_t)1 << 20);
}

static void tracemalloc(void)
{
    void *p = PyMem_Malloc(16);
    CHECK(PyTraceMalloc_Track(0, (uintptr_t)p, 16) == -2);
    CHECK(PyTraceMalloc_Track(12345, (uintptr_t)p, 16) == -2);
    CHECK(PyTraceMalloc_Track(0, 0, 0) == -2);
    CHECK(PyTraceMalloc_Untrack(0, (uintptr_t)p) == -2);
    CHECK(PyTraceMalloc_Untrack(0xffffffffu, UINTPTR_MAX) == -2);
    PyMem_Free(p);
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyMem_Malloc);
    /* The library starts in the default configuration. */
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
    for (size_t c = 0; c < sizeof CONFIGS / sizeof *CONFIGS; c++) {
        CHECK(PyMalloc_SetupByName(CONFIGS[c].name) == PYMALLOC_OK);
        CHECKF(strcmp(PyMalloc_GetAllocatorName(), CONFIGS[c].canonical) == 0, "%s: %s",
               CONFIGS[c].name, PyMalloc_GetAllocatorName());
        is_debug = CONFIGS[c].debug;
        every_domain_rule();
        macros();
        check_backend(CONFIGS[c].pymalloc);
        printf("configuration %s: ok\n", CONFIGS[c].name);
    }
    is_debug = 0;
    configuration_functions();
    get_set_allocator_arguments();
    setup_debug_hooks();
    arena_allocator_arguments();
    tracemalloc();
    /* PyMalloc_SetMode: each mode serves the domains; bad names change
       nothing. */
    const char *modes[] = {"single", "locked", "threaded"};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        CHECK(PyMalloc_SetMode(modes[m]) == PYMALLOC_OK);
        CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
        CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
        void *blocks[100];
        for (int i = 0; i < 100; i++) {
            blocks[i] = PyObject_Malloc((size_t)(i * 5 + 1));
            CHECK(blocks[i] != NULL);
            memset(blocks[i], i, (size_t)(i * 5 + 1));
        }
        PyMalloc_Stats st;
        st.struct_size = sizeof st;
        CHECK(PyMalloc_GetStats(&st) == PYMALLOC_OK);
        CHECKF(st.blocks_in_use >= 100, "mode %s: %zu blocks in use", modes[m], (size_t)st.blocks_in_use);
        for (int i = 0; i < 100; i++) {
            CHECK(((unsigned char *)blocks[i])[i * 5] == (unsigned char)i);
            PyObject_Free(blocks[i]);
        }
    }
    CHECK(PyMalloc_SetMode("gil") == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(PyMalloc_SetMode(NULL) == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(PyMalloc_SetMode("") == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);

    report_done("api_semantics");
    return 0;
}
