/* A ring of 1,000 live blocks through the C allocation API: 2M steps, each
   freeing the oldest block and allocating one of 16-385 bytes. For counting
   what a preload library's malloc and free cost (docs/tracing.md):

       gcc -O2 -o /tmp/preload_ring scripts/preload_ring.c
       LD_PRELOAD=target/release/libpymalloc_preload.so \
           valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/preload_ring */
#include <stdint.h>
#include <stdlib.h>

int main(void)
{
    enum { R = 1000 };
    static void *slot[R];
    uint64_t x = 1;
    for (long i = 0; i < 2000000; i++) {
        int k = (int)(i % R);
        free(slot[k]);
        x = x * 6364136223846793005ULL + 1;
        slot[k] = malloc(16 + (x >> 58) * 3 + ((x >> 40) & 15) * 12);
        ((char *)slot[k])[0] = 1;
    }
    for (int k = 0; k < R; k++)
        free(slot[k]);
    return 0;
}
