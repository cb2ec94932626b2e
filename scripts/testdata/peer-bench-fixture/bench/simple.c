/* Small blocks allocated and freed in a loop. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    void *keep[64] = {0};
    unsigned long sum = 0;
    for (unsigned i = 0; i < 2000000; i++) {
        unsigned k = i % 64;
        free(keep[k]);
        keep[k] = malloc(16 + i % 200);
        sum += (unsigned long)((char *)keep[k])[0] & 0;
    }
    for (int k = 0; k < 64; k++) free(keep[k]);
    printf("done %lu\n", sum);
    return 0;
}
