/* PyMalloc_InitFromEnv: the configuration named by PYTHONMALLOC, and the
 * statistics on stderr with PYTHONMALLOCSTATS. The harness runs it under
 * several environments:
 *
 *   env_config EXPECTED
 *
 * EXPECTED is the configuration PyMalloc_GetAllocatorName should report
 * afterwards, or "error" when PYTHONMALLOC holds an unknown name (the
 * configuration must then be left at the default). */
#include "check.h"

#include <pymalloc.h>

int main(int argc, char **argv)
{
    report_linkage((void *)(uintptr_t)PyMalloc_InitFromEnv);
    CHECK(argc == 2);
    int rc = PyMalloc_InitFromEnv();
    if (strcmp(argv[1], "error") == 0) {
        CHECK(rc == PYMALLOC_ERR_UNKNOWN_NAME);
        CHECK(strcmp(PyMalloc_GetAllocatorName(), "pymalloc") == 0);
    } else {
        CHECK(rc == PYMALLOC_OK);
        CHECKF(strcmp(PyMalloc_GetAllocatorName(), argv[1]) == 0, "configuration %s",
               PyMalloc_GetAllocatorName());
    }
    /* allocates the first arena in the pymalloc configurations */
    void *p = PyObject_Malloc(100);
    CHECK(p != NULL);
    PyObject_Free(p);
    printf("configuration: %s\n", PyMalloc_GetAllocatorName());
    report_done("env_config");
    return 0;
}
