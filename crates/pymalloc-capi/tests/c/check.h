/* Shared by the C test programs: CHECK(), and what the harness in
   tests/c_programs.rs expects every program to print. Include it first. */
#ifndef PYMALLOC_TEST_CHECK_H
#define PYMALLOC_TEST_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, fork, pthread */
#endif

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Atomic: threads check too. */
static atomic_ulong checks_passed;

/* A failed check prints its file, line and expression, and exits with 1. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            fflush(stderr);                                                  \
            exit(1);                                                         \
        }                                                                    \
        checks_passed++;                                                     \
    } while (0)

/* Like CHECK, with a printf-style explanation. */
#define CHECKF(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            fflush(stderr);                                                  \
            exit(1);                                                         \
        }                                                                    \
        checks_passed++;                                                     \
    } while (0)

#define ALIGNED16(p) ((((uintptr_t)(p)) & 15u) == 0)

/* Call it as report_linkage((void *)(uintptr_t)function). Prints
   "linked: shared <path of libpymalloc.so>" when the function lives in the
   shared library, "linked: static" when it lives in the executable. The
   harness checks the line against how (and against what) it linked. */
static void report_linkage(void *fn)
{
    Dl_info info;
    CHECK(dladdr(fn, &info) != 0 && info.dli_fname != NULL);
    if (strstr(info.dli_fname, "libpymalloc.so"))
        printf("linked: shared %s\n", info.dli_fname);
    else
        printf("linked: static\n");
}

/* The last line of every successful program; the harness requires it. */
static void report_done(const char *program)
{
    printf("%s: %lu checks passed\n", program, atomic_load(&checks_passed));
    fflush(stdout);
}

#endif
