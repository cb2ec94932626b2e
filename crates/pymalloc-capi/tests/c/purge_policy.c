/* PyMalloc_SetPurgePolicy and the background decay thread, through the C
 * library:
 *
 *   purge_policy run        names, errors, and an idle program giving back
 *                           what it freed (decay), or at once (never)
 *   purge_policy env-error  PyMalloc_InitFromEnv with a bad PYMALLOC_PURGE */
#include "check.h"

#include <pymalloc.h>
#include <time.h>

static size_t arenas_now(void)
{
    PyMalloc_Stats s;
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == 0);
    return s.arenas_current;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

enum { N = 64 * 1024 }; /* 128-byte blocks: 8 MiB */
static void *blocks[N];

static size_t build_and_free(void)
{
    for (int i = 0; i < N; i++) {
        blocks[i] = PyObject_Malloc(128);
        CHECK(blocks[i] != NULL);
    }
    size_t peak = arenas_now();
    for (int i = 0; i < N; i++) PyObject_Free(blocks[i]);
    return peak;
}

int main(int argc, char **argv)
{
    report_linkage((void *)(uintptr_t)PyMalloc_SetPurgePolicy);
    CHECK(argc == 2);
    if (strcmp(argv[1], "env-error") == 0) {
        CHECK(PyMalloc_InitFromEnv() == PYMALLOC_ERR_UNKNOWN_NAME);
        CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
        report_done("purge_policy");
        return 0;
    }
    CHECK(PyMalloc_SetPurgePolicy(NULL) == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(PyMalloc_SetPurgePolicy("soon") == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(PyMalloc_SetPurgePolicy("decay:x") == PYMALLOC_ERR_UNKNOWN_NAME);
    CHECK(strstr(PyMalloc_PurgePolicyNames(), "decay:MS") != NULL);

    /* Decay: freed arenas stay for reuse, then the background thread gives
       them back while this thread makes no call. */
    CHECK(PyMalloc_SetPurgePolicy("decay:50") == PYMALLOC_OK);
    size_t peak = build_and_free();
    CHECKF(peak >= 8, "%zu arenas at the peak", peak);
    CHECKF(arenas_now() + 1 >= peak, "decay keeps free arenas at first (%zu of %zu)", arenas_now(), peak);
    int waited = 0;
    while (arenas_now() > 1 && waited < 5000) {
        sleep_ms(20);
        waited += 20;
    }
    CHECKF(arenas_now() <= 1, "%zu arenas still held after %d ms idle", arenas_now(), waited);
    printf("decay: %zu arenas at the peak, %zu after %d ms idle\n", peak, arenas_now(), waited);

    /* CPython's rule: the arenas go back as they empty. */
    CHECK(PyMalloc_SetPurgePolicy("never") == PYMALLOC_OK);
    build_and_free();
    CHECKF(arenas_now() <= 2, "never: %zu arenas held", arenas_now());
    CHECK(PyMalloc_Decay() == 0);
    report_done("purge_policy");
    return 0;
}
