/* Several threads hammer all three domains at once, with no lock of their
   own (C programs have no GIL), in every built-in configuration: random
   malloc/calloc/realloc/free of small and large blocks, each block filled
   with a pattern naming its owner and checked before every realloc and free;
   blocks handed between threads through mailboxes and freed by another
   thread; statistics and the arena allocator read concurrently. At the end
   the heap holds exactly the blocks it held before. */
#include "check.h"

#include <pthread.h>
#include <pymalloc.h>

enum { THREADS = 4, SLOTS = 64, OPS = 20000, MAILBOXES = 16 };

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

/* A block records, in its first bytes, who made it; the rest is a pattern
   derived from that. Blocks are at least sizeof(header_t) bytes. */
typedef struct {
    uint32_t tag;    /* thread * 1000003 + serial */
    uint32_t domain;
    uint64_t size;
} header_t;

static unsigned char pat(uint32_t tag, size_t i) { return (unsigned char)(tag * 2654435761u + i * 13u); }

static void stamp(unsigned char *p, size_t size, uint32_t tag, uint32_t domain)
{
    header_t h = {tag, domain, size};
    memcpy(p, &h, sizeof h);
    for (size_t i = sizeof h; i < size; i++) p[i] = pat(tag, i);
}

/* Checks the block and returns its header. */
static header_t verify(const unsigned char *p)
{
    header_t h;
    memcpy(&h, p, sizeof h);
    CHECK(h.domain < 3 && h.size >= sizeof h && h.size < ((size_t)1 << 24));
    for (size_t i = sizeof h; i < h.size; i += 1 + i / 64)
        CHECKF(p[i] == pat(h.tag, i), "block %p tag %u byte %zu", (void *)p, h.tag, i);
    CHECK(p[h.size - 1] == pat(h.tag, h.size - 1) || h.size == sizeof h);
    return h;
}

static _Atomic(void *) mailbox[MAILBOXES];
static atomic_int stop_readers;
static atomic_ulong foreign;     /* blocks taken that another thread made */
static atomic_ulong stats_reads; /* snapshots taken while workers ran */

static size_t random_size(uint64_t *rng)
{
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = *rng >> 33;
    if (r % 50 == 0) return sizeof(header_t) + r % 70000; /* large: RAW path */
    return sizeof(header_t) + r % 500;                   /* small: pools */
}

static void *worker(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (id + 1);
    unsigned char *slot[SLOTS] = {0};
    uint32_t serial = 0;
    for (int op = 0; op < OPS; op++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(rng >> 40);
        int k = (int)(r % SLOTS);
        uint32_t d = (r >> 8) % 3;
        if (slot[k] == NULL) {
            size_t n = random_size(&rng);
            uint32_t tag = id * 1000003u + serial++;
            unsigned char *p;
            if (r & 0x10000) {
                p = APIS[d].calloc(1, n);
                CHECK(p != NULL);
                for (size_t i = 0; i < n; i += 97) CHECK(p[i] == 0);
            } else {
                p = APIS[d].malloc(n);
                CHECK(p != NULL);
            }
            CHECK(ALIGNED16(p));
            stamp(p, n, tag, d);
            slot[k] = p;
        } else if (r & 0x20000) {
            header_t h = verify(slot[k]);
            size_t n = random_size(&rng);
            unsigned char *q = APIS[h.domain].realloc(slot[k], n);
            CHECK(q != NULL && ALIGNED16(q));
            /* the common prefix survived the move */
            size_t keep = n < h.size ? n : h.size;
            for (size_t i = sizeof h; i < keep; i += 1 + i / 64) CHECK(q[i] == pat(h.tag, i));
            stamp(q, n, h.tag, h.domain);
            slot[k] = q;
        } else if (r & 0x40000) {
            /* hand the block to whichever thread finds it next */
            verify(slot[k]);
            void *old = atomic_exchange(&mailbox[r % MAILBOXES], slot[k]);
            slot[k] = old; /* may be another thread's block: ours now */
            if (old) {
                header_t h = verify(old);
                if (h.tag / 1000003u != id) atomic_fetch_add(&foreign, 1);
            }
        } else {
            header_t h = verify(slot[k]);
            APIS[h.domain].free(slot[k]);
            slot[k] = NULL;
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (slot[k]) {
            header_t h = verify(slot[k]);
            APIS[h.domain].free(slot[k]);
        }
    }
    return NULL;
}

/* Reads statistics and the arena allocator while the workers run. */
static void *reader(void *arg)
{
    (void)arg;
    do {
        PyMalloc_Stats s;
        s.struct_size = sizeof s;
        CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK);
        CHECK(s.arena_bytes == s.arenas_current * s.arena_size);
        CHECK(s.allocated_bytes + s.available_bytes + s.unused_pool_bytes + s.pool_header_bytes +
                  s.quantization_bytes + s.arena_alignment_bytes ==
              s.arena_bytes);
        PyObjectArenaAllocator a;
        PyObject_GetArenaAllocator(&a);
        CHECK(a.alloc != NULL && a.free != NULL);
        atomic_fetch_add(&stats_reads, 1);
    } while (!atomic_load(&stop_readers));
    return NULL;
}

static size_t pool_blocks(void)
{
    PyMalloc_Stats s;
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK);
    return s.blocks_in_use;
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyObject_Malloc);
    const char *configs[] = {"pymalloc", "malloc", "pymalloc_debug", "malloc_debug"};
    for (int c = 0; c < 4; c++) {
        CHECK(PyMalloc_SetupByName(configs[c]) == PYMALLOC_OK);
        size_t before = pool_blocks();
        atomic_store(&stop_readers, 0);
        atomic_store(&foreign, 0);
        atomic_store(&stats_reads, 0);
        pthread_t t[THREADS], rd;
        for (int i = 0; i < THREADS; i++)
            CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) == 0);
        CHECK(pthread_create(&rd, NULL, reader, NULL) == 0);
        for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
        atomic_store(&stop_readers, 1);
        CHECK(pthread_join(rd, NULL) == 0);
        /* blocks left in the mailboxes: checked and freed here */
        for (int m = 0; m < MAILBOXES; m++) {
            unsigned char *p = atomic_exchange(&mailbox[m], NULL);
            if (p) {
                header_t h = verify(p);
                APIS[h.domain].free(p);
            }
        }
        /* Each thread takes, at the latest, what the threads before it left
           in the mailboxes. */
        CHECK(atomic_load(&foreign) > 0);
        /* Blocks freed into the heap of a thread that has exited wait in
           that heap's queue until it is drained: drain now. */
        PyMalloc_Purge();
        CHECKF(pool_blocks() == before, "%s: %zu pool blocks before, %zu after", configs[c], before,
               pool_blocks());
        printf("configuration %s: %d threads x %d operations, %lu blocks freed or resized by "
               "another thread, %lu statistics snapshots\n",
               configs[c], THREADS, OPS, atomic_load(&foreign), atomic_load(&stats_reads));
    }
    report_done("threads");
    return 0;
}
