/* The debug hooks catch a fault in a child process.
 *
 *   debug_fault FAULT DOMAIN OTHER SERIAL SETUP
 *
 * FAULT   overflow (write one byte past a 16-byte block, then free it),
 *         underflow (write before it), misuse (free it with domain OTHER),
 *         realloc_overflow (overflow, then realloc)
 * DOMAIN  r, m or o: the domain the block comes from (OTHER likewise)
 * SERIAL  serial or noserial: PyMalloc_SetDebugReportSerial
 * SETUP   hooks (PyMem_SetupDebugHooks over the default configuration) or a
 *         configuration name for PyMalloc_SetupByName (pymalloc_debug, ...)
 *
 * The parent forks a child that commits the fault with its stderr on a
 * pipe, checks that the child died of SIGABRT and that the report has the
 * shape of CPython's, then prints the report between "=== report" and
 * "=== end" for the harness, which compares it with CPython 3.11's text. */
#include "check.h"

#include <pymalloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void *dmalloc(char d, size_t n)
{
    return d == 'r' ? PyMem_RawMalloc(n) : d == 'm' ? PyMem_Malloc(n) : PyObject_Malloc(n);
}

static void dfree(char d, void *p)
{
    if (d == 'r') PyMem_RawFree(p);
    else if (d == 'm') PyMem_Free(p);
    else PyObject_Free(p);
}

static void *drealloc(char d, void *p, size_t n)
{
    return d == 'r' ? PyMem_RawRealloc(p, n) : d == 'm' ? PyMem_Realloc(p, n) : PyObject_Realloc(p, n);
}

static void child(const char *fault, char d, char other, int serial, const char *setup)
{
    PyMalloc_SetDebugReportSerial(serial);
    if (strcmp(setup, "hooks") == 0) PyMem_SetupDebugHooks();
    else if (strcmp(setup, "traced") == 0) {
        /* The tracer over the debug hooks, as tracemalloc over
           PYTHONMALLOC=debug: the report shows where the block was made. */
        CHECK(PyMalloc_SetupByName("pymalloc_debug") == PYMALLOC_OK);
        CHECK(PyMalloc_TraceStart(3) == PYMALLOC_OK);
    } else CHECK(PyMalloc_SetupByName(setup) == PYMALLOC_OK);
    unsigned char *p = dmalloc(d, 16);
    CHECK(p != NULL);
    if (strcmp(fault, "overflow") == 0) {
        p[16] = 'x';
        dfree(d, p);
    } else if (strcmp(fault, "underflow") == 0) {
        p[-1] = 'x';
        p[-3] = 'y';
        dfree(d, p);
    } else if (strcmp(fault, "misuse") == 0) {
        dfree(other, p);
    } else if (strcmp(fault, "realloc_overflow") == 0) {
        p[17] = 'z';
        drealloc(d, p, 100);
    } else {
        fprintf(stderr, "unknown fault %s\n", fault);
        _exit(2);
    }
    fprintf(stderr, "the fault was not detected\n");
    _exit(0);
}

int main(int argc, char **argv)
{
    CHECK(argc == 6);
    const char *fault = argv[1], *setup = argv[5];
    char d = argv[2][0], other = argv[3][0];
    int serial = strcmp(argv[4], "serial") == 0;
    report_linkage((void *)(uintptr_t)PyMem_SetupDebugHooks);
    fflush(stdout);

    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        child(fault, d, other, serial, setup);
    }
    close(fds[1]);
    static char report[65536];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], report + len, sizeof report - 1 - len)) > 0) len += (size_t)r;
    report[len] = '\0';
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "child status %d, stderr:\n%s",
           status, report);

    /* The shape of CPython's report. */
    CHECK(strncmp(report, "Debug memory block at address p=0x", 34) == 0);
    char api[32];
    snprintf(api, sizeof api, ": API '%c'\n", d);
    CHECK(strstr(report, api) != NULL);
    CHECK(strstr(report, "\n    16 bytes originally requested\n") != NULL);
    if (strcmp(setup, "traced") == 0)
        CHECKF(strstr(report, "\nMemory block allocated at (most recent call first):\n  File \"") != NULL, "%s", report);
    else
        CHECK(strstr(report, "\nEnable tracemalloc to get the memory block allocation traceback\n\n"
                             "Fatal Python error: _PyMem_DebugRaw") != NULL);
    CHECK((strstr(report, "The block was made by call #") != NULL) == serial);
    const char *fatal = strstr(report, "Fatal Python error: ");
    CHECK(fatal != NULL && report[len - 1] == '\n');
    CHECK(strchr(fatal, '\n') == report + len - 1); /* the last line */
    if (strcmp(fault, "overflow") == 0) {
        CHECK(strstr(report, "        at tail+0: 0x78 *** OUCH\n") != NULL);
        CHECK(strcmp(fatal, "Fatal Python error: _PyMem_DebugRawFree: bad trailing pad byte\n") == 0);
    } else if (strcmp(fault, "underflow") == 0) {
        CHECK(strstr(report, "        at p-1: 0x78 *** OUCH\n") != NULL);
        CHECK(strcmp(fatal, "Fatal Python error: _PyMem_DebugRawFree: bad leading pad byte\n") == 0);
    } else if (strcmp(fault, "misuse") == 0) {
        char want[128];
        snprintf(want, sizeof want,
                 "Fatal Python error: _PyMem_DebugRawFree: bad ID: Allocated using API '%c', "
                 "verified using API '%c'\n",
                 d, other);
        CHECK(strcmp(fatal, want) == 0);
    } else {
        CHECK(strstr(report, "        at tail+1: 0x7a *** OUCH\n") != NULL);
        CHECK(strcmp(fatal, "Fatal Python error: _PyMem_DebugRawRealloc: bad trailing pad byte\n") ==
              0);
    }
    printf("=== report\n%s=== end\n", report);
    report_done("debug_fault");
    return 0;
}
