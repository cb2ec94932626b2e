/* The C allocation API under LD_PRELOAD=libpymalloc_preload.so: every entry
 * point, glibc's rules where programs rely on them, blocks glibc handed out
 * before the library took over, threads that exit, and fork() while other
 * threads allocate. Prints "c_api: N checks passed" or fails with the line. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int checks;
#define CHECK(c)                                                            \
    do {                                                                    \
        checks++;                                                           \
        if (!(c)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

/* glibc's allocator under its second name: what a block allocated before
   the preload library was in charge looks like. */
extern void *__libc_malloc(size_t);

/* Allocated by a constructor, before main. */
static char *early;
__attribute__((constructor)) static void before_main(void)
{
    early = malloc(40);
    if (early) strcpy(early, "allocated before main");
}

/* Ours: the preload library says which object owns malloc. */
static int malloc_is_preloaded(void)
{
    Dl_info info;
    void *f = dlsym(RTLD_DEFAULT, "malloc");
    return f && dladdr(f, &info) && strstr(info.dli_fname, "libpymalloc_preload") != NULL;
}

static void entry_points(void)
{
    CHECK(early && strcmp(early, "allocated before main") == 0);
    free(early);

    for (size_t n = 1; n <= 4096; n = n * 3 / 2 + 1) {
        unsigned char *p = malloc(n);
        CHECK(p && ((uintptr_t)p & 15) == 0);
        memset(p, 0xAB, n);
        CHECK(malloc_usable_size(p) >= n);
        unsigned char *q = realloc(p, n * 2 + 7);
        CHECK(q && q[0] == 0xAB && q[n - 1] == 0xAB);
        q = realloc(q, n / 2 + 1);
        CHECK(q && q[n / 2] == 0xAB);
        free(q);
    }
    unsigned char *z = calloc(100, 5);
    CHECK(z);
    for (int i = 0; i < 500; i++) CHECK(z[i] == 0);
    free(z);
    /* malloc(0) is a unique pointer that can be freed. */
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    /* realloc(p, 0) frees p and returns NULL (glibc). */
    CHECK(realloc(malloc(10), 0) == NULL);
    CHECK(realloc(NULL, 20) != NULL);

    /* volatile: sizes the compiler cannot see are too large. */
    volatile size_t half = SIZE_MAX / 2, huge = SIZE_MAX - 64;
    errno = 0;
    CHECK(calloc(half, 4) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(NULL, half, 4) == NULL && errno == ENOMEM);
    void *ra = reallocarray(NULL, 10, 10);
    CHECK(ra);
    free(ra);
    errno = 0;
    CHECK(malloc(huge) == NULL && errno == ENOMEM);

    for (size_t align = sizeof(void *); align <= 8192; align *= 2) {
        for (size_t n = 1; n < 3000; n = n * 4 + 3) {
            void *p = NULL;
            CHECK(posix_memalign(&p, align, n) == 0 && ((uintptr_t)p % align) == 0);
            memset(p, 1, n);
            free(p);
            p = aligned_alloc(align, n);
            CHECK(p && ((uintptr_t)p % align) == 0);
            free(p);
            p = memalign(align, n);
            CHECK(p && ((uintptr_t)p % align) == 0);
            free(p);
        }
    }
    void *p = NULL;
    CHECK(posix_memalign(&p, 24, 10) == EINVAL);
    CHECK(posix_memalign(&p, 2, 10) == EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    CHECK(v && ((uintptr_t)v % (uintptr_t)page) == 0);
    free(v);
    v = pvalloc(100);
    CHECK(v && ((uintptr_t)v % (uintptr_t)page) == 0 && malloc_usable_size(v) >= (size_t)page);
    free(v);

    /* Blocks of glibc's from before: free, realloc and usable size. */
    char *g = __libc_malloc(64);
    strcpy(g, "glibc's");
    CHECK(malloc_usable_size(g) >= 64);
    g = realloc(g, 100000);
    CHECK(g && strcmp(g, "glibc's") == 0);
    free(g);
    g = __libc_malloc(32);
    free(g);
}

/* Threads that allocate, hand blocks to each other, and exit. */
enum { NT = 4, PER = 20000 };
static void *handoff[NT][PER];

static void *fill(void *arg)
{
    long t = (long)arg;
    for (int i = 0; i < PER; i++) {
        handoff[t][i] = malloc((size_t)(i % 600) + 1);
        CHECK(handoff[t][i]);
        memset(handoff[t][i], (int)t, (size_t)(i % 600) + 1);
    }
    return NULL;
}

static void *drain(void *arg)
{
    long t = (long)arg;
    for (int i = 0; i < PER; i++) {
        unsigned char *p = handoff[t][i];
        CHECK(p[0] == (unsigned char)t);
        free(p);
    }
    return NULL;
}

static void threads(void)
{
    for (int round = 0; round < 3; round++) {
        pthread_t th[NT];
        for (long t = 0; t < NT; t++) CHECK(pthread_create(&th[t], NULL, fill, (void *)t) == 0);
        for (int t = 0; t < NT; t++) CHECK(pthread_join(th[t], NULL) == 0);
        /* Freed by other threads than the (exited) ones that allocated. */
        for (long t = 0; t < NT; t++) CHECK(pthread_create(&th[t], NULL, drain, (void *)((t + 1) % NT)) == 0);
        for (int t = 0; t < NT; t++) CHECK(pthread_join(th[t], NULL) == 0);
    }
}

/* fork() while other threads allocate: the child must be able to allocate
   (no allocator lock left held by a thread that does not exist there). */
static volatile int stop;

static void *short_lived(void *arg)
{
    (void)arg;
    void *many[300];
    for (int j = 0; j < 300; j++) many[j] = malloc((size_t)j + 1);
    for (int j = 0; j < 300; j++) free(many[j]);
    return NULL;
}

static void *churn(void *arg)
{
    (void)arg;
    void *keep[256] = {0};
    unsigned i = 0;
    while (!stop) {
        unsigned k = i++ % 256;
        free(keep[k]);
        /* Small and large, and now and then many at once, so that arenas
           and new pools are taken while the main thread forks. */
        keep[k] = malloc((i * 37) % 2000 + 1);
        if (i % 4096 == 0) {
            void *many[2000];
            for (int j = 0; j < 2000; j++) many[j] = malloc(256);
            for (int j = 0; j < 2000; j++) free(many[j]);
        }
        /* A thread that exits hands its heap to the abandoned list, and the
           next one adopts it: the registry's locks. */
        if (i % 512 == 0) {
            pthread_t t;
            if (pthread_create(&t, NULL, short_lived, NULL) == 0) pthread_join(t, NULL);
        }
    }
    for (int k = 0; k < 256; k++) free(keep[k]);
    return NULL;
}

static void fork_with_threads(void)
{
    pthread_t th[2];
    for (int t = 0; t < 2; t++) CHECK(pthread_create(&th[t], NULL, churn, NULL) == 0);
    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm(10); /* a deadlock ends the child with SIGALRM */
            void *blocks[3000];
            for (int j = 0; j < 3000; j++) blocks[j] = malloc((size_t)(j % 700) + 1);
            for (int j = 0; j < 3000; j++) free(blocks[j]);
            pthread_t t;
            if (pthread_create(&t, NULL, fill, (void *)0) != 0 || pthread_join(t, NULL) != 0) _exit(3);
            for (int j = 0; j < PER; j++) free(handoff[0][j]);
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            fprintf(stderr, "child %d: status %#x\n", i, status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop = 1;
    for (int t = 0; t < 2; t++) CHECK(pthread_join(th[t], NULL) == 0);
}

int main(int argc, char **argv)
{
    int want_preloaded = argc > 1 && strcmp(argv[1], "preloaded") == 0;
    CHECK(malloc_is_preloaded() == want_preloaded);
    entry_points();
    threads();
    fork_with_threads();
    printf("c_api: %d checks passed\n", checks);
    return 0;
}
