/* How much a machine delays short bursts of work, with and without a sleep before each:
 * the noise floor of a fixed-tick server's tick time (BENCHMARKS.md, "Capacity").
 *
 *   gcc -O1 -o /tmp/wakeup_jitter benches/wakeup_jitter.c
 *   /tmp/wakeup_jitter sleep     # 600 chunks of ~1.4 ms work, each after a 31 ms sleep (a 30 Hz tick)
 *   /tmp/wakeup_jitter busy      # 3,000 chunks back to back
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int sleep_first = argc > 1 && strcmp(argv[1], "sleep") == 0;
    int n = sleep_first ? 600 : 3000;
    static double took[3000];
    volatile unsigned long x = 0;
    for (int i = 0; i < n; i++) {
        if (sleep_first) usleep(31000);
        double a = now_ms();
        for (long k = 0; k < 1500000; k++) x += k * k;
        took[i] = now_ms() - a;
    }
    double sum = 0, max = 0;
    int over5 = 0, over10 = 0;
    for (int i = 0; i < n; i++) {
        sum += took[i];
        if (took[i] > max) max = took[i];
        over5 += took[i] > 5.0;
        over10 += took[i] > 10.0;
    }
    printf("%s: mean %.2f ms, max %.2f ms, over 5 ms: %d, over 10 ms: %d of %d\n",
           sleep_first ? "after a sleep" : "back to back", sum / n, max, over5, over10, n);
    return 0;
}
