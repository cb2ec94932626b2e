/* Runs every kind of request the preload library serves (small, medium,
 * large and huge blocks, aligned ones, realloc, calloc, frees from another
 * thread), and the phases of the field's small benchmarks (glibc-simple:
 * 25 to 1600 blocks of one size made and all freed again, for three sizes
 * in turn, in the main thread and in a thread made for each size, so that
 * pools empty and heaps pass from an exited thread to the next) and of
 * mleak (short-lived threads that each leave a block and free one an
 * exited thread left), then prints how much of the library is resident, from
 * /proc/self/smaps: "text_rss_kib N", the Rss of its executable mapping,
 * and "readonly_rss_kib N", that of its read-only mappings. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 2000
static void *blocks[N];

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        free(blocks[i]); /* blocks of the main thread: remote frees */
        blocks[i] = malloc(16 + (i * 37) % 3000);
    }
    return NULL;
}

/* One size's phase: n blocks of `size` bytes made, written and freed,
 * half first in, first out and half last in, first out. */
static void *phases(void *arg) {
    size_t size = (size_t)arg;
    static const int counts[] = {25, 100, 400, 1600};
    static __thread char *arr[1600];
    for (int c = 0; c < 4; c++) {
        for (int round = 0; round < 20; round++) {
            int n = counts[c];
            for (int i = 0; i < n; i++) {
                arr[i] = malloc(size);
                memset(arr[i], i, size);
            }
            for (int i = 0; i < n / 2; i++) free(arr[i]);
            for (int i = n - 1; i >= n / 2; i--) free(arr[i]);
        }
    }
    return NULL;
}

/* mleak's thread: a block in a random slot of `left`, the slot's previous
 * block (another thread's) freed. */
#define SLOTS 100
static void *_Atomic left[SLOTS];
static _Atomic unsigned seed = 1;

static void *leave_one(void *arg) {
    (void)arg;
    unsigned r = seed = seed * 1103515245u + 12345u;
    free(atomic_exchange(&left[(r >> 8) % SLOTS], calloc(16, sizeof(void *))));
    return NULL;
}

#define MANY 20000
static char *many[MANY];

static void *make_many(void *arg) {
    (void)arg;
    for (int i = 0; i < MANY; i++) many[i] = malloc(8 + (i * 29) % 4000);
    return NULL;
}

int main(void) {
    for (int round = 0; round < 100; round++) {
        pthread_t ts[10];
        for (int i = 0; i < 10; i++) pthread_create(&ts[i], NULL, leave_one, NULL);
        for (int i = 0; i < 10; i++) pthread_join(ts[i], NULL);
    }
    for (int i = 0; i < SLOTS; i++) free(left[i]);
    /* More blocks of exited threads than the library frees before it
     * drains their heaps' queues at once (mleak with many iterations). */
    pthread_t maker;
    pthread_create(&maker, NULL, make_many, NULL);
    pthread_join(maker, NULL);
    for (int i = 0; i < MANY; i++) free(many[i]);
    for (size_t size = 16; size <= 64; size *= 2) {
        phases((void *)size);
        pthread_t t;
        pthread_create(&t, NULL, phases, (void *)size);
        pthread_join(t, NULL);
    }
    size_t sizes[] = {8, 24, 100, 512, 600, 2000, 9000, 40000, 200000, 1 << 20, 8 << 20};
    for (int round = 0; round < 3; round++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            char *p = malloc(sizes[s]);
            memset(p, 1, sizes[s]);
            p = realloc(p, sizes[s] * 2);
            p = realloc(p, sizes[s] / 2 + 1);
            free(p);
            free(calloc(sizes[s], 1));
            void *q = NULL;
            if (posix_memalign(&q, 4096, sizes[s]) != 0) return 1;
            free(q);
            free(aligned_alloc(64, sizes[s]));
            free(memalign(256, sizes[s]));
            free(valloc(sizes[s]));
            free(pvalloc(sizes[s]));
            char *r = reallocarray(NULL, sizes[s], 1);
            if (malloc_usable_size(r) < sizes[s]) return 1;
            free(r);
        }
        for (int i = 0; i < N; i++) blocks[i] = malloc(8 + (i * 13) % 1500);
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
        for (int i = 0; i < N; i++) free(blocks[i]);
    }

    /* A heap grown and emptied, then a pause: the decay thread gives the
     * memory back (the test runs this with a decay of a few milliseconds;
     * the default is a second or two, as long as a benchmark of the field's
     * suite runs). */
    make_many(NULL);
    for (int i = 0; i < MANY; i++) free(many[i]);
    usleep(200 * 1000);

    Dl_info info;
    if (!dladdr((void *)malloc, &info) || !info.dli_fname) return 2;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 3;
    char line[1024];
    int in_text = 0, in_readonly = 0;
    long kib = -1, readonly_kib = 0;
    while (fgets(line, sizeof line, f)) {
        char perms[8] = "";
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && strchr(line, '/') ) {
            int ours = strstr(line, info.dli_fname) != NULL;
            in_text = ours && strcmp(perms, "r-xp") == 0;
            in_readonly = ours && strcmp(perms, "r--p") == 0;
        } else if (in_text && strncmp(line, "Rss:", 4) == 0) {
            kib = (kib < 0 ? 0 : kib) + atol(line + 4);
            in_text = 0;
        } else if (in_readonly && strncmp(line, "Rss:", 4) == 0) {
            readonly_kib += atol(line + 4);
            in_readonly = 0;
        }
    }
    fclose(f);
    printf("library %s\ntext_rss_kib %ld\nreadonly_rss_kib %ld\n", info.dli_fname, kib, readonly_kib);
    return 0;
}
