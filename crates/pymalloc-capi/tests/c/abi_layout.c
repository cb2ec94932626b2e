/* pymalloc.h against CPython's own headers, in one translation unit.
 *
 * pymalloc.h is included first with every name it shares with CPython
 * renamed to pm_<name> by macros; the values of its constant macros are
 * captured in enums; the renames and pymalloc.h's macros are then removed
 * and Python.h is included. Static assertions compare sizes, offsets, member
 * types, enumerator values, PY_SSIZE_T_MAX and the type of every function.
 * (__builtin_types_compatible_p compares types structurally, so a function
 * pointer member with another signature, or a function declared with other
 * parameter types, fails.)
 *
 * Compiled with -Werror: a macro of pymalloc.h that is left defined and
 * differs from CPython's would be a "redefined" warning.
 *
 * At run time (linked against libpymalloc only, never libpython) the
 * program also checks that CPython's macros (PyMem_New, PyMem_Resize, ...)
 * expanded from CPython's headers and the same macros from pymalloc.h make
 * exactly the same calls with the same arguments and results: a hook on
 * MEM and OBJ logs every call. */

#define _GNU_SOURCE 1 /* as pyconfig.h defines it */

/* ---- 1. pymalloc.h, renamed ------------------------------------------- */
#define Py_ssize_t pm_Py_ssize_t
#define PyMemAllocatorDomain pm_PyMemAllocatorDomain
#define PYMEM_DOMAIN_RAW pm_PYMEM_DOMAIN_RAW
#define PYMEM_DOMAIN_MEM pm_PYMEM_DOMAIN_MEM
#define PYMEM_DOMAIN_OBJ pm_PYMEM_DOMAIN_OBJ
#define PyMemAllocatorEx pm_PyMemAllocatorEx
#define PyObjectArenaAllocator pm_PyObjectArenaAllocator
#define PyMem_RawMalloc pm_PyMem_RawMalloc
#define PyMem_RawCalloc pm_PyMem_RawCalloc
#define PyMem_RawRealloc pm_PyMem_RawRealloc
#define PyMem_RawFree pm_PyMem_RawFree
#define PyMem_Malloc pm_PyMem_Malloc
#define PyMem_Calloc pm_PyMem_Calloc
#define PyMem_Realloc pm_PyMem_Realloc
#define PyMem_Free pm_PyMem_Free
#define PyObject_Malloc pm_PyObject_Malloc
#define PyObject_Calloc pm_PyObject_Calloc
#define PyObject_Realloc pm_PyObject_Realloc
#define PyObject_Free pm_PyObject_Free
#define PyMem_GetAllocator pm_PyMem_GetAllocator
#define PyMem_SetAllocator pm_PyMem_SetAllocator
#define PyMem_SetupDebugHooks pm_PyMem_SetupDebugHooks
#define PyObject_GetArenaAllocator pm_PyObject_GetArenaAllocator
#define PyObject_SetArenaAllocator pm_PyObject_SetArenaAllocator
#define PyTraceMalloc_Track pm_PyTraceMalloc_Track
#define PyTraceMalloc_Untrack pm_PyTraceMalloc_Untrack
/* The object layer's header is left out: its PyObject and type descriptor
 * are deliberately smaller than CPython's (the slots the collector uses),
 * so they cannot be compared member by member. Its own test compares it
 * with the Rust definitions (crates/pymalloc-gc/tests/header.rs). */
#define PYMALLOC_GC_H
#include <pymalloc.h>

/* Values of pymalloc.h's constant macros, while they are defined. */
enum {
    PM_SSIZE_MAX_POSITIVE = PY_SSIZE_T_MAX > 0,
    PM_SSIZE_MAX_W0 = (int)((size_t)PY_SSIZE_T_MAX & 0xFFFF),
    PM_SSIZE_MAX_W1 = (int)(((size_t)PY_SSIZE_T_MAX >> 16) & 0xFFFF),
    PM_SSIZE_MAX_W2 = (int)(((size_t)PY_SSIZE_T_MAX >> 32) & 0xFFFF),
    PM_SSIZE_MAX_W3 = (int)(((size_t)PY_SSIZE_T_MAX >> 48) & 0xFFFF),
};

/* The macro scenario with pymalloc.h's macros (see macro_scenario.h). The
   macros call the renamed functions, defined at the end of this file as
   forwarders to the real ones. */
#define SCENARIO scenario_pymalloc
#define SCENARIO_SSIZE pm_Py_ssize_t
#include "macro_scenario.h"
#undef SCENARIO
#undef SCENARIO_SSIZE

/* ---- 2. take pymalloc.h's names away ----------------------------------- */
#undef Py_ssize_t
#undef PyMemAllocatorDomain
#undef PYMEM_DOMAIN_RAW
#undef PYMEM_DOMAIN_MEM
#undef PYMEM_DOMAIN_OBJ
#undef PyMemAllocatorEx
#undef PyObjectArenaAllocator
#undef PyMem_RawMalloc
#undef PyMem_RawCalloc
#undef PyMem_RawRealloc
#undef PyMem_RawFree
#undef PyMem_Malloc
#undef PyMem_Calloc
#undef PyMem_Realloc
#undef PyMem_Free
#undef PyObject_Malloc
#undef PyObject_Calloc
#undef PyObject_Realloc
#undef PyObject_Free
#undef PyMem_GetAllocator
#undef PyMem_SetAllocator
#undef PyMem_SetupDebugHooks
#undef PyObject_GetArenaAllocator
#undef PyObject_SetArenaAllocator
#undef PyTraceMalloc_Track
#undef PyTraceMalloc_Untrack
#undef PY_SSIZE_T_MAX
#undef PyMem_New
#undef PyMem_Resize
#undef PyMem_Del
#undef PyMem_MALLOC
#undef PyMem_NEW
#undef PyMem_REALLOC
#undef PyMem_RESIZE
#undef PyMem_FREE
#undef PyMem_DEL
#undef PyObject_MALLOC
#undef PyObject_REALLOC
#undef PyObject_FREE
#undef PyObject_Del
#undef PyObject_DEL

/* ---- 3. CPython's headers ---------------------------------------------- */
#include <Python.h>

#define SCENARIO scenario_cpython
#define SCENARIO_SSIZE Py_ssize_t
#include "macro_scenario.h"
#undef SCENARIO
#undef SCENARIO_SSIZE

#include "check.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
#define MEMBER_T(T, m) __typeof__(((T *)0)->m)
#define SAME_MEMBER(T, m)                                                              \
    _Static_assert(offsetof(pm_##T, m) == offsetof(T, m), #T "." #m ": offset");      \
    _Static_assert(sizeof(MEMBER_T(pm_##T, m)) == sizeof(MEMBER_T(T, m)), #T "." #m ": size"); \
    _Static_assert(SAME_TYPE(MEMBER_T(pm_##T, m), MEMBER_T(T, m)), #T "." #m ": type")
#define SAME_FUNCTION(f) \
    _Static_assert(SAME_TYPE(__typeof__(pm_##f), __typeof__(f)), #f ": signature")

/* Types */
_Static_assert(SAME_TYPE(pm_Py_ssize_t, Py_ssize_t), "Py_ssize_t");
_Static_assert(sizeof(pm_PyMemAllocatorDomain) == sizeof(PyMemAllocatorDomain), "domain enum size");
_Static_assert((int)pm_PYMEM_DOMAIN_RAW == (int)PYMEM_DOMAIN_RAW, "PYMEM_DOMAIN_RAW");
_Static_assert((int)pm_PYMEM_DOMAIN_MEM == (int)PYMEM_DOMAIN_MEM, "PYMEM_DOMAIN_MEM");
_Static_assert((int)pm_PYMEM_DOMAIN_OBJ == (int)PYMEM_DOMAIN_OBJ, "PYMEM_DOMAIN_OBJ");
_Static_assert(PYMEM_DOMAIN_RAW == 0 && PYMEM_DOMAIN_MEM == 1 && PYMEM_DOMAIN_OBJ == 2, "values");
/* Both enums have the same underlying integer type. */
_Static_assert(SAME_TYPE(__typeof__(+(pm_PyMemAllocatorDomain)0), __typeof__(+(PyMemAllocatorDomain)0)),
               "enum promotion");

_Static_assert(sizeof(pm_PyMemAllocatorEx) == sizeof(PyMemAllocatorEx), "PyMemAllocatorEx size");
_Static_assert(_Alignof(pm_PyMemAllocatorEx) == _Alignof(PyMemAllocatorEx), "PyMemAllocatorEx align");
SAME_MEMBER(PyMemAllocatorEx, ctx);
SAME_MEMBER(PyMemAllocatorEx, malloc);
SAME_MEMBER(PyMemAllocatorEx, calloc);
SAME_MEMBER(PyMemAllocatorEx, realloc);
SAME_MEMBER(PyMemAllocatorEx, free);

_Static_assert(sizeof(pm_PyObjectArenaAllocator) == sizeof(PyObjectArenaAllocator), "arena size");
_Static_assert(_Alignof(pm_PyObjectArenaAllocator) == _Alignof(PyObjectArenaAllocator), "arena align");
SAME_MEMBER(PyObjectArenaAllocator, ctx);
SAME_MEMBER(PyObjectArenaAllocator, alloc);
SAME_MEMBER(PyObjectArenaAllocator, free);

/* PY_SSIZE_T_MAX, 16 bits at a time */
_Static_assert(PM_SSIZE_MAX_POSITIVE && PY_SSIZE_T_MAX > 0, "PY_SSIZE_T_MAX sign");
_Static_assert(PM_SSIZE_MAX_W0 == (int)((size_t)PY_SSIZE_T_MAX & 0xFFFF), "PY_SSIZE_T_MAX bits 0-15");
_Static_assert(PM_SSIZE_MAX_W1 == (int)(((size_t)PY_SSIZE_T_MAX >> 16) & 0xFFFF), "bits 16-31");
_Static_assert(PM_SSIZE_MAX_W2 == (int)(((size_t)PY_SSIZE_T_MAX >> 32) & 0xFFFF), "bits 32-47");
_Static_assert(PM_SSIZE_MAX_W3 == (int)(((size_t)PY_SSIZE_T_MAX >> 48) & 0xFFFF), "bits 48-63");

/* Functions */
SAME_FUNCTION(PyMem_RawMalloc);
SAME_FUNCTION(PyMem_RawCalloc);
SAME_FUNCTION(PyMem_RawRealloc);
SAME_FUNCTION(PyMem_RawFree);
SAME_FUNCTION(PyMem_Malloc);
SAME_FUNCTION(PyMem_Calloc);
SAME_FUNCTION(PyMem_Realloc);
SAME_FUNCTION(PyMem_Free);
SAME_FUNCTION(PyObject_Malloc);
SAME_FUNCTION(PyObject_Calloc);
SAME_FUNCTION(PyObject_Realloc);
SAME_FUNCTION(PyObject_Free);
SAME_FUNCTION(PyMem_SetupDebugHooks);
SAME_FUNCTION(PyTraceMalloc_Track);
SAME_FUNCTION(PyTraceMalloc_Untrack);
/* These take the enum and struct types, distinct types in C even when
   identical (compared above): compare each against its expected form. */
_Static_assert(SAME_TYPE(void (*)(pm_PyMemAllocatorDomain, pm_PyMemAllocatorEx *),
                         __typeof__(&pm_PyMem_GetAllocator)),
               "PyMem_GetAllocator (pymalloc.h)");
_Static_assert(SAME_TYPE(void (*)(PyMemAllocatorDomain, PyMemAllocatorEx *),
                         __typeof__(&PyMem_GetAllocator)),
               "PyMem_GetAllocator (CPython)");
_Static_assert(SAME_TYPE(void (*)(pm_PyMemAllocatorDomain, pm_PyMemAllocatorEx *),
                         __typeof__(&pm_PyMem_SetAllocator)),
               "PyMem_SetAllocator (pymalloc.h)");
_Static_assert(SAME_TYPE(void (*)(PyMemAllocatorDomain, PyMemAllocatorEx *),
                         __typeof__(&PyMem_SetAllocator)),
               "PyMem_SetAllocator (CPython)");

_Static_assert(SAME_TYPE(void (*)(pm_PyObjectArenaAllocator *),
                         __typeof__(&pm_PyObject_GetArenaAllocator)) &&
                   SAME_TYPE(void (*)(pm_PyObjectArenaAllocator *),
                             __typeof__(&pm_PyObject_SetArenaAllocator)),
               "PyObject_Get/SetArenaAllocator (pymalloc.h)");
_Static_assert(SAME_TYPE(void (*)(PyObjectArenaAllocator *), __typeof__(&PyObject_GetArenaAllocator)) &&
                   SAME_TYPE(void (*)(PyObjectArenaAllocator *),
                             __typeof__(&PyObject_SetArenaAllocator)),
               "PyObject_Get/SetArenaAllocator (CPython)");

/* The renamed functions the pymalloc.h scenario calls: forwarders. */
void *pm_PyMem_Malloc(size_t n) { return PyMem_Malloc(n); }
void *pm_PyMem_Realloc(void *p, size_t n) { return PyMem_Realloc(p, n); }
void pm_PyMem_Free(void *p) { PyMem_Free(p); }
void *pm_PyObject_Malloc(size_t n) { return PyObject_Malloc(n); }
void *pm_PyObject_Realloc(void *p, size_t n) { return PyObject_Realloc(p, n); }
void pm_PyObject_Free(void *p) { PyObject_Free(p); }

/* ---- run time: the macros, side by side -------------------------------- */

enum { MAX_LOG = 256 };
typedef struct {
    char what[8]; /* "m.malloc", ... abbreviated: domain letter + op */
    size_t a, b;
} call_t;

static call_t log_[MAX_LOG];
static int nlog;
static PyMemAllocatorEx prev[3];

static void record(char domain, char op, size_t a, size_t b)
{
    CHECK(nlog < MAX_LOG);
    log_[nlog].what[0] = domain;
    log_[nlog].what[1] = op;
    log_[nlog].what[2] = '\0';
    log_[nlog].a = a;
    log_[nlog].b = b;
    nlog++;
}

static char letter(void *ctx) { return ctx == &prev[PYMEM_DOMAIN_MEM] ? 'm' : 'o'; }

static void *log_malloc(void *ctx, size_t n)
{
    PyMemAllocatorEx *p = ctx;
    record(letter(ctx), 'M', n, 0);
    return p->malloc(p->ctx, n);
}
static void *log_calloc(void *ctx, size_t n, size_t s)
{
    PyMemAllocatorEx *p = ctx;
    record(letter(ctx), 'C', n, s);
    return p->calloc(p->ctx, n, s);
}
static void *log_realloc(void *ctx, void *ptr, size_t n)
{
    PyMemAllocatorEx *p = ctx;
    record(letter(ctx), 'R', ptr != NULL, n);
    return p->realloc(p->ctx, ptr, n);
}
static void log_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *p = ctx;
    record(letter(ctx), 'F', ptr != NULL, 0);
    p->free(p->ctx, ptr);
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyMem_Malloc);
    for (int d = PYMEM_DOMAIN_MEM; d <= PYMEM_DOMAIN_OBJ; d++) {
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &prev[d]);
        PyMemAllocatorEx hook = {&prev[d], log_malloc, log_calloc, log_realloc, log_free};
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &hook);
    }
    scenario_result ours = scenario_pymalloc(), theirs;
    call_t ours_log[MAX_LOG];
    int ours_n = nlog;
    memcpy(ours_log, log_, sizeof log_);
    nlog = 0;
    theirs = scenario_cpython();
    for (int d = PYMEM_DOMAIN_MEM; d <= PYMEM_DOMAIN_OBJ; d++)
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &prev[d]);

    CHECKF(ours_n == nlog, "pymalloc.h made %d calls, CPython's macros %d", ours_n, nlog);
    CHECK(ours_n >= 20);
    for (int i = 0; i < nlog; i++)
        CHECKF(strcmp(ours_log[i].what, log_[i].what) == 0 && ours_log[i].a == log_[i].a &&
                   ours_log[i].b == log_[i].b,
               "call %d: pymalloc.h %s(%zu, %zu), CPython %s(%zu, %zu)", i, ours_log[i].what,
               ours_log[i].a, ours_log[i].b, log_[i].what, log_[i].a, log_[i].b);
    CHECK(ours.nresults == theirs.nresults && ours.nresults > 10);
    for (int i = 0; i < ours.nresults; i++)
        CHECKF(ours.results[i] == theirs.results[i], "result %d: pymalloc.h %ld, CPython %ld", i,
               ours.results[i], theirs.results[i]);
    printf("macros: %d calls and %d results identical\n", nlog, ours.nresults);
    report_done("abi_layout");
    return 0;
}
