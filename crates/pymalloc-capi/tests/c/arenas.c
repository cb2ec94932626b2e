/* A custom arena allocator (PyObject_SetArenaAllocator) that forwards to the
   previous one and keeps a table of the arenas it handed out: it sees arenas
   come as blocks are allocated and go as they are freed, every pool block
   lies in a known arena, each arena goes back to the allocator that made it
   even after the allocator is swapped, and a failing arena allocator makes
   pymalloc fall back to RAW instead of failing. */
#include "check.h"

#include <pymalloc.h>

#define ARENA_SIZE ((size_t)1 << 20)
#define MAX_ARENAS 256

typedef struct {
    PyObjectArenaAllocator prev;
    unsigned long allocs, frees, failed;
    int fail;
    void *live[MAX_ARENAS];
    size_t nlive;
} arena_hook;

static void *hook_alloc(void *ctx, size_t size)
{
    arena_hook *h = ctx;
    CHECK(size == ARENA_SIZE);
    if (h->fail) {
        h->failed++;
        return NULL;
    }
    void *p = h->prev.alloc(h->prev.ctx, size);
    CHECK(p != NULL);
    CHECK(h->nlive < MAX_ARENAS);
    h->live[h->nlive++] = p;
    h->allocs++;
    return p;
}

static void hook_free(void *ctx, void *ptr, size_t size)
{
    arena_hook *h = ctx;
    CHECK(size == ARENA_SIZE);
    size_t i = 0;
    while (i < h->nlive && h->live[i] != ptr) i++;
    CHECKF(i < h->nlive, "freed arena %p that this allocator did not make", ptr);
    h->live[i] = h->live[--h->nlive];
    h->frees++;
    h->prev.free(h->prev.ctx, ptr, size);
}

static void install(arena_hook *h)
{
    memset(h, 0, sizeof *h);
    PyObject_GetArenaAllocator(&h->prev);
    PyObjectArenaAllocator a = {h, hook_alloc, hook_free};
    PyObject_SetArenaAllocator(&a);
    PyObjectArenaAllocator now;
    PyObject_GetArenaAllocator(&now);
    CHECK(now.ctx == h && now.alloc == hook_alloc && now.free == hook_free);
}

static int in_hook_arena(const arena_hook *h, const void *p)
{
    for (size_t i = 0; i < h->nlive; i++) {
        const char *a = h->live[i];
        if ((const char *)p >= a && (const char *)p < a + ARENA_SIZE) return 1;
    }
    return 0;
}

static PyMalloc_Stats stats(void)
{
    PyMalloc_Stats s;
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK);
    return s;
}

enum { BLOCK = 256, MAX_BLOCKS = 40000 };
static void *blocks[MAX_BLOCKS];

int main(void)
{
    report_linkage((void *)(uintptr_t)PyObject_SetArenaAllocator);
    CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
    /* CPython's rule: an arena goes back as soon as it is free (the decay
       policy, checked in purge_policy.c, keeps it a while). */
    CHECK(PyMalloc_SetPurgePolicy("never") == PYMALLOC_OK);
    PyObjectArenaAllocator original;
    PyObject_GetArenaAllocator(&original);

    /* Arenas come: fill five arenas' worth of 256-byte OBJ blocks. */
    PyMalloc_Stats s0 = stats();
    arena_hook h;
    install(&h);
    size_t n = 0;
    while (h.allocs < 5) {
        CHECK(n < MAX_BLOCKS);
        blocks[n] = PyObject_Malloc(BLOCK);
        CHECK(blocks[n] != NULL);
        memset(blocks[n], (int)(n & 0xff), BLOCK);
        n++;
    }
    PyMalloc_Stats s1 = stats();
    CHECK(h.nlive == 5);
    CHECK(s1.arenas_current == s0.arenas_current + 5);
    CHECK(s1.arenas_allocated_total == s0.arenas_allocated_total + 5);
    CHECK(s1.arena_bytes == s1.arenas_current * ARENA_SIZE);
    size_t in_arenas = 0;
    for (size_t i = 0; i < n; i++) in_arenas += (size_t)in_hook_arena(&h, blocks[i]);
    /* every block past what the older arenas could hold is in a new one */
    CHECKF(in_arenas > 4 * (ARENA_SIZE / BLOCK) * 3 / 4, "%zu of %zu blocks in the hook's arenas",
           in_arenas, n);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < BLOCK; k += 37) CHECK(((unsigned char *)blocks[i])[k] == (i & 0xff));

    /* Arenas go: free everything; CPython keeps at most one empty arena. */
    for (size_t i = 0; i < n; i++) PyObject_Free(blocks[i]);
    PyMalloc_Stats s2 = stats();
    CHECKF(h.frees >= 4 && h.nlive <= 1, "frees %lu live %zu", h.frees, h.nlive);
    CHECK(s2.arenas_reclaimed >= s1.arenas_reclaimed + 4);
    CHECK(s2.arenas_current <= s1.arenas_current - 4);
    CHECK(s2.blocks_in_use == s0.blocks_in_use);

    /* Swap back to the original allocator while the hook may still own an
       arena; fill past it and free in allocation order: the hook's arena
       (filled first) empties first and goes back to the hook, the only
       allocator that may free it. */
    PyObject_SetArenaAllocator(&original);
    unsigned long frees_before = h.frees;
    size_t hook_live = h.nlive;
    n = 0;
    while (stats().arenas_allocated_total < s2.arenas_allocated_total + 2) {
        CHECK(n < MAX_BLOCKS);
        blocks[n++] = PyObject_Malloc(BLOCK);
        CHECK(blocks[n - 1] != NULL);
    }
    CHECK(h.allocs == 5); /* no longer asked */
    for (size_t i = 0; i < n; i++) PyObject_Free(blocks[i]);
    CHECKF(h.nlive == 0 && h.frees == frees_before + hook_live,
           "hook still owns %zu arenas", h.nlive);
    CHECK(h.allocs == h.frees);

    /* A failing arena allocator: pymalloc serves from the RAW domain
       instead, so allocations still succeed. */
    PyMalloc_Stats s3 = stats();
    install(&h);
    h.fail = 1;
    n = 0;
    size_t enough = 3 * ARENA_SIZE / BLOCK; /* more than the spare can hold */
    for (; n < enough; n++) {
        blocks[n] = PyObject_Malloc(BLOCK);
        CHECK(blocks[n] != NULL);
        memset(blocks[n], 0x5C, BLOCK);
    }
    PyMalloc_Stats s4 = stats();
    CHECK(h.failed >= 1 && h.allocs == 0);
    CHECK(s4.raw_allocated_blocks > s3.raw_allocated_blocks);
    CHECK(s4.arenas_current == s3.arenas_current);
    for (size_t i = 0; i < n; i++) PyObject_Free(blocks[i]);
    CHECK(stats().raw_allocated_blocks == s3.raw_allocated_blocks);
    PyObject_SetArenaAllocator(&original);

    /* After the failure, new arenas come again. */
    install(&h);
    n = 0;
    while (h.allocs < 2) {
        CHECK(n < MAX_BLOCKS);
        blocks[n++] = PyObject_Malloc(BLOCK);
    }
    for (size_t i = 0; i < n; i++) PyObject_Free(blocks[i]);
    CHECK(h.nlive <= 1);
    PyObject_SetArenaAllocator(&original);
    /* The hook's context lives on this stack: before it goes, every arena
       it made goes back to it, the spare included. */
    CHECK(PyMalloc_Purge() > 0 || h.nlive == 0);
    CHECKF(h.nlive == 0, "hook still owns %zu arenas after PyMalloc_Purge", h.nlive);
    CHECK(h.allocs == h.frees);
    printf("arenas: allocated %lu, freed %lu\n", h.allocs, h.frees);
    report_done("arenas");
    return 0;
}
