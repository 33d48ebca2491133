/* epoll_server.c: the hand-written reference for `make bench`.
 *
 * A minimal single-threaded epoll upper-case server: non-blocking sockets,
 * level-triggered, one 64 KiB read buffer, partial writes kept in a
 * per-connection pending buffer (and the connection not read from until it
 * has drained), the upper-casing loop written so that gcc -O2 vectorises it.
 *
 *   usage: epoll_server [--udp] PORT HOST      (PORT may be 0)
 *   build: cc -O2 -Wall -Wextra -Werror -o epoll_server epoll_server.c
 *
 * Prints "listening on HOST:PORT" (IPv6 as [h]:p) once ready; SIGTERM or
 * SIGINT exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define BACKLOG 4096
#define MAX_EVENTS 256

struct conn {
    int fd;
    unsigned char *pend; /* reply bytes the kernel did not take yet */
    size_t off, len;     /* pend[off..len) is still to be sent */
};

static unsigned char buf[BUF_SIZE];
static int ep;
/* Tags for the two fds that are not connections (data.ptr tells them apart). */
static struct conn listener_tag, signal_tag;

static inline unsigned char up(unsigned char b)
{
    return b ^ (unsigned char)(((unsigned char)(b - 'a') < 26) << 5);
}

/* The inner loop has a fixed trip count, so -O2 (GCC's "very cheap" cost
 * model, which will not add a scalar epilogue) vectorises it. */
static void upper(unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (size_t j = 0; j < 32; j++)
            p[i + j] = up(p[i + j]);
    for (; i < n; i++)
        p[i] = up(p[i]);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void watch(int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->pend);
    free(c);
}

/* Send pend[off..len); 1 if all of it is gone, 0 if some is left, -1 on error. */
static int flush_pending(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 1;
}

static void on_readable(struct conn *c)
{
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(c);
        return;
    }
    if (n == 0) { /* half-close: everything read has been answered */
        conn_close(c);
        return;
    }
    upper(buf, (size_t)n);
    ssize_t sent = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(c);
            return;
        }
        sent = 0;
    }
    if (sent == n)
        return;
    /* Partial write: keep the rest, stop reading, wait for EPOLLOUT. */
    if (!c->pend && !(c->pend = malloc(BUF_SIZE)))
        die("malloc");
    c->off = 0;
    c->len = (size_t)(n - sent);
    memcpy(c->pend, buf + sent, c->len);
    watch(EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
}

static void on_writable(struct conn *c)
{
    int r = flush_pending(c);
    if (r < 0)
        conn_close(c);
    else if (r > 0) /* drained: read again */
        watch(EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("accept4"); /* e.g. EMFILE: try again on the next event */
            return;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        watch(EPOLL_CTL_ADD, fd, EPOLLIN, c);
    }
}

/* UDP: answer every datagram waiting; a reply the kernel will not take now is
 * dropped (UDP promises nothing), a datagram too large for the buffer is never
 * answered with a cut copy. */
static void on_datagrams(int fd)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_TRUNC, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN, or an ICMP error queued by an earlier reply */
        }
        if ((size_t)n > sizeof buf)
            continue;
        upper(buf, (size_t)n);
        sendto(fd, buf, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&peer, plen);
    }
}

static int open_socket(const char *host, const char *port, int udp)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *res, *ai;
    int err = getaddrinfo(host, port, &hints, &res), fd = -1, one = 1;
    if (err) {
        fprintf(stderr, "getaddrinfo %s: %s\n", host, gai_strerror(err));
        exit(1);
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (!udp) /* replies go out at once, not on Nagle's timer; accepted sockets inherit it */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && (udp || listen(fd, BACKLOG) == 0))
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("bind/listen");
    return fd;
}

static void print_listening(int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
        getnameinfo((struct sockaddr *)&sa, len, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV))
        die("getsockname");
    printf(sa.ss_family == AF_INET6 ? "listening on [%s]:%s\n" : "listening on %s:%s\n", h, p);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int udp = argc > 1 && strcmp(argv[1], "--udp") == 0;
    if (argc != 3 + udp) {
        fprintf(stderr, "usage: %s [--udp] PORT HOST\n", argv[0]);
        return 2;
    }
    /* SIGTERM/SIGINT arrive as an fd in the same epoll set: no races. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");

    int fd = open_socket(argv[2 + udp], argv[1 + udp], udp);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    watch(EPOLL_CTL_ADD, sfd, EPOLLIN, &signal_tag);
    watch(EPOLL_CTL_ADD, fd, EPOLLIN, &listener_tag);
    print_listening(fd);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == &signal_tag)
                return 0;
            if (c == &listener_tag) {
                if (udp)
                    on_datagrams(fd);
                else
                    on_accept(fd);
            } else if (c->len) { /* waiting to send: only EPOLLOUT is watched */
                on_writable(c);
            } else {
                on_readable(c);
            }
        }
    }
}
