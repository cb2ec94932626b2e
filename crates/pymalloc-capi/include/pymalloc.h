/*
 * pymalloc.h -- CPython's memory API, from pymalloc-rs (libpymalloc).
 *
 * libpymalloc.so / libpymalloc.a export CPython 3.11's memory allocation API
 * under CPython's own names, signatures, constants and struct layouts:
 *
 *   PyMem_RawMalloc/RawCalloc/RawRealloc/RawFree    domain RAW
 *   PyMem_Malloc/Calloc/Realloc/Free                domain MEM
 *   PyObject_Malloc/Calloc/Realloc/Free             domain OBJ
 *   PyMemAllocatorEx, PyMemAllocatorDomain, PyMem_GetAllocator,
 *   PyMem_SetAllocator, PyMem_SetupDebugHooks,
 *   PyObjectArenaAllocator, PyObject_GetArenaAllocator,
 *   PyObject_SetArenaAllocator, PyTraceMalloc_Track/Untrack,
 *   Py_ssize_t, PY_SSIZE_T_MAX, PyMem_New/Resize/Del and the upper-case
 *   macros (PyMem_MALLOC, ..., PyObject_Del),
 *
 * plus a few functions beyond CPython, prefixed PyMalloc_ (statistics,
 * configurations by PYTHONMALLOC name), and, through pymalloc_gc.h, the
 * object layer and cycle collector (_PyObject_GC_New, PyObject_GC_Track,
 * Py_IncRef/Py_DecRef, PyGC_Collect, the gc module as PyMemGc_*).
 *
 * THIS LIBRARY IS FOR PROGRAMS THAT DO NOT LINK LIBPYTHON. It defines the
 * same symbols as libpython: in a program that links both, each call goes to
 * whichever definition the linker or the dynamic loader finds first. Do not
 * include this header together with Python.h (it refuses to be included
 * after it; including Python.h after it fails on the duplicate definitions).
 *
 * Build and link:
 *
 *   cargo build --release -p pymalloc-capi
 *   cc prog.c -I crates/pymalloc-capi/include -L target/release -lpymalloc
 *   static: ... -Wl,-Bstatic -lpymalloc -Wl,-Bdynamic
 *           -lgcc_s -lutil -lrt -lpthread -lm -ldl
 *   pkg-config (files written next to the library by the build):
 *     PKG_CONFIG_PATH=target/release pkg-config --cflags --libs pymalloc
 *     PKG_CONFIG_PATH=target/release pkg-config --cflags --libs pymalloc-static
 *   install: crates/pymalloc-capi/install.sh PREFIX target/release
 *
 * Semantics (every domain, every configuration, as in CPython):
 *   - malloc(0) returns a distinct non-NULL pointer, as if 1 byte had been
 *     requested; calloc(n, 0) and calloc(0, n) behave like calloc(1, 1).
 *   - A size above PY_SSIZE_T_MAX, or a calloc product that overflows it,
 *     returns NULL; nothing is allocated.
 *   - realloc(NULL, n) is malloc(n); realloc(p, 0) resizes (it does not free)
 *     and returns non-NULL; a failed realloc returns NULL and leaves p valid
 *     and unchanged.
 *   - free(NULL) does nothing.
 *   - Blocks are aligned to 16 bytes on 64-bit targets.
 *   - A block must be resized and freed by the domain that allocated it.
 *   - Out of memory returns NULL; no message is printed, errno is unspecified.
 *
 * Threads: C programs have no GIL. Unless a configuration says otherwise
 * (none of the built-in ones does), every domain may be called from any
 * thread at any time: RAW is the C library, MEM and OBJ give each thread a
 * pymalloc heap of its own (a block freed by another thread goes back to its
 * owner's heap; see PyMalloc_SetMode for the other arrangements), and the
 * debug hooks are thread-safe. The object layer (pymalloc_gc.h) is the
 * exception: like CPython's, it needs one thread at a time. Replacing
 * allocators (PyMem_SetAllocator, PyMem_SetupDebugHooks,
 * PyMalloc_SetupByName, PyMalloc_InitFromEnv) follows CPython's rule: no
 * thread may use the affected domains while they are swapped; do it first
 * thing in main(), or while the program is single-threaded. An allocator you
 * install must itself be thread-safe if several threads use its domain.
 */
#ifndef PYMALLOC_H
#define PYMALLOC_H

#ifdef Py_PYTHON_H
#  error "pymalloc.h is for programs that do not link libpython: it declares CPython's memory API itself. Include Python.h or pymalloc.h, not both."
#endif

#include <stddef.h>     /* size_t, NULL */
#include <stdint.h>     /* uintptr_t */
#include <stdio.h>      /* FILE */
#include <sys/types.h>  /* ssize_t */

#ifdef __cplusplus
extern "C" {
#endif

#define PYMALLOC_VERSION_MAJOR 0
#define PYMALLOC_VERSION_MINOR 1
#define PYMALLOC_VERSION_PATCH 0

/* ------------------------------------------------------------------------
 * Py_ssize_t
 */

/* CPython's signed size type (ssize_t on POSIX). */
typedef ssize_t Py_ssize_t;
#define PYMALLOC_HAVE_PY_SSIZE_T /* for pymalloc_gc.h */

/* The largest Py_ssize_t; no allocation may exceed it. */
#define PY_SSIZE_T_MAX ((Py_ssize_t)(((size_t)-1) >> 1))

/* ------------------------------------------------------------------------
 * Domain RAW: the C library's allocator with CPython's rules. Thread-safe.
 */

/* Allocates size bytes; NULL if size > PY_SSIZE_T_MAX or memory is short.
   PyMem_RawMalloc(0) returns a distinct non-NULL pointer. The memory is not
   initialised. */
void *PyMem_RawMalloc(size_t size);

/* Allocates nelem * elsize bytes set to zero; NULL if the product overflows
   PY_SSIZE_T_MAX. A zero argument behaves like PyMem_RawCalloc(1, 1). */
void *PyMem_RawCalloc(size_t nelem, size_t elsize);

/* Resizes ptr to new_size bytes, keeping the contents up to the smaller of
   the old and new sizes. PyMem_RawRealloc(NULL, n) is PyMem_RawMalloc(n);
   PyMem_RawRealloc(p, 0) resizes and returns non-NULL. On failure returns
   NULL and ptr stays valid and unchanged. ptr must be NULL or from the RAW
   domain. */
void *PyMem_RawRealloc(void *ptr, size_t new_size);

/* Frees ptr, which must be NULL (nothing happens) or from the RAW domain. */
void PyMem_RawFree(void *ptr);

/* ------------------------------------------------------------------------
 * Domain MEM: pymalloc by default (requests of 1..512 bytes from pools, the
 * rest from RAW). Same rules as RAW.
 */

void *PyMem_Malloc(size_t size);
void *PyMem_Calloc(size_t nelem, size_t elsize);
void *PyMem_Realloc(void *ptr, size_t new_size);
void PyMem_Free(void *ptr);

/* ------------------------------------------------------------------------
 * Domain OBJ: pymalloc by default, a separate API from MEM (with the debug
 * hooks, a block of one freed by the other is reported). Same rules.
 */

void *PyObject_Malloc(size_t size);
void *PyObject_Calloc(size_t nelem, size_t elsize);
void *PyObject_Realloc(void *ptr, size_t new_size);
void PyObject_Free(void *ptr);

/* ------------------------------------------------------------------------
 * Typed and upper-case macros, with CPython's exact semantics.
 */

/* Room for n values of type `type` from MEM, or NULL if n * sizeof(type)
   would exceed PY_SSIZE_T_MAX (or memory is short). Not initialised. */
#define PyMem_New(type, n) \
    (((size_t)(n) > (size_t)PY_SSIZE_T_MAX / sizeof(type)) \
         ? NULL \
         : ((type *)PyMem_Malloc((n) * sizeof(type))))

/* Resizes p to room for n values of `type` and ASSIGNS THE RESULT TO p, as
   CPython does: on failure (overflow or memory) p becomes NULL while the old
   block stays allocated. Save the old pointer first to free it:
       T *old = p;
       if (PyMem_Resize(p, T, n) == NULL) { PyMem_Free(old); ... }
   The whole expression's value is the new p. */
#define PyMem_Resize(p, type, n) \
    ((p) = ((size_t)(n) > (size_t)PY_SSIZE_T_MAX / sizeof(type)) \
               ? NULL \
               : (type *)PyMem_Realloc((p), (n) * sizeof(type)))

/* PyMem_Free. Without parameters, so it can be used as a function pointer
   (e.g. `void (*f)(void *) = PyMem_Del;`). */
#define PyMem_Del PyMem_Free

/* Upper-case aliases, kept by CPython for backward compatibility. */
#define PyMem_MALLOC(n) PyMem_Malloc(n)
#define PyMem_NEW(type, n) PyMem_New(type, n)
#define PyMem_REALLOC(p, n) PyMem_Realloc(p, n)
#define PyMem_RESIZE(p, type, n) PyMem_Resize(p, type, n)
#define PyMem_FREE(p) PyMem_Free(p)
#define PyMem_DEL PyMem_Free

/* OBJ aliases; without parameters, usable as function pointers. */
#define PyObject_MALLOC PyObject_Malloc
#define PyObject_REALLOC PyObject_Realloc
#define PyObject_FREE PyObject_Free
#define PyObject_Del PyObject_Free
#define PyObject_DEL PyObject_Free

/* ------------------------------------------------------------------------
 * Allocator domains: read and replace each domain's allocator.
 */

typedef enum {
    /* PyMem_RawMalloc(), PyMem_RawCalloc(), PyMem_RawRealloc(), PyMem_RawFree() */
    PYMEM_DOMAIN_RAW,
    /* PyMem_Malloc(), PyMem_Calloc(), PyMem_Realloc(), PyMem_Free() */
    PYMEM_DOMAIN_MEM,
    /* PyObject_Malloc(), PyObject_Calloc(), PyObject_Realloc(), PyObject_Free() */
    PYMEM_DOMAIN_OBJ
} PyMemAllocatorDomain;

/* A domain's allocator. ctx is passed as the first argument of each function.
   An allocator installed in a domain must: return a distinct non-NULL pointer
   for zero sizes; return blocks aligned for any type (16 bytes on 64-bit);
   zero calloc's memory; treat realloc(ctx, NULL, n) as malloc and
   realloc(ctx, p, 0) as a resize; leave p valid when realloc fails; ignore
   free(ctx, NULL). It receives sizes already checked against
   PY_SSIZE_T_MAX. */
typedef struct {
    /* user context passed as the first argument to the 4 functions */
    void *ctx;
    /* allocates a memory block */
    void *(*malloc)(void *ctx, size_t size);
    /* allocates a memory block initialised with zeros */
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    /* allocates or resizes a memory block */
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    /* releases a memory block */
    void (*free)(void *ctx, void *ptr);
} PyMemAllocatorEx;

/* Copies the current allocator of `domain` into *allocator. For a value that
   is not one of the three domains, sets every member to NULL (as CPython).
   A NULL allocator does nothing. */
void PyMem_GetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator);

/* Makes *allocator the allocator of `domain`. Ignores a value that is not a
   domain (as CPython), a NULL allocator, and an allocator with a NULL
   function member (CPython would store it and crash at the first call).

   A hook saves the previous allocator with PyMem_GetAllocator and forwards to
   it; an allocator that does not forward must be able to resize and free the
   domain's live blocks, or be installed before any allocation. To keep the
   debug hooks on top of a new allocator that is not a hook, call
   PyMem_SetupDebugHooks() again afterwards.

   Not thread-safe: no thread may use the domain during the call (see the
   top of this file). */
void PyMem_SetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator);

/* Installs CPython's debug hooks over each domain's current allocator (a
   domain that already has them keeps them). Fresh memory is filled with 0xCD,
   freed memory with 0xDD; each block is framed by its size, the API id
   ('r', 'm', 'o') and 0xFD guard bytes. Free and realloc check the frame: on
   an overflow, underflow, or a block freed by another domain, they print
   CPython 3.11's report to stderr (fd 2), then the line
   "Fatal Python error: <function>: <message>", and abort(). (The report's
   serial-number line is controlled by PyMalloc_SetDebugReportSerial.) The
   hooked domains stay thread-safe; installing them is not, like
   PyMem_SetAllocator. */
void PyMem_SetupDebugHooks(void);

/* ------------------------------------------------------------------------
 * Arena allocator: where pymalloc gets its 1 MiB arenas.
 */

typedef struct {
    /* user context passed as the first argument to the 2 functions */
    void *ctx;
    /* allocates an arena of size bytes; NULL on failure */
    void *(*alloc)(void *ctx, size_t size);
    /* frees an arena returned by alloc, with the same size */
    void (*free)(void *ctx, void *ptr, size_t size);
} PyObjectArenaAllocator;

/* Copies the allocator new arenas come from into *allocator (NULL: nothing).
   The default maps anonymous memory (mmap) aligned to the arena size. */
void PyObject_GetArenaAllocator(PyObjectArenaAllocator *allocator);

/* New arenas come from *allocator. Unlike CPython, each live arena is
   released to the allocator that made it, so the allocator may be swapped at
   any time, even while other threads allocate. Ignores a NULL allocator and
   one with a NULL member. The functions must stay callable, from any thread,
   while an arena they made is live; alloc's memory must be readable and
   writable and used by nothing else until the matching free. */
void PyObject_SetArenaAllocator(PyObjectArenaAllocator *allocator);

/* ------------------------------------------------------------------------
 * tracemalloc. While tracing (PyMalloc_TraceStart, or PYTHONTRACEMALLOC=N
 * with PyMalloc_InitFromEnv), Track records that size bytes at ptr belong to
 * tracemalloc domain `domain`, with the caller's traceback; Untrack forgets
 * them. Both return 0, -1 (Track: no memory for the trace, or ptr 0), or -2
 * when not tracing, as CPython's do.
 */

int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size);
int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr);

/* ------------------------------------------------------------------------
 * Beyond CPython: PyMalloc_*.
 */

/* Return codes. */
#define PYMALLOC_OK 0
#define PYMALLOC_ERR_UNKNOWN_NAME (-1)      /* not a PYTHONMALLOC name */
#define PYMALLOC_ERR_INVALID_ARGUMENT (-2)  /* NULL pointer, struct too small */
#define PYMALLOC_ERR_IO (-3)                /* a write to a FILE * failed */

/* Installs, in all three domains, the configuration PYTHONMALLOC=name selects
   in CPython:
     "default", "pymalloc"            RAW malloc, MEM and OBJ pymalloc
     "malloc"                         malloc in all three domains
     "debug", "pymalloc_debug"        pymalloc with the debug hooks
     "malloc_debug"                   malloc with the debug hooks
   NULL and "" mean "default" (PYTHONMALLOC unset or empty). Replaces any
   allocator installed with PyMem_SetAllocator. Returns PYMALLOC_OK, or
   PYMALLOC_ERR_UNKNOWN_NAME for any other name, with the configuration left
   unchanged (PyMalloc_AllocatorNames() lists the valid ones).
   Not thread-safe, like PyMem_SetAllocator; and a block allocated before the
   call may only be resized or freed after it if its domain has the same
   allocator in both configurations (free everything first, or switch only
   between "default" and "pymalloc"). */
int PyMalloc_SetupByName(const char *name);

/* Applies the environment as CPython does at start-up: the configuration
   PYTHONMALLOC names (see PyMalloc_SetupByName), and, if PYTHONMALLOCSTATS is
   set and non-empty, the statistics table on stderr whenever a new arena is
   allocated and at exit. Returns PYMALLOC_OK or PYMALLOC_ERR_UNKNOWN_NAME
   (nothing changed). Call it once, first thing in main(). */
int PyMalloc_InitFromEnv(void);

/* tracemalloc's functions for C programs. TraceStart wraps the three
   domains' allocators in the tracer and traces every block they hand out,
   with up to nframe (1 to 65535) return addresses of the caller; returns 0 or
   PYMALLOC_ERR_INVALID_ARGUMENT. TraceStop stops, forgets every trace and
   puts the allocators back. Both: not thread-safe, like PyMem_SetAllocator.
   TraceGetTracedMemory: bytes traced now and at the peak (NULL pointers
   allowed). TraceDumpSnapshot writes the traced blocks, symbols resolved, to
   a file (0, PYMALLOC_ERR_INVALID_ARGUMENT or PYMALLOC_ERR_IO).
   TraceKeepPeak(1) keeps, from then on, what is live at the peak of the
   traced bytes; TraceDumpPeakSnapshot writes it (dhat's "t-gmax").
   PyMalloc_InitFromEnv also reads PYMALLOC_TRACE_DUMP=path (a snapshot
   written there at exit) and PYMALLOC_TRACE_PEAK_DUMP=path (the peak's,
   written there at exit). */
int PyMalloc_TraceStart(int nframe);
void PyMalloc_TraceStop(void);
int PyMalloc_TraceIsTracing(void);
int PyMalloc_TraceGetLimit(void);
void PyMalloc_TraceGetTracedMemory(size_t *current, size_t *peak);
void PyMalloc_TraceResetPeak(void);
void PyMalloc_TraceClear(void);
int PyMalloc_TraceDumpSnapshot(const char *path);
void PyMalloc_TraceKeepPeak(int on);
int PyMalloc_TraceDumpPeakSnapshot(const char *path);

/* The configuration the domains are in: "pymalloc", "malloc",
   "pymalloc_debug" or "malloc_debug" (CPython's
   _PyMem_GetCurrentAllocatorName), or NULL when a domain has another
   allocator (a hook, a custom allocator). The string is static. */
const char *PyMalloc_GetAllocatorName(void);

/* Chooses how pymalloc serves MEM and OBJ in the "pymalloc" configurations,
   from the next PyMalloc_SetupByName / PyMalloc_InitFromEnv on:
     "threaded"  one heap per thread, no global lock (the default);
     "locked"    one heap behind a mutex;
     "single"    one heap with no lock at all, as in CPython (the GIL is its
                 lock): only for programs that call MEM and OBJ from one
                 thread at a time.
   Returns PYMALLOC_OK, or PYMALLOC_ERR_UNKNOWN_NAME (nothing changed). */
int PyMalloc_SetMode(const char *mode);

/* Gives back to the OS, now, the memory pymalloc holds no block in: the pages
   of empty pools and every wholly free arena (the spare one too), in the
   calling thread's heap, the heaps of threads that have exited, and the
   shared heap. Returns the number of bytes given back. Each arena goes back
   to the arena allocator that made it, so call this before an arena
   allocator installed with PyObject_SetArenaAllocator stops working. */
size_t PyMalloc_Purge(void);

/* When every pymalloc heap gives memory back: "default" or "decay" (keep
   what was freed while it is reused; give back what stays unused for about a
   second), "decay:MS", "never" (CPython's rule), "immediate", "threshold" or
   "threshold:MIN_POOLS:DIVISOR". A decay policy also starts the background
   decay thread. PyMalloc_InitFromEnv reads the name from PYMALLOC_PURGE.
   Returns 0, or PYMALLOC_ERR_UNKNOWN_NAME (policy unchanged). */
int PyMalloc_SetPurgePolicy(const char *name);

/* The names PyMalloc_SetPurgePolicy accepts, as one static string. */
const char *PyMalloc_PurgePolicyNames(void);

/* Sweeps every heap as the decay policy does, if a sweep is due; returns
   the bytes given back (for programs with an idle loop of their own). */
size_t PyMalloc_Decay(void);

/* Starts the thread that gives back what an idle program freed under a
   decay policy; call it again in the child after fork(). Returns 0, or -1
   if no thread could be made. */
int PyMalloc_StartBackgroundDecay(void);

/* The names PyMalloc_SetupByName accepts, as one static string:
   "default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug, pymalloc_all, pymalloc_all_debug". */
const char *PyMalloc_AllocatorNames(void);

/* Whether debug-hook reports include the line
   "    The block was made by call #N to debug malloc/realloc." (non-zero: yes,
   the default, as CPython builds with PYMEM_DEBUG_SERIALNO print it; zero:
   no, as release builds of CPython 3.11 print reports). */
void PyMalloc_SetDebugReportSerial(int on);

/* Statistics of the pymalloc heap that MEM and OBJ use by default. */

#define PYMALLOC_STATS_VERSION 1
#define PYMALLOC_MAX_SIZE_CLASSES 64

/* One size class. */
typedef struct {
    size_t size;           /* block size in bytes */
    size_t pools;          /* pools holding blocks of this class */
    size_t blocks_in_use;  /* blocks handed out */
    size_t avail_blocks;   /* free blocks in those pools */
} PyMalloc_ClassStats;

/* A snapshot. Versioned so it can grow: later versions only append fields.
   Set struct_size = sizeof(PyMalloc_Stats) before calling PyMalloc_GetStats;
   the library fills what both sides know and sets version to its own.
   The byte categories add up: allocated_bytes + available_bytes +
   unused_pool_bytes + pool_header_bytes + quantization_bytes +
   arena_alignment_bytes == arena_bytes. */
typedef struct {
    size_t struct_size;            /* in: sizeof(PyMalloc_Stats); unchanged */
    unsigned int version;          /* out: PYMALLOC_STATS_VERSION of the library */
    unsigned int nclasses;         /* size classes: valid entries of classes[] */
    size_t alignment;              /* block alignment and class step (16) */
    size_t small_request_threshold;/* largest request served by pools (512) */
    size_t pool_size;              /* bytes per pool (16384) */
    size_t pool_overhead;          /* bytes of a pool's header (48) */
    size_t arena_size;             /* bytes per arena (1048576) */
    size_t arenas_allocated_total; /* arenas ever allocated */
    size_t arenas_reclaimed;       /* arenas given back */
    size_t arenas_highwater;       /* most arenas live at once */
    size_t arenas_current;         /* arenas live now */
    size_t arena_bytes;            /* arenas_current * arena_size */
    size_t allocated_bytes;        /* bytes in blocks handed out */
    size_t available_bytes;        /* bytes in free blocks of used pools */
    size_t unused_pools;           /* pools free or never used */
    size_t unused_pool_bytes;      /* unused_pools * pool_size */
    size_t pool_header_bytes;      /* bytes of headers of used pools */
    size_t quantization_bytes;     /* bytes at pool ends too small for a block */
    size_t arena_alignment_bytes;  /* bytes lost aligning arenas to pools */
    size_t blocks_in_use;          /* pool blocks handed out, all classes */
    Py_ssize_t raw_allocated_blocks; /* live blocks MEM/OBJ passed to RAW */
    Py_ssize_t allocated_blocks;   /* blocks_in_use + raw_allocated_blocks
                                      (sys.getallocatedblocks()) */
    size_t map_mid_nodes;          /* arena map: mid nodes */
    size_t map_bot_nodes;          /* arena map: bottom nodes */
    size_t map_root_bytes;         /* arena map: bytes of the root */
    size_t map_mid_node_bytes;     /* arena map: bytes per mid node */
    size_t map_bot_node_bytes;     /* arena map: bytes per bottom node */
    PyMalloc_ClassStats classes[PYMALLOC_MAX_SIZE_CLASSES];
} PyMalloc_Stats;

/* Fills *stats (see PyMalloc_Stats). Writes at most stats->struct_size
   bytes. Returns PYMALLOC_OK, or PYMALLOC_ERR_INVALID_ARGUMENT if stats is
   NULL or struct_size is smaller than version 1 (nothing written).
   Thread-safe. 
   In the default threaded mode the numbers add up every thread's heap.
   Blocks that one thread frees into the heap of a thread that has exited
   count as in use until that heap is adopted by a new thread or drained by
   PyMalloc_Purge. */
int PyMalloc_GetStats(PyMalloc_Stats *stats);

/* Writes the statistics table to out, laid out exactly like the allocator
   part of CPython 3.11's sys._debugmallocstats() ("Small block threshold =
   512, in 32 size classes." ...). Does not flush. Returns PYMALLOC_OK,
   PYMALLOC_ERR_INVALID_ARGUMENT for a NULL out, or PYMALLOC_ERR_IO.
   Thread-safe. */
int PyMalloc_PrintStats(FILE *out);

#ifdef __cplusplus
}
#endif

/* ------------------------------------------------------------------------
 * The object layer and the cycle collector (crate pymalloc-gc): objects with
 * CPython's headers from the OBJ domain, reference counts, weak references,
 * free lists, PyGC_Collect and the gc module as PyMemGc_*.
 */
#include "pymalloc_gc.h"

#endif /* PYMALLOC_H */
