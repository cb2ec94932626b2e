/* pymalloc_gc.h: the object layer and CPython's cycle collector of
 * pymalloc-rs (crate pymalloc-gc, module ffi). A fragment for pymalloc.h.
 *
 * CPython's names where CPython has the function; PyMemGc_* for what
 * CPython exposes only through the Python-level gc module. Like CPython's,
 * every function assumes the caller holds the embedder's lock (the GIL).
 *
 * Object layout (CPython 3.11):   [PyGC_Head: 2 words][PyObject ...]
 * A container type sets Py_TPFLAGS_HAVE_GC, tp_traverse and tp_clear.
 */
#ifndef PYMALLOC_GC_H
#define PYMALLOC_GC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PYMALLOC_HAVE_PY_SSIZE_T
#define PYMALLOC_HAVE_PY_SSIZE_T
typedef ssize_t Py_ssize_t;
#endif

typedef struct PyMemGc_TypeObject PyMemGc_TypeObject;
typedef struct PyMemGc_FreeLists PyMemGc_FreeLists; /* opaque */

typedef struct {
    Py_ssize_t ob_refcnt;
    const PyMemGc_TypeObject *ob_type;
} PyObject;

typedef struct {
    PyObject ob_base;
    Py_ssize_t ob_size;
} PyVarObject;

typedef int (*visitproc)(PyObject *, void *);
typedef int (*traverseproc)(PyObject *, visitproc, void *);
typedef int (*inquiry)(PyObject *);
typedef void (*destructor)(PyObject *);

#define Py_TPFLAGS_HAVE_GC (1UL << 14)

/* The type descriptor: the slots of PyTypeObject the object layer uses. */
struct PyMemGc_TypeObject {
    const char *tp_name;
    Py_ssize_t tp_basicsize;   /* header included */
    Py_ssize_t tp_itemsize;
    unsigned long tp_flags;
    destructor tp_dealloc;     /* NULL: untrack, clear weakrefs, tp_clear, GC_Del */
    traverseproc tp_traverse;
    inquiry tp_clear;
    destructor tp_finalize;    /* PEP 442: at most once, may resurrect */
    destructor tp_del;         /* legacy finalizer: cycles become gc.garbage */
    PyMemGc_FreeLists *tp_freelist; /* optional */
};

/* Objects */
PyObject *_PyObject_New(const PyMemGc_TypeObject *tp);
PyVarObject *_PyObject_NewVar(const PyMemGc_TypeObject *tp, Py_ssize_t nitems);
PyObject *PyObject_Init(PyObject *op, const PyMemGc_TypeObject *tp);
PyVarObject *PyObject_InitVar(PyVarObject *op, const PyMemGc_TypeObject *tp, Py_ssize_t size);
void PyObject_Del(void *op);

PyObject *_PyObject_GC_New(const PyMemGc_TypeObject *tp);
PyVarObject *_PyObject_GC_NewVar(const PyMemGc_TypeObject *tp, Py_ssize_t nitems);
PyVarObject *_PyObject_GC_Resize(PyVarObject *op, Py_ssize_t nitems);
void PyObject_GC_Del(void *op);
void PyObject_GC_Track(void *op);
void PyObject_GC_UnTrack(void *op);
int PyObject_GC_IsTracked(PyObject *op);
int PyObject_GC_IsFinalized(PyObject *op);

#define PyObject_New(type, typeobj) ((type *)_PyObject_New(typeobj))
#define PyObject_NewVar(type, typeobj, n) ((type *)_PyObject_NewVar((typeobj), (n)))
#define PyObject_GC_New(type, typeobj) ((type *)_PyObject_GC_New(typeobj))
#define PyObject_GC_NewVar(type, typeobj, n) ((type *)_PyObject_GC_NewVar((typeobj), (n)))
#define PyObject_GC_Resize(type, op, n) ((type *)_PyObject_GC_Resize((PyVarObject *)(op), (n)))

/* Reference counts */
void Py_IncRef(PyObject *op);
void Py_DecRef(PyObject *op);
Py_ssize_t Py_REFCNT(PyObject *op);

/* The trashcan (Py_TRASHCAN_BEGIN/END): in tp_dealloc, after untracking:
 *   if (!PyMemGc_Trashcan_Begin(op)) return;  ...  PyMemGc_Trashcan_End(); */
int PyMemGc_Trashcan_Begin(PyObject *op);
void PyMemGc_Trashcan_End(void);

/* Weak references (to container objects) */
typedef void (*PyMemGc_WeakCallback)(PyObject *weakref, void *data);
typedef void (*PyMemGc_WeakDataDrop)(void *data);
PyObject *PyMemGc_Weakref_New(PyObject *ob, PyMemGc_WeakCallback callback, void *data,
                              PyMemGc_WeakDataDrop data_drop);
PyObject *PyWeakref_GetObject(PyObject *ref); /* borrowed; NULL once dead */
void PyObject_ClearWeakRefs(PyObject *op);

/* The collector (C API) */
Py_ssize_t PyGC_Collect(void);
int PyGC_Enable(void);
int PyGC_Disable(void);
int PyGC_IsEnabled(void);

/* The gc module */
#define PyMemGc_DEBUG_STATS 1
#define PyMemGc_DEBUG_COLLECTABLE 2
#define PyMemGc_DEBUG_UNCOLLECTABLE 4
#define PyMemGc_DEBUG_SAVEALL 32
#define PyMemGc_DEBUG_LEAK (2 | 4 | 32)

typedef struct {
    Py_ssize_t collections, collected, uncollectable;
} PyMemGc_GenStats;

typedef struct {
    int phase; /* 0 "start", 1 "stop" */
    int generation;
    Py_ssize_t collected, uncollectable;
} PyMemGc_CallbackInfo;

typedef void (*PyMemGc_Callback)(const PyMemGc_CallbackInfo *info, void *data);

Py_ssize_t PyMemGc_Collect(int generation); /* -1: invalid generation */
void PyMemGc_GetThreshold(Py_ssize_t out[3]);
void PyMemGc_SetThreshold(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t t2);
void PyMemGc_GetCount(Py_ssize_t out[3]);
void PyMemGc_GetStats(PyMemGc_GenStats out[3]);
void PyMemGc_SetDebug(unsigned long flags);
unsigned long PyMemGc_GetDebug(void);
void PyMemGc_Freeze(void);
void PyMemGc_Unfreeze(void);
Py_ssize_t PyMemGc_GetFreezeCount(void);
/* Write up to cap new references; return the total (or -1). */
Py_ssize_t PyMemGc_GetObjects(int generation /* -1: all */, PyObject **out, Py_ssize_t cap);
Py_ssize_t PyMemGc_GetReferrers(PyObject *const *objs, Py_ssize_t n, PyObject **out, Py_ssize_t cap);
Py_ssize_t PyMemGc_GetReferents(PyObject *const *objs, Py_ssize_t n, PyObject **out, Py_ssize_t cap);
Py_ssize_t PyMemGc_GarbageSize(void);
PyObject *PyMemGc_GarbageGet(Py_ssize_t i); /* borrowed */
void PyMemGc_GarbageClear(void);
uint64_t PyMemGc_AddCallback(PyMemGc_Callback cb, void *data);
int PyMemGc_RemoveCallback(uint64_t id);

/* Free lists: objects of basicsize + index * itemsize bytes for indexes
 * first..first+n-1, at most max blocks each; full collections empty them. */
PyMemGc_FreeLists *PyMemGc_FreeLists_New(const char *name, Py_ssize_t basicsize,
                                         Py_ssize_t itemsize, Py_ssize_t first,
                                         Py_ssize_t n, Py_ssize_t max);
void PyMemGc_FreeLists_Clear(PyMemGc_FreeLists *fl);
void PyMemGc_FreeLists_Free(PyMemGc_FreeLists *fl);
Py_ssize_t PyMemGc_FreeLists_Len(const PyMemGc_FreeLists *fl, Py_ssize_t index);
/* The sys._debugmallocstats() lines; returns the full length. */
Py_ssize_t PyMemGc_FreeLists_Stats(const PyMemGc_FreeLists *fl, char *buf, Py_ssize_t cap);

#ifdef __cplusplus
}
#endif
#endif /* PYMALLOC_GC_H */
