/* A user allocator installed with PyMem_SetAllocator as a hook: it counts
   every call, records its arguments and forwards to the allocator it
   replaced. Checks what reaches the hook (and what must not), stacking with
   the debug hooks (above and below), pymalloc's fallback to RAW, a failing
   allocator, and uninstalling. */
#include "check.h"

#include <pymalloc.h>

typedef struct {
    PyMemAllocatorEx prev;
    unsigned long malloc, calloc, realloc, free;
    size_t last_size, last_nelem, last_elsize;
    void *last_ptr;
    void *last_ctx;
    int fail; /* return NULL from malloc/calloc/realloc without forwarding */
} hook_t;

static void *hook_malloc(void *ctx, size_t size)
{
    hook_t *h = ctx;
    h->malloc++;
    h->last_ctx = ctx;
    h->last_size = size;
    if (h->fail) return NULL;
    return h->prev.malloc(h->prev.ctx, size);
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    hook_t *h = ctx;
    h->calloc++;
    h->last_ctx = ctx;
    h->last_nelem = nelem;
    h->last_elsize = elsize;
    if (h->fail) return NULL;
    return h->prev.calloc(h->prev.ctx, nelem, elsize);
}

static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
    hook_t *h = ctx;
    h->realloc++;
    h->last_ctx = ctx;
    h->last_ptr = ptr;
    h->last_size = size;
    if (h->fail) return NULL;
    return h->prev.realloc(h->prev.ctx, ptr, size);
}

static void hook_free(void *ctx, void *ptr)
{
    hook_t *h = ctx;
    h->free++;
    h->last_ctx = ctx;
    h->last_ptr = ptr;
    h->prev.free(h->prev.ctx, ptr);
}

static void install(hook_t *h, PyMemAllocatorDomain d)
{
    memset(h, 0, sizeof *h);
    PyMem_GetAllocator(d, &h->prev);
    PyMemAllocatorEx a = {h, hook_malloc, hook_calloc, hook_realloc, hook_free};
    PyMem_SetAllocator(d, &a);
    PyMemAllocatorEx now;
    PyMem_GetAllocator(d, &now);
    CHECK(now.ctx == h && now.malloc == hook_malloc && now.calloc == hook_calloc &&
          now.realloc == hook_realloc && now.free == hook_free);
}

static void uninstall(hook_t *h, PyMemAllocatorDomain d) { PyMem_SetAllocator(d, &h->prev); }

typedef struct {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
} api_t;

static const api_t APIS[3] = {
    {PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree},
    {PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free},
    {PyObject_Malloc, PyObject_Calloc, PyObject_Realloc, PyObject_Free},
};

#define COUNTS(h, m, c, r, f) \
    ((h)->malloc == (m) && (h)->calloc == (c) && (h)->realloc == (r) && (h)->free == (f))

/* Every call reaches the hook once, with its arguments and the hook's ctx;
   requests refused by the size checks never reach it. */
static void counts_and_arguments(PyMemAllocatorDomain d)
{
    const api_t *a = &APIS[d];
    hook_t h;
    install(&h, d);
    CHECK(PyMalloc_GetAllocatorName() == NULL); /* not a named configuration */

    char *p = a->malloc(123);
    CHECK(p != NULL && COUNTS(&h, 1, 0, 0, 0) && h.last_size == 123 && h.last_ctx == &h);
    memset(p, 7, 123);
    char *q = a->calloc(7, 9);
    CHECK(q != NULL && COUNTS(&h, 1, 1, 0, 0) && h.last_nelem == 7 && h.last_elsize == 9);
    for (int i = 0; i < 63; i++) CHECK(q[i] == 0);
    char *p2 = a->realloc(p, 4000);
    CHECK(p2 != NULL && COUNTS(&h, 1, 1, 1, 0) && h.last_ptr == p && h.last_size == 4000);
    for (int i = 0; i < 123; i++) CHECK(p2[i] == 7);
    a->free(p2);
    CHECK(COUNTS(&h, 1, 1, 1, 1) && h.last_ptr == p2);
    a->free(q);
    CHECK(COUNTS(&h, 1, 1, 1, 2) && h.last_ptr == q);

    /* Zero sizes are passed through as they are (CPython does the same). */
    void *z = a->malloc(0);
    CHECK(z != NULL && COUNTS(&h, 2, 1, 1, 2) && h.last_size == 0);
    void *zc = a->calloc(0, 5);
    CHECK(zc != NULL && h.calloc == 2 && h.last_nelem == 0 && h.last_elsize == 5);
    void *zr = a->realloc(NULL, 0);
    CHECK(zr != NULL && h.realloc == 2 && h.last_ptr == NULL && h.last_size == 0);
    a->free(z);
    a->free(zc);
    a->free(zr);
    /* free(NULL) reaches the allocator, as in CPython. */
    a->free(NULL);
    CHECK(COUNTS(&h, 2, 2, 2, 6) && h.last_ptr == NULL);

    /* Refused before the allocator: sizes above PY_SSIZE_T_MAX and
       overflowing calloc products. */
    size_t too_big = (size_t)PY_SSIZE_T_MAX + 1;
    CHECK(a->malloc(too_big) == NULL);
    CHECK(a->malloc(SIZE_MAX) == NULL);
    CHECK(a->calloc(SIZE_MAX, 2) == NULL);
    CHECK(a->calloc((size_t)PY_SSIZE_T_MAX / 2 + 1, 2) == NULL);
    CHECK(a->realloc(NULL, too_big) == NULL);
    CHECK(COUNTS(&h, 2, 2, 2, 6));
    /* ... but PY_SSIZE_T_MAX itself is the allocator's to refuse. */
    CHECK(a->malloc((size_t)PY_SSIZE_T_MAX) == NULL);
    CHECK(COUNTS(&h, 3, 2, 2, 6) && h.last_size == (size_t)PY_SSIZE_T_MAX);

    uninstall(&h, d);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
    void *after = a->malloc(10);
    a->free(after);
    CHECK(COUNTS(&h, 3, 2, 2, 6)); /* no longer called */
}

/* The typed macros go to MEM; PyObject_ aliases to OBJ. */
static void macros_reach_their_domain(void)
{
    hook_t mem, obj;
    install(&mem, PYMEM_DOMAIN_MEM);
    install(&obj, PYMEM_DOMAIN_OBJ);
    double *v = PyMem_New(double, 12);
    CHECK(v != NULL && mem.malloc == 1 && mem.last_size == 12 * sizeof(double));
    CHECK(PyMem_Resize(v, double, 30) != NULL);
    CHECK(mem.realloc == 1 && mem.last_size == 30 * sizeof(double));
    /* overflow is refused by the macro: the allocator never sees it */
    double *old = v;
    CHECK(PyMem_Resize(v, double, (size_t)PY_SSIZE_T_MAX) == NULL && v == NULL);
    CHECK(mem.realloc == 1);
    v = old;
    PyMem_Del(v);
    CHECK(mem.free == 1 && mem.last_ptr == v);
    void *m = PyMem_MALLOC(5);
    m = PyMem_REALLOC(m, 6);
    PyMem_FREE(m);
    PyMem_DEL(PyMem_NEW(char, 3));
    CHECK(COUNTS(&mem, 3, 0, 2, 3));
    void *o = PyObject_MALLOC(9);
    o = PyObject_REALLOC(o, 10);
    PyObject_FREE(o);
    PyObject_Del(PyObject_Malloc(1));
    PyObject_DEL(PyObject_Calloc(1, 1));
    CHECK(COUNTS(&obj, 2, 1, 1, 3));
    CHECK(COUNTS(&mem, 3, 0, 2, 3));
    uninstall(&obj, PYMEM_DOMAIN_OBJ);
    uninstall(&mem, PYMEM_DOMAIN_MEM);
}

/* pymalloc serves 1..512 bytes from its pools and hands other requests to
   the RAW domain (CPython's obmalloc does the same), so a RAW hook sees
   them. */
static void pymalloc_falls_back_to_raw(void)
{
    hook_t raw;
    install(&raw, PYMEM_DOMAIN_RAW);
    void *small = PyMem_Malloc(100);
    void *small_obj = PyObject_Malloc(512);
    CHECK(COUNTS(&raw, 0, 0, 0, 0));
    void *big = PyMem_Malloc(100000);
    CHECK(raw.malloc == 1 && raw.last_size == 100000);
    void *zero = PyObject_Malloc(0);
    CHECK(raw.malloc == 2 && raw.last_size == 0);
    void *zc = PyObject_Calloc(1000, 1);
    CHECK(raw.calloc == 1 && raw.last_nelem == 1000 && raw.last_elsize == 1);
    /* a pool block grown past 512 bytes moves to RAW */
    small = PyMem_Realloc(small, 600);
    CHECK(small != NULL && raw.malloc == 3 && raw.last_size == 600);
    PyMem_Free(small);
    PyMem_Free(big);
    PyObject_Free(zero);
    PyObject_Free(zc);
    PyObject_Free(small_obj);
    CHECK(raw.free == 4);
    uninstall(&raw, PYMEM_DOMAIN_RAW);
}

/* Stacking with the debug hooks. */
static void with_debug_hooks(void)
{
    /* Hook above the debug hooks: it sees the caller's sizes, and the debug
       hooks below it fill fresh memory. */
    CHECK(PyMalloc_SetupByName("pymalloc_debug") == PYMALLOC_OK);
    hook_t above;
    install(&above, PYMEM_DOMAIN_MEM);
    unsigned char *p = PyMem_Malloc(10);
    CHECK(p != NULL && above.last_size == 10);
    for (int i = 0; i < 10; i++) CHECK(p[i] == 0xCD);
    PyMem_Free(p);
    uninstall(&above, PYMEM_DOMAIN_MEM);
    CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc_debug") == 0);

    /* Hook below: installed first, then PyMem_SetupDebugHooks() wraps it; it
       sees each request plus the hooks' framing (4 words on 64-bit). */
    CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
    hook_t below[3];
    for (int d = 0; d < 3; d++) install(&below[d], (PyMemAllocatorDomain)d);
    PyMem_SetupDebugHooks();
    for (int d = 0; d < 3; d++) {
        PyMemAllocatorEx top;
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &top);
        CHECK(top.ctx != &below[d]);
        unsigned char *b = APIS[d].malloc(10);
        CHECK(b != NULL && below[d].malloc == 1);
        CHECKF(below[d].last_size == 10 + 4 * sizeof(size_t), "domain %d: %zu", d,
               below[d].last_size);
        for (int i = 0; i < 10; i++) CHECK(b[i] == 0xCD);
        /* the block handed to the hook starts two words before b */
        b = APIS[d].realloc(b, 20);
        CHECK(b != NULL && below[d].realloc == 1 &&
              below[d].last_size == 20 + 4 * sizeof(size_t));
        APIS[d].free(b);
        CHECK(below[d].free == 1 && (unsigned char *)below[d].last_ptr + 2 * sizeof(size_t) == b);
        void *c = APIS[d].calloc(3, 4);
        CHECK(c != NULL && below[d].calloc == 1);
        CHECK(below[d].last_nelem * below[d].last_elsize == 12 + 4 * sizeof(size_t));
        APIS[d].free(c);
    }
    CHECK(PyMalloc_SetupByName("default") == PYMALLOC_OK);
}

/* Out of memory is an answer: NULL comes back and nothing else changes. */
static void failing_allocator(void)
{
    for (int d = 0; d < 3; d++) {
        const api_t *a = &APIS[d];
        char *keep = a->malloc(64);
        CHECK(keep != NULL);
        memset(keep, 'k', 64);
        hook_t h;
        install(&h, (PyMemAllocatorDomain)d);
        h.fail = 1;
        CHECK(a->malloc(10) == NULL && a->calloc(2, 2) == NULL && a->malloc(0) == NULL);
        CHECK(a->realloc(keep, 1000) == NULL);
        CHECK(h.last_ptr == keep);
        for (int i = 0; i < 64; i++) CHECK(keep[i] == 'k');
        if (d == PYMEM_DOMAIN_MEM) {
            CHECK(PyMem_New(int, 4) == NULL);
            char *k = keep;
            CHECK(PyMem_Resize(k, char, 2000) == NULL && k == NULL);
        }
        h.fail = 0;
        char *grown = a->realloc(keep, 1000);
        CHECK(grown != NULL);
        for (int i = 0; i < 64; i++) CHECK(grown[i] == 'k');
        a->free(grown);
        uninstall(&h, (PyMemAllocatorDomain)d);
    }
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyMem_SetAllocator);
    for (int d = 0; d < 3; d++) counts_and_arguments((PyMemAllocatorDomain)d);
    macros_reach_their_domain();
    pymalloc_falls_back_to_raw();
    with_debug_hooks();
    failing_allocator();
    report_done("hooks");
    return 0;
}
