/* One use of every memory macro, included twice by abi_layout.c: once with
   pymalloc.h's macros in scope, once with CPython's. Define SCENARIO (the
   function's name) and SCENARIO_SSIZE (the Py_ssize_t type in scope) first.
   The function records the value of every expression that does not depend
   on addresses; a hook logs the calls the macros make. Both must agree. */

#ifndef MACRO_SCENARIO_TYPES
#define MACRO_SCENARIO_TYPES
typedef struct {
    long results[64];
    int nresults;
} scenario_result;
#define PUT(r, v) ((r).results[(r).nresults++] = (long)(v))
#endif

static scenario_result SCENARIO(void)
{
    scenario_result r = {{0}, 0};

    /* PyMem_New / PyMem_Resize: success, data kept, p assigned */
    int *a = PyMem_New(int, 10);
    PUT(r, a != NULL);
    for (int i = 0; i < 10; i++) a[i] = 100 + i;
    int *keep = a;
    PUT(r, PyMem_Resize(a, int, 20) != NULL);
    PUT(r, a != NULL && a[9] == 109);

    /* overflow: refused by the macro, p clobbered with NULL */
    keep = a;
    PUT(r, PyMem_Resize(a, int, (size_t)PY_SSIZE_T_MAX / sizeof(int) + 1) == NULL);
    PUT(r, a == NULL);
    a = keep;
    PUT(r, PyMem_RESIZE(a, int, (SCENARIO_SSIZE)-1) == NULL);
    PUT(r, a == NULL);
    a = keep;
    /* at the limit: passes the macro, the allocator refuses */
    PUT(r, PyMem_Resize(a, int, (size_t)PY_SSIZE_T_MAX / sizeof(int)) == NULL);
    PUT(r, a == NULL);
    a = keep;
    PUT(r, a[0] == 100 && a[9] == 109);

    PUT(r, PyMem_New(double, (size_t)PY_SSIZE_T_MAX / sizeof(double) + 1) == NULL);
    PUT(r, PyMem_NEW(double, (size_t)PY_SSIZE_T_MAX / sizeof(double)) == NULL);
    PUT(r, PyMem_New(long, -1) == NULL);
    PUT(r, PyMem_NEW(char, (size_t)PY_SSIZE_T_MAX + 1) == NULL);

    /* how many times the count is evaluated */
    int n = 5;
    short *s = PyMem_New(short, n++);
    PUT(r, n);
    PUT(r, s != NULL);
    n = 3;
    PUT(r, PyMem_Resize(s, short, n++) != NULL);
    PUT(r, n);
    n = 0;
    char *z = PyMem_NEW(char, n++);
    PUT(r, z != NULL);
    PUT(r, n);
    PUT(r, PyMem_RESIZE(z, char, 0) != NULL);
    PyMem_Del(s);
    PyMem_DEL(z);

    /* upper-case MEM aliases */
    char *m = PyMem_MALLOC(40);
    PUT(r, m != NULL);
    m = PyMem_REALLOC(m, 4000);
    PUT(r, m != NULL);
    PUT(r, PyMem_REALLOC(m, (size_t)PY_SSIZE_T_MAX + 1) == NULL);
    PyMem_FREE(m);
    PyMem_FREE(NULL);
    PyMem_Del(NULL);
    PyMem_Del(a);

    /* OBJ aliases, also as function pointers */
    void *(*om)(size_t) = PyObject_MALLOC;
    void *(*orl)(void *, size_t) = PyObject_REALLOC;
    void (*of)(void *) = PyObject_FREE;
    void (*od)(void *) = PyObject_Del;
    void (*od2)(void *) = PyObject_DEL;
    void (*md)(void *) = PyMem_Del;
    void (*md2)(void *) = PyMem_DEL;
    char *o = PyObject_MALLOC(16);
    PUT(r, o != NULL);
    o = PyObject_REALLOC(o, 700);
    PUT(r, o != NULL);
    PyObject_FREE(o);
    o = om(1);
    o = orl(o, 2);
    of(o);
    od(PyObject_MALLOC(3));
    od2(PyObject_REALLOC(NULL, 4));
    PyObject_Del(PyObject_MALLOC(5));
    PyObject_DEL(PyObject_MALLOC(6));
    md(PyMem_MALLOC(7));
    md2(PyMem_New(char, 8));
    int count = r.nresults;
    PUT(r, count);
    return r;
}
