/* tracemalloc through the C library: PyTraceMalloc_Track/Untrack and
 * PyMalloc_Trace*, started by PYTHONTRACEMALLOC through PyMalloc_InitFromEnv,
 * with a snapshot at exit (PYMALLOC_TRACE_DUMP) that the harness reads:
 *
 *   tracing run        (PYTHONTRACEMALLOC=3) the API, exact figures, and one
 *                      block of 4096 bytes left alive by make_leak()
 *   tracing bad-env    (PYTHONTRACEMALLOC=70000) PyMalloc_InitFromEnv refuses
 *   tracing off        (PYTHONTRACEMALLOC=0) tracing stays off, as in CPython */
#include "check.h"

#include <pymalloc.h>

static size_t current(void)
{
    size_t c = 0, p = 0;
    PyMalloc_TraceGetTracedMemory(&c, &p);
    return c;
}

static size_t peak(void)
{
    size_t c = 0, p = 0;
    PyMalloc_TraceGetTracedMemory(&c, &p);
    return p;
}

/* Not inlined: the snapshot names it. */
__attribute__((noinline)) void *make_leak(void)
{
    return PyMem_Malloc(4096);
}

int main(int argc, char **argv)
{
    report_linkage((void *)(uintptr_t)PyMalloc_TraceStart);
    CHECK(argc == 2);
    CHECK(PyTraceMalloc_Track(5, 0x1000, 10) == -2); /* not tracing yet */
    if (strcmp(argv[1], "bad-env") == 0 || strcmp(argv[1], "off") == 0) {
        int bad = strcmp(argv[1], "bad-env") == 0;
        CHECK(PyMalloc_InitFromEnv() == (bad ? PYMALLOC_ERR_INVALID_ARGUMENT : PYMALLOC_OK));
        CHECK(!PyMalloc_TraceIsTracing());
        void *p = PyMem_Malloc(100);
        CHECK(p != NULL && current() == 0);
        PyMem_Free(p);
        report_done("tracing");
        return 0;
    }
    CHECK(PyMalloc_InitFromEnv() == PYMALLOC_OK);
    CHECK(PyMalloc_TraceIsTracing());
    CHECK(PyMalloc_TraceGetLimit() == 3);
    CHECK(PyMalloc_TraceStart(0) == PYMALLOC_ERR_INVALID_ARGUMENT);
    CHECK(PyMalloc_TraceStart(70000) == PYMALLOC_ERR_INVALID_ARGUMENT);

    /* The three domains, a block above 512 bytes included (pymalloc hands
       it to RAW: traced once, as MEM's). */
    void *m = PyMem_Malloc(1000);
    void *o = PyObject_Malloc(100);
    void *r = PyMem_RawMalloc(50);
    CHECK(m && o && r);
    CHECKF(current() == 1150, "%zu", current());
    o = PyObject_Realloc(o, 300);
    CHECK(o != NULL);
    CHECKF(current() == 1350, "%zu", current());

    /* Blocks of another allocator, in a domain of their own. */
    CHECK(PyTraceMalloc_Track(77, 0x10000, 500) == 0);
    CHECK(current() == 1850);
    CHECK(PyTraceMalloc_Track(77, 0x10000, 700) == 0); /* replaces */
    CHECK(current() == 2050);
    CHECK(PyTraceMalloc_Untrack(77, 0x10000) == 0);
    CHECK(PyTraceMalloc_Untrack(77, 0x10000) == 0); /* not traced: fine */
    CHECK(PyTraceMalloc_Track(77, 0, 1) == -1);
    CHECK(current() == 1350);

    PyMem_Free(m);
    PyObject_Free(o);
    PyMem_RawFree(r);
    CHECK(current() == 0);
    CHECKF(peak() == 2050, "%zu", peak());
    PyMalloc_TraceResetPeak();
    CHECK(peak() == 0);

    CHECK(PyMalloc_TraceDumpSnapshot(NULL) == PYMALLOC_ERR_INVALID_ARGUMENT);
    CHECK(PyMalloc_TraceDumpSnapshot("/nonexistent-dir/x") == PYMALLOC_ERR_IO);

    /* Stop and start again: traces are forgotten, the domains unwrapped. */
    void *before = PyMem_Malloc(64);
    PyMalloc_TraceStop();
    CHECK(!PyMalloc_TraceIsTracing());
    CHECK(PyTraceMalloc_Track(5, 0x1000, 10) == -2);
    PyMem_Free(before);
    CHECK(PyMalloc_TraceStart(3) == 0);
    CHECK(current() == 0);

    void *leak = make_leak();
    CHECK(leak != NULL);
    CHECK(current() == 4096);
    /* A peak of 14096 bytes that is over by exit: the peak snapshot at exit
       (PYMALLOC_TRACE_PEAK_DUMP) still holds both blocks. */
    void *big = PyMem_RawMalloc(10000);
    CHECK(big != NULL && current() == 14096);
    PyMem_RawFree(big);
    CHECK(current() == 4096 && peak() == 14096);
    report_done("tracing");
    return 0; /* the snapshot at exit holds the leak */
}
