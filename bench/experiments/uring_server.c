/* uring_server.c: the C reference's persistent-mode work (read, upper-case,
 * write back) on io_uring instead of epoll, as an experiment: does another
 * readiness model cut the server's CPU per request? Not part of `make bench`
 * (it needs liburing), and TCP only. BENCHMARKS.md says what it shows
 * ("What bounds the targets"); `make experiments` builds it, and
 * tests/e2e/test_experiments.py puts it through bench/servers/check_servers.py.
 *
 *   build: apt-get install -y liburing-dev
 *          cc -O2 -Wall -Wextra -Werror -o build/bench/uring_server \
 *             bench/experiments/uring_server.c -luring
 *   usage: uring_server [--link] [--fixed] [--buf-ring] PORT HOST   (PORT may be 0)
 *   run:   .venv/bin/python bench/paired.py persistent \
 *             "upcase (1 loop + defer-accept)" "C epoll reference (again)" \
 *             --extra='io_uring=build/bench/uring_server 0 {host}' \
 *             --extra='linked=build/bench/uring_server --link 0 {host}' --cycles 20
 *
 * One ring (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: completions are run
 * only when the loop asks for them, in batches), a multishot accept, and per
 * connection one recv or one send in flight: a recv completes, its bytes are
 * upper-cased where they are and sent; when all of them have gone, the next
 * recv is posted. So one io_uring_enter per batch of completions instead of
 * a recv and a send (and a share of epoll_wait) per request.
 *
 *   --link      post the send and the next recv together, linked, the send
 *               with MSG_WAITALL (io_uring sends all of it, or fails) and no
 *               completion when it succeeds: one completion per request.
 *   --fixed     registered descriptors: accepted straight into the ring's
 *               file table, so no descriptor lookup per operation.
 *   --buf-ring  a connection holds no buffer while it waits: each recv takes
 *               one from a ring of provided buffers when data arrives, and
 *               gives it back once its reply has gone (the memory target's
 *               way: no buffer per idle connection).
 *
 * Prints "listening on HOST:PORT" (IPv6 as [h]:p) once ready; SIGTERM or
 * SIGINT exits 0 (through a signalfd watched by the ring).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define BUF_SIZE 4096
#define BACKLOG 4096
#define RING_BUFS 4096 /* provided buffers (--buf-ring), a power of two */
#define FILES 16384    /* registered descriptor slots (--fixed) */

enum { ACCEPT = 1, RECV = 2, SEND = 3, CLOSE = 4, SIGNAL = 5 }; /* in the low bits of user_data */

struct conn {
    int fd;       /* a descriptor, or a slot of the file table (--fixed) */
    int off, len; /* data[off..len) is still to be sent */
    int bid;      /* the provided buffer in use (--buf-ring), or -1 */
    unsigned char *data;
    unsigned char own[]; /* the buffer of its own, without --buf-ring */
};

static struct io_uring ring;
static int opt_link, opt_fixed, opt_buf_ring;
static struct io_uring_buf_ring *br;
static unsigned char *ring_mem;

static inline unsigned char up(unsigned char b)
{
    return b ^ (unsigned char)(((unsigned char)(b - 'a') < 26) << 5);
}

static void die(const char *what, int err)
{
    fprintf(stderr, "%s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe *next_sqe(void)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { /* the submission queue is full: hand it to the kernel */
        int r = io_uring_submit(&ring);
        if (r < 0)
            die("io_uring_submit", -r);
        if (!(s = io_uring_get_sqe(&ring)))
            die("io_uring_get_sqe", EBUSY);
    }
    return s;
}

static void tag(struct io_uring_sqe *s, struct conn *c, int kind)
{
    if (opt_fixed)
        s->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | (uint64_t)kind);
}

static void post_recv(struct conn *c)
{
    struct io_uring_sqe *s = next_sqe();
    if (opt_buf_ring) {
        io_uring_prep_recv(s, c->fd, NULL, BUF_SIZE, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = 0;
    } else {
        io_uring_prep_recv(s, c->fd, c->own, BUF_SIZE, 0);
    }
    tag(s, c, RECV);
}

static void give_back(struct conn *c)
{
    if (c->bid >= 0) {
        io_uring_buf_ring_add(br, ring_mem + (size_t)c->bid * BUF_SIZE, BUF_SIZE, (unsigned short)c->bid,
                              io_uring_buf_ring_mask(RING_BUFS), 0);
        io_uring_buf_ring_advance(br, 1);
        c->bid = -1;
    }
}

static void post_send(struct conn *c)
{
    struct io_uring_sqe *s = next_sqe();
    io_uring_prep_send(s, c->fd, c->data + c->off, (size_t)(c->len - c->off),
                       MSG_NOSIGNAL | (opt_link ? MSG_WAITALL : 0));
    tag(s, c, SEND);
    if (opt_link && !opt_buf_ring) { /* the buffer is free again once the send is done */
        s->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        post_recv(c);
    }
}

static void post_accept(int lfd)
{
    struct io_uring_sqe *s = next_sqe();
    if (opt_fixed)
        io_uring_prep_multishot_accept_direct(s, lfd, NULL, NULL, 0);
    else
        io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, ACCEPT);
}

static void conn_close(struct conn *c)
{
    if (opt_fixed) {
        struct io_uring_sqe *s = next_sqe();
        io_uring_prep_close_direct(s, (unsigned)c->fd);
        io_uring_sqe_set_data64(s, CLOSE);
    } else {
        close(c->fd);
    }
    give_back(c);
    free(c);
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--link") == 0)
            opt_link = 1;
        else if (strcmp(argv[i], "--fixed") == 0)
            opt_fixed = 1;
        else if (strcmp(argv[i], "--buf-ring") == 0)
            opt_buf_ring = 1;
        else
            break;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: %s [--link] [--fixed] [--buf-ring] PORT HOST\n", argv[0]);
        return 2;
    }
    if (opt_link && opt_buf_ring) {
        fprintf(stderr, "%s: --link and --buf-ring do not go together (the recv would take a "
                        "buffer before the send has given one back)\n", argv[0]);
        return 2;
    }
    /* SIGTERM/SIGINT arrive on a signalfd that the ring polls: no races. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask", errno);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd", errno);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    int err = getaddrinfo(argv[i + 1], argv[i], &hints, &res);
    if (err) {
        fprintf(stderr, "%s %s: %s\n", argv[i + 1], argv[i], gai_strerror(err));
        return 2;
    }
    int lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (lfd < 0)
        die("socket", errno);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as the reference */
    struct sockaddr_storage sa;
    socklen_t alen = sizeof sa;
    if (bind(lfd, res->ai_addr, res->ai_addrlen) < 0 || listen(lfd, BACKLOG) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &alen) < 0)
        die("bind/listen", errno);
    freeaddrinfo(res);
    char h[NI_MAXHOST], port[NI_MAXSERV];
    if ((err = getnameinfo((struct sockaddr *)&sa, alen, h, sizeof h, port, sizeof port,
                           NI_NUMERICHOST | NI_NUMERICSERV))) {
        fprintf(stderr, "getnameinfo: %s\n", gai_strerror(err));
        return 1;
    }

    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                         IORING_SETUP_CQSIZE,
                                .cq_entries = 4096};
    int r = io_uring_queue_init_params(256, &ring, &p);
    if (r < 0)
        die("io_uring_queue_init_params", -r);
    if (opt_fixed && (r = io_uring_register_files_sparse(&ring, FILES)) < 0)
        die("io_uring_register_files_sparse", -r);
    if (opt_buf_ring) {
        void *mem;
        if (posix_memalign(&mem, 4096, RING_BUFS * sizeof(struct io_uring_buf)) ||
            !(ring_mem = malloc((size_t)RING_BUFS * BUF_SIZE)))
            die("malloc", ENOMEM);
        br = mem;
        io_uring_buf_ring_init(br);
        struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)br, .ring_entries = RING_BUFS, .bgid = 0};
        if ((r = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
            die("io_uring_register_buf_ring", -r);
        for (int b = 0; b < RING_BUFS; b++)
            io_uring_buf_ring_add(br, ring_mem + (size_t)b * BUF_SIZE, BUF_SIZE, (unsigned short)b,
                                  io_uring_buf_ring_mask(RING_BUFS), b);
        io_uring_buf_ring_advance(br, RING_BUFS);
    }
    printf(sa.ss_family == AF_INET6 ? "listening on [%s]:%s\n" : "listening on %s:%s\n", h, port);
    fflush(stdout);

    struct io_uring_sqe *ps = next_sqe();
    io_uring_prep_poll_add(ps, sfd, POLLIN);
    io_uring_sqe_set_data64(ps, SIGNAL);
    post_accept(lfd);
    for (;;) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR)
            die("io_uring_submit_and_wait", -r);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int kind = (int)(cqe->user_data & 7), res = cqe->res;
            struct conn *c = (struct conn *)(uintptr_t)(cqe->user_data & ~(uint64_t)7);
            if (kind == CLOSE)
                continue;
            if (kind == SIGNAL)
                return 0;
            if (kind == ACCEPT) {
                if (res >= 0) {
                    struct conn *n = malloc(sizeof *n + (opt_buf_ring ? 0 : BUF_SIZE));
                    if (!n)
                        die("malloc", ENOMEM);
                    n->fd = res;
                    n->bid = -1;
                    n->data = n->own;
                    post_recv(n);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) /* the multishot ended: post it again */
                    post_accept(lfd);
            } else if (kind == RECV) {
                if (res == -ECANCELED) /* after a linked send failed: closed there */
                    continue;
                if (res <= 0) { /* end of stream (all answered), an error, or out of buffers */
                    conn_close(c);
                    continue;
                }
                if (opt_buf_ring) {
                    c->bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                    c->data = ring_mem + (size_t)c->bid * BUF_SIZE;
                }
                for (int k = 0; k < res; k++)
                    c->data[k] = up(c->data[k]);
                c->off = 0;
                c->len = res;
                post_send(c);
            } else { /* SEND: with --link, only a failed one comes here */
                if (res < 0) {
                    conn_close(c);
                    continue;
                }
                c->off += res;
                if (c->off < c->len) {
                    post_send(c);
                } else {
                    give_back(c);
                    post_recv(c);
                }
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
