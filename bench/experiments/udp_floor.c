/* udp_floor.c: the cheapest UDP upper-case server the socket API allows, to
 * measure the floor under any design: one socket, one blocking recvmmsg()
 * for up to BATCH datagrams (MSG_WAITFORONE: it waits for the first only),
 * the bytes upper-cased in place, one sendmmsg() of every reply. Two system
 * calls per batch and nothing else: no poll, no stop flag, no statistics,
 * no source-address checks. What it spends per datagram is what the kernel
 * spends receiving and sending one datagram, plus two calls a batch.
 *
 *   build: cc -O2 -Wall -Wextra -Werror -o build/bench/udp_floor bench/experiments/udp_floor.c
 *   run:   build/bench/udp_floor [--batch N] PORT HOST    (prints "listening on HOST:PORT")
 *
 * IPv4 or IPv6 literal addresses only; exits 0 on SIGTERM or SIGINT, from
 * the handler (no flag is looked at between batches).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define DGRAM 65536

static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--batch N] PORT HOST   (N 1-%d, default 64)\n", argv0, MAX_BATCH);
    return 2;
}

int main(int argc, char **argv)
{
    int batch = 64, i = 1;
    if (argc == 5 && strcmp(argv[1], "--batch") == 0) {
        char *end;
        long b = strtol(argv[2], &end, 10);
        if (*end != '\0' || b < 1 || b > MAX_BATCH)
            return usage(argv[0]);
        batch = (int)b;
        i = 3;
    } else if (argc != 3) {
        return usage(argv[0]);
    }
    char *end;
    long port = strtol(argv[i], &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return usage(argv[0]);
    const char *host = argv[i + 1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        perror("udp_floor: sigaction");
        return 1;
    }

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    } else {
        fprintf(stderr, "%s: %s is not an address\n", argv[0], host);
        return 2;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        perror("udp_floor: socket/bind");
        return 1;
    }
    unsigned bound = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    printf(ss.ss_family == AF_INET ? "listening on %s:%u\n" : "listening on [%s]:%u\n", host, bound);
    fflush(stdout);

    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    static struct sockaddr_storage from[MAX_BATCH];
    char *bufs = malloc((size_t)batch * DGRAM);
    if (bufs == NULL) {
        perror("udp_floor: malloc");
        return 1;
    }
    for (;;) {
        for (int k = 0; k < batch; k++) {
            iov[k] = (struct iovec){ bufs + (size_t)k * DGRAM, DGRAM };
            msgs[k].msg_hdr = (struct msghdr){ .msg_name = &from[k], .msg_namelen = sizeof from[k],
                                               .msg_iov = &iov[k], .msg_iovlen = 1 };
        }
        int n = recvmmsg(fd, msgs, (unsigned)batch, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("udp_floor: recvmmsg");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            char *p = iov[k].iov_base;
            for (unsigned j = 0; j < msgs[k].msg_len; j++)
                if (p[j] >= 'a' && p[j] <= 'z')
                    p[j] = (char)(p[j] - 32);
            iov[k].iov_len = msgs[k].msg_len; /* the reply: as long as the request */
        }
        /* Every reply, in as many calls as the kernel wants (each returns how
           many it sent; an error on one datagram is skipped, as a loss). */
        for (int sent = 0; sent < n;) {
            int m = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
            if (m < 0) {
                if (errno == EINTR)
                    continue;
                sent++;
                continue;
            }
            sent += m;
        }
    }
}
