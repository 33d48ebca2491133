/* syscall_cost.c: what one system call costs on this machine, entry and exit
 * and nothing else (getppid does no work): the part of a server's CPU per
 * request that batching (recvmmsg/sendmmsg, io_uring) can save.
 *
 *   build: cc -O2 -Wall -Wextra -Werror -o build/bench/syscall_cost bench/experiments/syscall_cost.c
 *   run:   build/bench/syscall_cost [CALLS]      (default 5,000,000)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 5000000;
    if (argc > 2 || n <= 0) {
        fprintf(stderr, "usage: %s [CALLS]   (CALLS > 0)\n", argv[0]);
        return 2;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid); /* through syscall(): glibc caches nothing here */
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.1f ns per system call (%ld calls)\n", ns / (double)n, n);
    return 0;
}
