/* tls_server.c: the TLS analogue of epoll_server.c, for `make bench`.
 *
 * A single-threaded epoll server speaking the upcase protocol inside TLS
 * with OpenSSL: non-blocking sockets, level-triggered, one 64 KiB read
 * buffer, SSL_read and SSL_write. A reply SSL_write cannot finish at once
 * is kept in a per-connection pending buffer, and the connection is not
 * read from until it has gone. The client's close_notify is its
 * half-close: everything before it has been answered by then, so the
 * server sends its own close_notify and closes. OpenSSL's defaults
 * otherwise: TLS 1.2 and 1.3, session tickets on, its default groups and
 * cipher suites (the client narrows the offer).
 *
 *   usage: tls_server PORT CERT KEY      (PORT may be 0; binds 127.0.0.1)
 *   build: cc -O2 -Wall -Wextra -Werror -o tls_server tls_server.c -lssl -lcrypto
 *
 * Prints "listening on 127.0.0.1:PORT" once ready; SIGTERM or SIGINT exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE 65536
#define BACKLOG 4096
#define MAX_EVENTS 256
/* Records answered per event before the loop turns to other connections. */
#define READS_PER_EVENT 16

struct conn {
    int fd;
    SSL *ssl;
    uint32_t events;     /* what epoll watches for this fd */
    int closing;         /* the client's close_notify has arrived */
    unsigned char *pend; /* reply bytes SSL_write has not taken yet */
    size_t off, len;     /* pend[off..len) is still to be written */
};

static unsigned char buf[BUF_SIZE];
static int ep;
static SSL_CTX *ctx;
/* Tags for the two fds that are not connections (data.ptr tells them apart). */
static struct conn listener_tag, signal_tag;

static inline unsigned char up(unsigned char b)
{
    return b ^ (unsigned char)(((unsigned char)(b - 'a') < 26) << 5);
}

/* The inner loop has a fixed trip count, so -O2 vectorises it. */
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

static void die_ssl(const char *what)
{
    fprintf(stderr, "%s: ", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void watch(int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

/* Wait for what OpenSSL asked for: readable or writable. */
static void wait_for(struct conn *c, uint32_t events)
{
    if (c->events != events) {
        watch(EPOLL_CTL_MOD, c->fd, events, c);
        c->events = events;
    }
}

static void conn_close(struct conn *c)
{
    SSL_free(c->ssl);
    close(c->fd); /* also removes it from the epoll set */
    free(c->pend);
    free(c);
    ERR_clear_error(); /* a failed connection leaves no error for the next */
}

/* What an SSL call that returned r <= 0 asks for: EPOLLIN or EPOLLOUT to
 * try again when the socket is ready, 0 if the connection is over. */
static uint32_t retry_on(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return EPOLLIN;
    case SSL_ERROR_WANT_WRITE:
        return EPOLLOUT;
    default:
        return 0;
    }
}

/* Write pend[off..len); 1 when all of it is gone, 0 when the socket must
 * be ready first (c->events set), -1 when the connection is over. */
static int flush_pending(struct conn *c)
{
    while (c->off < c->len) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, c->pend + c->off, (int)(c->len - c->off));
        if (r <= 0) {
            uint32_t ev = retry_on(c, r);
            if (!ev)
                return -1;
            wait_for(c, ev);
            return 0;
        }
        c->off += (size_t)r;
    }
    c->off = c->len = 0;
    return 1;
}

/* Answer what has arrived, until OpenSSL must wait for the socket. */
static void serve(struct conn *c)
{
    int r = c->len ? flush_pending(c) : 1;
    if (r < 0) {
        conn_close(c);
        return;
    }
    if (r == 0)
        return;
    for (int i = 0; !c->closing && (i < READS_PER_EVENT || SSL_has_pending(c->ssl)); i++) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            if (SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN) {
                c->closing = 1; /* close_notify: everything before it is answered */
                break;
            }
            uint32_t ev = retry_on(c, n);
            if (!ev) {
                conn_close(c); /* a reset, an end without close_notify, a TLS alert */
                return;
            }
            wait_for(c, ev);
            return;
        }
        upper(buf, (size_t)n);
        ERR_clear_error();
        int sent = SSL_write(c->ssl, buf, n);
        if (sent == n)
            continue;
        uint32_t ev = 0;
        if (sent <= 0) {
            if (!(ev = retry_on(c, sent))) {
                conn_close(c);
                return;
            }
            sent = 0;
        }
        /* Partial write: keep the rest (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
         * lets the retry come from pend), stop reading until it is gone. */
        if (!c->pend && !(c->pend = malloc(BUF_SIZE)))
            die("malloc");
        c->off = 0;
        c->len = (size_t)(n - sent);
        memcpy(c->pend, buf + sent, c->len);
        wait_for(c, ev ? ev : EPOLLOUT);
        return;
    }
    if (!c->closing) {
        wait_for(c, EPOLLIN); /* level-triggered: unread records wake us again */
        return;
    }
    ERR_clear_error();
    r = SSL_shutdown(c->ssl);
    if (r < 0) {
        uint32_t ev = retry_on(c, r);
        if (ev == EPOLLOUT) {
            wait_for(c, ev);
            return;
        }
    }
    conn_close(c); /* our close_notify is sent, or cannot be */
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
        if (!(c->ssl = SSL_new(ctx)) || !SSL_set_fd(c->ssl, fd))
            die_ssl("SSL_new");
        SSL_set_accept_state(c->ssl);
        c->fd = fd;
        c->events = EPOLLIN;
        watch(EPOLL_CTL_ADD, fd, EPOLLIN, c);
    }
}

static SSL_CTX *make_ctx(const char *cert, const char *key)
{
    SSL_CTX *x = SSL_CTX_new(TLS_server_method());
    if (!x)
        die_ssl("SSL_CTX_new");
    if (!SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION))
        die_ssl("SSL_CTX_set_min_proto_version");
    if (SSL_CTX_use_certificate_chain_file(x, cert) != 1)
        die_ssl(cert);
    if (SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM) != 1)
        die_ssl(key);
    if (SSL_CTX_check_private_key(x) != 1)
        die_ssl("the key does not match the certificate");
    SSL_CTX_set_mode(x, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return x;
}

static int open_listener(const char *port_text)
{
    char *end;
    long port = strtol(port_text, &end, 10);
    if (*port_text == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "tls_server: PORT %s is not a port number\n", port_text);
        exit(2);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_port = htons((uint16_t)port);           /* host order to network order */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* 127.0.0.1, in network order */
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Records go out at once, not on Nagle's timer; accepted sockets inherit it. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, BACKLOG) < 0)
        die("bind/listen");
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");
    printf("listening on 127.0.0.1:%u\n", ntohs(sa.sin_port)); /* network order to host order */
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT CERT KEY\n", argv[0]);
        return 2;
    }
    /* OpenSSL writes with write(): a reset peer must give EPIPE, not SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
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

    ctx = make_ctx(argv[2], argv[3]);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    int fd = open_listener(argv[1]);
    watch(EPOLL_CTL_ADD, sfd, EPOLLIN, &signal_tag);
    watch(EPOLL_CTL_ADD, fd, EPOLLIN, &listener_tag);

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
            if (c == &listener_tag)
                on_accept(fd);
            else
                serve(c);
        }
    }
}
