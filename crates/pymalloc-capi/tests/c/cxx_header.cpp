// pymalloc.h from C++: it compiles cleanly (-Wall -Wextra -pedantic), its
// declarations have C linkage (the program links), and the macros work.
#include <pymalloc.h>

#include <cstdio>
#include <cstring>

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,      \
                         __LINE__, #cond);                                   \
            return 1;                                                        \
        }                                                                    \
    } while (0)

int main()
{
    int *v = PyMem_New(int, 4);
    CHECK(v != NULL);
    v[3] = 7;
    CHECK(PyMem_Resize(v, int, 100) != NULL && v[3] == 7);
    int *old = v;
    CHECK(PyMem_Resize(v, int, static_cast<size_t>(PY_SSIZE_T_MAX)) == NULL && v == NULL);
    v = old;
    PyMem_Del(v);
    CHECK(PyMem_NEW(double, static_cast<size_t>(-1)) == NULL);
    void *o = PyObject_MALLOC(10);
    o = PyObject_REALLOC(o, 20);
    PyObject_FREE(o);
    PyMemAllocatorEx a;
    std::memset(&a, 0, sizeof a);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &a);
    CHECK(a.malloc != NULL && a.free != NULL);
    PyObjectArenaAllocator arena;
    PyObject_GetArenaAllocator(&arena);
    CHECK(arena.alloc != NULL);
    PyMalloc_Stats s;
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK && s.version == PYMALLOC_STATS_VERSION);
    CHECK(PyMalloc_SetupByName("nonsense") == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(std::strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
    CHECK(PyTraceMalloc_Track(0, 0, 0) == -2);
    std::printf("cxx_header: ok\n");
    return 0;
}
