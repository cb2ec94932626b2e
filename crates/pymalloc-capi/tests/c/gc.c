/* The object layer and the cycle collector through libpymalloc, as a C
   extension would use them: a list type with tp_traverse/tp_clear/tp_dealloc,
   objects from _PyObject_GC_NewVar, references counted with Py_IncRef and
   Py_DecRef, cycles collected by PyGC_Collect and by the automatic
   generation-0 threshold, weak-reference callbacks, gc.garbage for legacy
   finalizers, plain objects, free lists, and objects taken from the OBJ
   domain (a counting hook on OBJ sees every object allocation). */
#include "check.h"

#include <pymalloc.h>

/* ---- a counting hook on OBJ ------------------------------------------ */

static PyMemAllocatorEx obj_base;
static size_t obj_mallocs, obj_frees;

static void *hook_malloc(void *ctx, size_t n)
{
    (void)ctx;
    obj_mallocs++;
    return obj_base.malloc(obj_base.ctx, n);
}
static void *hook_calloc(void *ctx, size_t a, size_t b)
{
    (void)ctx;
    obj_mallocs++;
    return obj_base.calloc(obj_base.ctx, a, b);
}
static void *hook_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return obj_base.realloc(obj_base.ctx, p, n);
}
static void hook_free(void *ctx, void *p)
{
    (void)ctx;
    if (p) obj_frees++;
    obj_base.free(obj_base.ctx, p);
}

/* ---- a list type -------------------------------------------------------- */

typedef struct {
    PyVarObject ob_base;
    PyObject *items[1];
} List;

static size_t list_deallocs;

static int list_traverse(PyObject *op, visitproc visit, void *arg)
{
    List *l = (List *)op;
    for (Py_ssize_t i = 0; i < l->ob_base.ob_size; i++) {
        if (l->items[i]) {
            int r = visit(l->items[i], arg);
            if (r) return r;
        }
    }
    return 0;
}

static int list_clear(PyObject *op)
{
    List *l = (List *)op;
    for (Py_ssize_t i = 0; i < l->ob_base.ob_size; i++) {
        PyObject *x = l->items[i];
        l->items[i] = NULL;
        if (x) Py_DecRef(x);
    }
    return 0;
}

static void list_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    list_clear(op);
    list_deallocs++;
    PyObject_GC_Del(op);
}

static PyMemGc_TypeObject ListType = {
    .tp_name = "list",
    .tp_basicsize = sizeof(PyVarObject),
    .tp_itemsize = sizeof(PyObject *),
    .tp_flags = Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = list_dealloc,
    .tp_traverse = list_traverse,
    .tp_clear = list_clear,
};

static List *new_list(Py_ssize_t n)
{
    List *l = PyObject_GC_NewVar(List, &ListType, n);
    CHECK(l != NULL);
    CHECK(ALIGNED16(l));
    CHECK(l->ob_base.ob_size == n && Py_REFCNT((PyObject *)l) == 1);
    for (Py_ssize_t i = 0; i < n; i++) l->items[i] = NULL;
    PyObject_GC_Track(l);
    return l;
}

/* l->items[i] = x, taking a new reference. */
static void set(List *l, Py_ssize_t i, List *x)
{
    Py_IncRef((PyObject *)x);
    l->items[i] = (PyObject *)x;
}

/* A type with a legacy finalizer (tp_del): its cycles go to gc.garbage. */
static void legacy_del(PyObject *op) { (void)op; }
static PyMemGc_TypeObject LegacyType = {
    .tp_name = "legacy",
    .tp_basicsize = sizeof(PyVarObject),
    .tp_itemsize = sizeof(PyObject *),
    .tp_flags = Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = list_dealloc,
    .tp_traverse = list_traverse,
    .tp_clear = list_clear,
    .tp_del = legacy_del,
};

/* A plain object (no GC header). */
typedef struct {
    PyObject ob_base;
    double value;
} Float;
static PyMemGc_TypeObject FloatType = {
    .tp_name = "float",
    .tp_basicsize = sizeof(Float),
};

static size_t weak_callbacks;
static void on_dead(PyObject *weakref, void *data)
{
    (void)weakref;
    CHECK(data == (void *)&weak_callbacks);
    weak_callbacks++;
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyGC_Collect);

    PyMemAllocatorEx hook = {NULL, hook_malloc, hook_calloc, hook_realloc, hook_free};
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj_base);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);

    CHECK(PyGC_IsEnabled() == 1);
    Py_ssize_t thresholds[3];
    PyMemGc_GetThreshold(thresholds);
    CHECK(thresholds[0] == 700 && thresholds[1] == 10 && thresholds[2] == 10);
    CHECK(PyGC_Collect() == 0);

    /* A ring of 1000 lists, dropped: only the collector frees it. */
    size_t before = obj_mallocs;
    PyGC_Disable();
    List *first = new_list(1), *prev = first;
    for (int i = 1; i < 1000; i++) {
        List *l = new_list(1);
        set(prev, 0, l);
        Py_DecRef((PyObject *)l);
        prev = l;
    }
    set(prev, 0, first);
    CHECK(obj_mallocs - before == 1000); /* every object came from OBJ */
    CHECK(PyObject_GC_IsTracked((PyObject *)first) == 1);
    PyObject *wr = PyMemGc_Weakref_New((PyObject *)first, on_dead, &weak_callbacks, NULL);
    CHECK(wr != NULL && PyWeakref_GetObject(wr) == (PyObject *)first);
    Py_DecRef((PyObject *)first);
    CHECK(list_deallocs == 0);
    size_t frees = obj_frees;
    CHECK(PyGC_Collect() == 0); /* as in CPython: nothing while disabled */
    CHECK(list_deallocs == 0);
    CHECK(PyMemGc_Collect(2) == 1000); /* gc.collect() runs regardless */
    CHECK(list_deallocs == 1000);
    CHECK(obj_frees - frees == 1000);
    CHECK(weak_callbacks == 1);
    CHECK(PyWeakref_GetObject(wr) == NULL);
    Py_DecRef(wr);
    CHECK(PyGC_Collect() == 0);

    /* Acyclic objects go when their count reaches zero. */
    List *a = new_list(2), *b = new_list(0);
    set(a, 0, b);
    Py_DecRef((PyObject *)b);
    Py_DecRef((PyObject *)a);
    CHECK(list_deallocs == 1002);

    /* The generation-0 threshold: with collection enabled, garbage cycles
       are collected as objects are made, without PyGC_Collect. */
    PyGC_Enable();
    PyMemGc_SetThreshold(100, 10, 10);
    PyMemGc_GenStats stats0[3];
    PyMemGc_GetStats(stats0);
    size_t deallocs = list_deallocs;
    for (int i = 0; i < 5000; i++) {
        List *x = new_list(1);
        set(x, 0, x); /* a self-cycle */
        Py_DecRef((PyObject *)x);
    }
    PyMemGc_GenStats stats1[3];
    PyMemGc_GetStats(stats1);
    CHECKF(stats1[0].collections - stats0[0].collections >= 40, "%zd young collections",
           stats1[0].collections - stats0[0].collections);
    CHECKF(list_deallocs - deallocs >= 4800, "%zu freed automatically", list_deallocs - deallocs);
    PyGC_Collect();
    CHECK(list_deallocs - deallocs == 5000);
    PyMemGc_SetThreshold(700, 10, 10);

    /* Legacy finalizers: the cycle is uncollectable and lands in garbage. */
    List *g = PyObject_GC_NewVar(List, &LegacyType, 1);
    CHECK(g != NULL);
    g->items[0] = NULL;
    PyObject_GC_Track(g);
    set(g, 0, g);
    Py_DecRef((PyObject *)g);
    PyGC_Collect();
    CHECK(PyMemGc_GarbageSize() == 1 && PyMemGc_GarbageGet(0) == (PyObject *)g);
    PyMemGc_GarbageClear();
    CHECK(PyMemGc_GarbageSize() == 0);

    /* Plain objects: from OBJ, freed by PyObject_Del. */
    before = obj_mallocs;
    Float *f = PyObject_New(Float, &FloatType);
    CHECK(f != NULL && obj_mallocs - before == 1 && Py_REFCNT((PyObject *)f) == 1);
    f->value = 1.5;
    PyObject_Del(f);

    /* Free lists: blocks come back to the list, and the stats line. */
    PyMemGc_FreeLists *fl = PyMemGc_FreeLists_New("float", sizeof(Float), 0, 0, 1, 80);
    CHECK(fl != NULL && PyMemGc_FreeLists_Len(fl, 0) == 0);
    PyMemGc_FreeLists_Clear(fl);
    char line[256];
    Py_ssize_t len = PyMemGc_FreeLists_Stats(fl, line, sizeof line);
    CHECK(len > 0 && (size_t)len < sizeof line);
    CHECKF(strstr(line, "free ") != NULL, "%s", line);
    PyMemGc_FreeLists_Free(fl);

    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj_base);
    report_done("gc");
    return 0;
}
