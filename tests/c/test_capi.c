/* tests/c/test_capi.c: the C API of libupcase, every function of
 * include/upcase.h, success and failure paths.
 *
 * Built three ways by the Makefile (shared, static, static + ASan/UBSan) and
 * run once more under valgrind. Prints one line "N passed, M failed" at the
 * end and exits non-zero on any failure.
 *
 * Rules kept here: servers bind only to 127.0.0.1 / ::1 on port 0; every
 * wait is bounded (a 60 s alarm is the global watchdog, and each wait has
 * its own smaller bound); SIGPIPE is deliberately NOT ignored, so a library
 * that sends without MSG_NOSIGNAL kills this program.
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upcase.h"

/* ------------------------------------------------------------------ */
/* The harness                                                         */
/* ------------------------------------------------------------------ */

static atomic_int g_pass;
static atomic_int g_fail;
static const char *g_test = "(setup)";

static void print_summary(void)
{
    printf("%d passed, %d failed\n", atomic_load(&g_pass), atomic_load(&g_fail));
    fflush(stdout);
}

static void fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    atomic_fetch_add(&g_fail, 1);
    fprintf(stderr, "FAIL %s:%d [%s]: ", file, line, g_test);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "  (upcase_last_error: \"%s\")\n", upcase_last_error());
    fflush(stderr);
}

static int check_impl(int ok, const char *file, int line, const char *expr)
{
    if (ok) {
        atomic_fetch_add(&g_pass, 1);
        return 1;
    }
    fail_at(file, line, "%s", expr);
    return 0;
}

static int check_rc_impl(int got, int want, const char *expr, const char *file, int line)
{
    if (got == want) {
        atomic_fetch_add(&g_pass, 1);
        return 1;
    }
    fail_at(file, line, "%s: got %d (%s), want %d (%s)", expr, got, upcase_errname(got), want,
            upcase_errname(want));
    return 0;
}

static int check_str_impl(const char *got, const char *want, const char *expr, const char *file, int line)
{
    if (got != NULL && want != NULL && strcmp(got, want) == 0) {
        atomic_fetch_add(&g_pass, 1);
        return 1;
    }
    fail_at(file, line, "%s: got \"%s\", want \"%s\"", expr, got ? got : "(NULL)", want ? want : "(NULL)");
    return 0;
}

static int check_u64_impl(unsigned long long got, const char *op, unsigned long long want, const char *expr,
                          const char *file, int line)
{
    int ok = (strcmp(op, ">=") == 0) ? got >= want : (strcmp(op, "==") == 0) ? got == want : got <= want;
    if (ok) {
        atomic_fetch_add(&g_pass, 1);
        return 1;
    }
    fail_at(file, line, "%s: got %llu, want %s %llu", expr, got, op, want);
    return 0;
}

/* Each returns 1 on success, 0 on failure, so setup steps can bail out. */
#define CHECK(cond) check_impl((cond) ? 1 : 0, __FILE__, __LINE__, #cond)
#define CHECK_RC(expr, want) check_rc_impl((expr), (want), #expr, __FILE__, __LINE__)
#define CHECK_OK(expr) CHECK_RC(expr, UPCASE_OK)
#define CHECK_STR(got, want) check_str_impl((got), (want), #got, __FILE__, __LINE__)
#define CHECK_GE(got, want) check_u64_impl((unsigned long long)(got), ">=", (unsigned long long)(want), #got, __FILE__, __LINE__)
#define CHECK_EQ(got, want) check_u64_impl((unsigned long long)(got), "==", (unsigned long long)(want), #got, __FILE__, __LINE__)
#define CHECK_LE(got, want) check_u64_impl((unsigned long long)(got), "<=", (unsigned long long)(want), #got, __FILE__, __LINE__)

/* Gives up on the whole run: used when a server thread cannot be joined
 * (it cannot be freed safely, and the process cannot finish cleanly). */
static void fatal(const char *file, int line, const char *what)
{
    fail_at(file, line, "FATAL: %s", what);
    print_summary();
    _exit(1);
}
#define FATAL(what) fatal(__FILE__, __LINE__, (what))

static void on_alarm(int sig)
{
    static const char msg[] = "FATAL: watchdog: the test suite ran longer than 60 s\n";
    (void)sig;
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps `ms` milliseconds, resuming after signal handlers. */
static void sleep_ms(long ms)
{
    struct timespec req = { ms / 1000, (ms % 1000) * 1000000L }, rem;
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
}

/* Re-evaluates `cond` every 5 ms until it holds or `ms` have passed. */
#define WAIT_UNTIL(cond, ms)                                                                                 \
    do {                                                                                                     \
        long long wu_deadline_ = now_ms() + (ms);                                                            \
        while (!(cond) && now_ms() < wu_deadline_)                                                           \
            sleep_ms(5);                                                                                     \
    } while (0)

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    if (hay == NULL)
        return 0;
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return n == 0;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n; /* includes the directory's own descriptor, the same each time */
}

/* ------------------------------------------------------------------ */
/* Data helpers                                                        */
/* ------------------------------------------------------------------ */

/* Pseudo-random bytes covering every value, NUL and >= 0x80 included. */
static void fill_pattern(uint8_t *buf, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 0x9E3779B9u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)(x >> 11);
    }
}

static uint8_t ref_upper_byte(uint8_t c)
{
    return (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
}

static void ref_upper(const uint8_t *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = ref_upper_byte(in[i]);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        FATAL("out of memory");
    return p;
}

static int all_bytes(const void *p, int value, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (uint8_t)value)
            return 0;
    return 1;
}

/* A request of `len` pattern bytes over TCP; checks the reply. */
static int tcp_roundtrip(const char *host, uint16_t port, size_t len, uint32_t seed)
{
    uint8_t *data = xmalloc(len), *want = xmalloc(len), *reply = xmalloc(len);
    size_t reply_len = (size_t)-1;
    int ok;
    fill_pattern(data, len, seed);
    ref_upper(data, want, len);
    ok = CHECK_OK(upcase_tcp_request(host, port, data, len, reply, len, &reply_len, 10000));
    ok = ok && CHECK_EQ(reply_len, len);
    ok = ok && CHECK(memcmp(reply, want, len) == 0);
    free(data);
    free(want);
    free(reply);
    return ok;
}

static int udp_roundtrip(const char *host, uint16_t port, size_t len, uint32_t seed)
{
    uint8_t *data = xmalloc(len), *want = xmalloc(len), *reply = xmalloc(len);
    size_t reply_len = (size_t)-1;
    int ok;
    fill_pattern(data, len, seed);
    ref_upper(data, want, len);
    /* 5 s a try, one retry: a retry sent only because a loaded machine was
       slow would be answered and counted too, and some tests count
       datagrams. */
    ok = CHECK_OK(upcase_udp_request(host, port, data, len, reply, len, &reply_len, 5000, 1));
    ok = ok && CHECK_EQ(reply_len, len);
    ok = ok && CHECK(memcmp(reply, want, len) == 0);
    free(data);
    free(want);
    free(reply);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Plain-socket helpers (libc, not the library)                        */
/* ------------------------------------------------------------------ */

static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_addr = in6addr_loopback;
        return sizeof *sin6;
    }
}

static uint16_t local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A socket bound to the loopback address on a free port (listening for TCP). */
static int plain_bound(int family, int type, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    int fd = socket(family, type, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || (type == SOCK_STREAM && listen(fd, 16) != 0)) {
        close(fd);
        return -1;
    }
    *port = local_port(fd);
    return fd;
}

/* A loopback port on which nothing listens (bound once, then released). */
static uint16_t closed_port(int family, int type)
{
    uint16_t port = 0;
    int fd = plain_bound(family, type, &port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int plain_connect(int family, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until EOF, an error, `cap` bytes, or `ms` without progress. */
static size_t read_to_eof(int fd, uint8_t *buf, size_t cap, int ms)
{
    size_t got = 0;
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return got;
        uint8_t sink[4096];
        uint8_t *dst = got < cap ? buf + got : sink;
        size_t room = got < cap ? cap - got : sizeof sink;
        ssize_t n = recv(fd, dst, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return got;
        got += (size_t)n;
    }
}

static void close_with_rst(int fd)
{
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Running a server on a thread                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    upcase_server *srv;
    pthread_t th;
    atomic_int done;
    int rc;
    int live;
} runner_t;

static void *runner_main(void *arg)
{
    runner_t *r = arg;
    r->rc = upcase_server_run(r->srv);
    atomic_store(&r->done, 1);
    return NULL;
}

static int runner_start(runner_t *r, upcase_server *srv)
{
    r->srv = srv;
    r->rc = 12345;
    atomic_init(&r->done, 0);
    r->live = pthread_create(&r->th, NULL, runner_main, r) == 0;
    return CHECK(r->live);
}

/* Waits at most `ms` for run to return, joins, and gives run's status. */
static int runner_join(runner_t *r, long ms)
{
    if (!r->live)
        return 12345;
    WAIT_UNTIL(atomic_load(&r->done), ms);
    if (!atomic_load(&r->done))
        FATAL("upcase_server_run did not return after upcase_server_stop");
    pthread_join(r->th, NULL);
    r->live = 0;
    return r->rc;
}

static int bind_cfg(const upcase_server_config *cfg, upcase_server **out)
{
    *out = NULL;
    return upcase_server_bind(cfg, out);
}

/* Binds a server on host:0 and runs it on a thread; NULL on failure. */
static upcase_server *start_server(upcase_server_config *cfg, runner_t *r)
{
    upcase_server *srv = NULL;
    if (!CHECK_OK(bind_cfg(cfg, &srv)) || !CHECK(srv != NULL))
        return NULL;
    if (!runner_start(r, srv)) {
        upcase_server_free(srv);
        return NULL;
    }
    return srv;
}

/* Stops from this thread, joins, checks run returned 0, frees. */
static void stop_server(upcase_server *srv, runner_t *r)
{
    long long t0 = now_ms();
    CHECK_OK(upcase_server_stop(srv));
    CHECK_OK(runner_join(r, 5000));
    CHECK_LE(now_ms() - t0, 3000);
    upcase_server_free(srv);
}

/* Set while the TCP server tests run again on io_uring. */
static int g_io_uring;

static void config_for(upcase_server_config *cfg, const char *host, int transport, int mode)
{
    upcase_server_config_default(cfg);
    cfg->host = host;
    cfg->port = 0;
    cfg->transport = transport;
    cfg->mode = mode;
    cfg->threads = 2;
    cfg->io_uring = g_io_uring && transport == UPCASE_TRANSPORT_TCP && mode == UPCASE_MODE_CONCURRENT;
}

static uint16_t port_of(const upcase_server *srv)
{
    int p = upcase_server_port(srv);
    CHECK(p > 0 && p <= 65535);
    return p > 0 && p <= 65535 ? (uint16_t)p : 1;
}

/* ------------------------------------------------------------------ */
/* The header on its own                                               */
/* ------------------------------------------------------------------ */

/* Compiles a program that only includes include/upcase.h, as C (with this
 * file's strict flags) and as C++ (the header promises C++ compatibility).
 * Found from this file's path, as the Makefile compiles it from the
 * checkout's root; skipped if the header or a compiler is not found. */
static void header_compiles_as(const char *root, const char *lang)
{
    char cmd[2048];
    int c = strcmp(lang, "c") == 0;
    snprintf(cmd, sizeof cmd,
             "command -v %s >/dev/null 2>&1 || exit 77; "
             "printf '#include \"upcase.h\"\\nint main(void) { return 0; }\\n' | "
             "%s %s -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I'%sinclude' -x %s - >&2",
             c ? "cc" : "c++", c ? "cc" : "c++", c ? "-std=c11 -D_POSIX_C_SOURCE=200809L" : "-std=c++11", root,
             lang);
    fflush(NULL);
    int st = system(cmd);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        fprintf(stderr, "note: no %s compiler, header check as %s skipped\n", c ? "cc" : "c++", lang);
        return;
    }
    if (!CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fprintf(stderr, "    include/upcase.h does not compile on its own as %s (compiler output above)\n", lang);
}

static void test_header_compiles(void)
{
    g_test = "include/upcase.h compiles";
    static const char self[] = "tests/c/test_capi.c";
    char root[1024], header[1100];
    size_t n = strlen(__FILE__), m = strlen(self);
    if (n < m || strcmp(__FILE__ + n - m, self) != 0 || n - m >= sizeof root) {
        fprintf(stderr, "note: cannot locate include/upcase.h from %s, header check skipped\n", __FILE__);
        return;
    }
    memcpy(root, __FILE__, n - m);
    root[n - m] = '\0';
    snprintf(header, sizeof header, "%sinclude/upcase.h", root);
    if (access(header, R_OK) != 0) {
        fprintf(stderr, "note: %s not found from here, header check skipped\n", header);
        return;
    }
    header_compiles_as(root, "c");
    header_compiles_as(root, "c++");
}

/* ------------------------------------------------------------------ */
/* Version, codes, byte order, addresses, upper                        */
/* ------------------------------------------------------------------ */

static void test_version(void)
{
    g_test = "version";
    CHECK(upcase_version() != NULL);
    CHECK_STR(upcase_version(), UPCASE_VERSION_STRING);
    CHECK_EQ(upcase_version_hex(), UPCASE_VERSION_HEX);
    CHECK_EQ(UPCASE_VERSION_HEX, (UPCASE_VERSION_MAJOR << 16) | (UPCASE_VERSION_MINOR << 8) | UPCASE_VERSION_PATCH);
    char text[32];
    uint32_t v = upcase_version_hex();
    snprintf(text, sizeof text, "%u.%u.%u", (unsigned)(v >> 16), (unsigned)((v >> 8) & 0xFF), (unsigned)(v & 0xFF));
    CHECK_STR(text, upcase_version());
}

static void test_last_error_initial(void)
{
    g_test = "last_error before any failure";
    CHECK(upcase_last_error() != NULL);
    CHECK_STR(upcase_last_error(), "");
}

static void test_codes(void)
{
    g_test = "strerror/errname";
    static const struct {
        int code;
        const char *name;
    } named[] = {
#define NAMED(c) { c, #c }
        NAMED(UPCASE_OK),
        NAMED(UPCASE_EINVAL),
        NAMED(UPCASE_ECONNREFUSED),
        NAMED(UPCASE_ETIMEDOUT),
        NAMED(UPCASE_ECONNRESET),
        NAMED(UPCASE_EADDRINUSE),
        NAMED(UPCASE_EADDRNOTAVAIL),
        NAMED(UPCASE_EMSGSIZE),
        NAMED(UPCASE_EMFILE),
        NAMED(UPCASE_EAI_NONAME),
        NAMED(UPCASE_EAI_AGAIN),
        NAMED(UPCASE_ERR_BUFFER_TOO_SMALL),
        NAMED(UPCASE_ERR_SHORT_REPLY),
        NAMED(UPCASE_ERR_STOPPED),
        NAMED(UPCASE_ERR_BUSY),
        NAMED(UPCASE_ERR_PANIC),
        NAMED(UPCASE_ERR_PROTOCOL),
        NAMED(UPCASE_ERR_TLS),
#undef NAMED
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        const char *msg = upcase_strerror(named[i].code);
        CHECK(msg != NULL && msg[0] != '\0');
        CHECK(msg != NULL && strcmp(msg, "unknown error") != 0);
        CHECK_STR(upcase_errname(named[i].code), named[i].name);
    }
    /* The codes match the system's errno values, negated. */
    CHECK_EQ(-UPCASE_EINVAL, EINVAL);
    CHECK_EQ(-UPCASE_ECONNREFUSED, ECONNREFUSED);
    CHECK_EQ(-UPCASE_ETIMEDOUT, ETIMEDOUT);
    CHECK_EQ(-UPCASE_ECONNRESET, ECONNRESET);
    CHECK_EQ(-UPCASE_EADDRINUSE, EADDRINUSE);
    CHECK_EQ(-UPCASE_EADDRNOTAVAIL, EADDRNOTAVAIL);
    CHECK_EQ(-UPCASE_EMSGSIZE, EMSGSIZE);
    CHECK_EQ(-UPCASE_EMFILE, EMFILE);

    CHECK_STR(upcase_strerror(0), "success");
    CHECK_STR(upcase_strerror(UPCASE_ECONNREFUSED), "connection refused");
    CHECK(contains_nocase(upcase_strerror(UPCASE_EAI_NONAME), "not known") ||
          contains_nocase(upcase_strerror(UPCASE_EAI_NONAME), "name"));
    CHECK(contains_nocase(upcase_strerror(UPCASE_ERR_BUFFER_TOO_SMALL), "small"));

    static const int unknown[] = { 12345, 1, -1000, -2999, INT_MIN, INT_MAX, UPCASE_ERR_BASE - 999 };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK_STR(upcase_strerror(unknown[i]), "unknown error");
        CHECK_STR(upcase_errname(unknown[i]), "UPCASE_UNKNOWN");
    }
    /* strerror / errname are pure: they leave the last error alone. */
    CHECK_STR(upcase_last_error(), "");
}

static void test_byte_order(void)
{
    g_test = "byte order";
    uint16_t n16 = upcase_hton16(12000);
    uint8_t b[4];
    memcpy(b, &n16, 2);
    CHECK_EQ(b[0], 0x2E);
    CHECK_EQ(b[1], 0xE0);
    CHECK_EQ(n16, htons(12000));
    CHECK_EQ(upcase_ntoh16(n16), 12000);

    uint32_t n32 = upcase_hton32(0x7F000001u);
    memcpy(b, &n32, 4);
    CHECK(b[0] == 0x7F && b[1] == 0x00 && b[2] == 0x00 && b[3] == 0x01);
    CHECK_EQ(n32, htonl(0x7F000001u));
    CHECK_EQ(upcase_ntoh32(n32), 0x7F000001u);

    static const uint16_t v16[] = { 0, 1, 0x00FF, 0xFF00, 0x1234, 0x8000, 0xFFFF };
    static const uint32_t v32[] = { 0, 1, 0xFF, 0x12345678u, 0x80000000u, 0xDEADBEEFu, 0xFFFFFFFFu };
    int ok16 = 1, ok32 = 1;
    for (size_t i = 0; i < sizeof v16 / sizeof v16[0]; i++) {
        ok16 &= upcase_hton16(v16[i]) == htons(v16[i]) && upcase_ntoh16(v16[i]) == ntohs(v16[i]) &&
                upcase_ntoh16(upcase_hton16(v16[i])) == v16[i];
        ok32 &= upcase_hton32(v32[i]) == htonl(v32[i]) && upcase_ntoh32(v32[i]) == ntohl(v32[i]) &&
                upcase_ntoh32(upcase_hton32(v32[i])) == v32[i];
    }
    for (uint32_t p = 0; p <= 0xFFFF; p++)
        ok16 &= upcase_hton16((uint16_t)p) == htons((uint16_t)p) &&
                upcase_ntoh16(upcase_hton16((uint16_t)p)) == (uint16_t)p;
    CHECK(ok16);
    CHECK(ok32);
}

static void test_ip4_addr(void)
{
    g_test = "upcase_ip4_addr";
    struct sockaddr_in sin;
    memset(&sin, 0xAB, sizeof sin);
    if (CHECK_OK(upcase_ip4_addr("127.0.0.1", 12000, &sin))) {
        const uint8_t *port = (const uint8_t *)&sin.sin_port;
        const uint8_t *addr = (const uint8_t *)&sin.sin_addr;
        CHECK_EQ(sin.sin_family, AF_INET);
        CHECK(port[0] == 0x2E && port[1] == 0xE0);
        CHECK(addr[0] == 0x7F && addr[1] == 0x00 && addr[2] == 0x00 && addr[3] == 0x01);
        CHECK(all_bytes(sin.sin_zero, 0, sizeof sin.sin_zero));
    }
    CHECK_OK(upcase_ip4_addr("0.0.0.0", 0, &sin));
    CHECK(sin.sin_addr.s_addr == htonl(INADDR_ANY) && sin.sin_port == 0);
    CHECK_OK(upcase_ip4_addr("255.255.255.255", 65535, &sin));
    CHECK(sin.sin_addr.s_addr == 0xFFFFFFFFu && sin.sin_port == 0xFFFF);
    CHECK_OK(upcase_ip4_addr("10.1.2.3", 80, &sin));
    CHECK(sin.sin_addr.s_addr == htonl(0x0A010203u) && sin.sin_port == htons(80));

    static const char *bad[] = { "256.1.1.1", "::1", "1.2.3", "1.2.3.4.5", "", "localhost", "1.2.3.4 ", "a.b.c.d", "-1.2.3.4" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&sin, 0xAB, sizeof sin);
        if (!CHECK_RC(upcase_ip4_addr(bad[i], 12000, &sin), UPCASE_EINVAL))
            fprintf(stderr, "    input: \"%s\"\n", bad[i]);
        CHECK(all_bytes(&sin, 0xAB, sizeof sin));
    }
    memset(&sin, 0xAB, sizeof sin);
    CHECK_RC(upcase_ip4_addr(NULL, 12000, &sin), UPCASE_EINVAL);
    CHECK(all_bytes(&sin, 0xAB, sizeof sin));
    CHECK(upcase_last_error()[0] != '\0');
    CHECK_RC(upcase_ip4_addr("127.0.0.1", 12000, NULL), UPCASE_EINVAL);
}

static void test_ip6_addr(void)
{
    g_test = "upcase_ip6_addr";
    struct sockaddr_in6 sin6;
    memset(&sin6, 0xAB, sizeof sin6);
    if (CHECK_OK(upcase_ip6_addr("::1", 12000, &sin6))) {
        const uint8_t *port = (const uint8_t *)&sin6.sin6_port;
        CHECK_EQ(sin6.sin6_family, AF_INET6);
        CHECK(port[0] == 0x2E && port[1] == 0xE0);
        CHECK(all_bytes(sin6.sin6_addr.s6_addr, 0, 15) && sin6.sin6_addr.s6_addr[15] == 1);
        CHECK_EQ(sin6.sin6_flowinfo, 0);
        CHECK_EQ(sin6.sin6_scope_id, 0);
    }
    memset(&sin6, 0xAB, sizeof sin6);
    if (CHECK_OK(upcase_ip6_addr("fe80::1%2", 443, &sin6))) {
        CHECK(sin6.sin6_addr.s6_addr[0] == 0xFE && sin6.sin6_addr.s6_addr[1] == 0x80);
        CHECK(sin6.sin6_addr.s6_addr[15] == 1);
        CHECK_EQ(sin6.sin6_scope_id, 2);
        CHECK_EQ(sin6.sin6_port, htons(443));
        CHECK_EQ(sin6.sin6_flowinfo, 0);
    }
    struct in6_addr want;
    inet_pton(AF_INET6, "2001:db8::ff00:42:8329", &want);
    CHECK_OK(upcase_ip6_addr("2001:db8::ff00:42:8329", 1, &sin6));
    CHECK(memcmp(&sin6.sin6_addr, &want, sizeof want) == 0);
    CHECK_OK(upcase_ip6_addr("::", 0, &sin6));
    CHECK(all_bytes(&sin6.sin6_addr, 0, 16) && sin6.sin6_port == 0);
    CHECK_OK(upcase_ip6_addr("::ffff:10.1.2.3", 7, &sin6));
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &want);
    CHECK(memcmp(&sin6.sin6_addr, &want, sizeof want) == 0);

    static const char *bad[] = { "127.0.0.1", "::g", ":::", "1::2::3", "", "fe80::1%", "fe80::1%eth0x", "localhost", "12345::" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&sin6, 0xAB, sizeof sin6);
        if (!CHECK_RC(upcase_ip6_addr(bad[i], 12000, &sin6), UPCASE_EINVAL))
            fprintf(stderr, "    input: \"%s\"\n", bad[i]);
        CHECK(all_bytes(&sin6, 0xAB, sizeof sin6));
    }
    memset(&sin6, 0xAB, sizeof sin6);
    CHECK_RC(upcase_ip6_addr(NULL, 1, &sin6), UPCASE_EINVAL);
    CHECK(all_bytes(&sin6, 0xAB, sizeof sin6));
    CHECK_RC(upcase_ip6_addr("::1", 1, NULL), UPCASE_EINVAL);
}

static void test_addr_name_port(void)
{
    g_test = "upcase_addr_name/upcase_addr_port";
    char buf[UPCASE_ADDRSTRLEN];
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    uint16_t port;

    /* Built by hand with libc, decoded by the library. */
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(12000);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, sizeof buf));
    CHECK_STR(buf, "127.0.0.1:12000");
    port = 0;
    CHECK_OK(upcase_addr_port((struct sockaddr *)&sin, sizeof sin, &port));
    CHECK_EQ(port, 12000);

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    sin6.sin6_addr = in6addr_loopback;
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf));
    CHECK_STR(buf, "[::1]:443");
    CHECK_OK(upcase_addr_port((struct sockaddr *)&sin6, sizeof sin6, &port));
    CHECK_EQ(port, 443);

    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    sin6.sin6_port = htons(65535);
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf));
    CHECK_STR(buf, "[2001:db8::1]:65535");

    /* IPv4-mapped IPv6 shows as plain IPv4. */
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr);
    sin6.sin6_port = htons(4242);
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf));
    CHECK_STR(buf, "10.1.2.3:4242");
    CHECK_OK(upcase_addr_port((struct sockaddr *)&sin6, sizeof sin6, &port));
    CHECK_EQ(port, 4242);

    /* Round trips through the library's own builders. */
    CHECK_OK(upcase_ip4_addr("192.168.1.254", 8080, &sin));
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, sizeof buf));
    CHECK_STR(buf, "192.168.1.254:8080");
    CHECK_OK(upcase_ip6_addr("fe80::1%2", 80, &sin6));
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf));
    CHECK_STR(buf, "[fe80::1%2]:80");

    /* The longest text fits in UPCASE_ADDRSTRLEN. */
    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    memset(&sin6.sin6_addr, 0xFF, 16);
    sin6.sin6_port = 0xFFFF;
    sin6.sin6_scope_id = 0xFFFFFFFFu;
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf));
    CHECK(strlen(buf) < UPCASE_ADDRSTRLEN);
    CHECK(strncmp(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 40) == 0);
    CHECK(strstr(buf, "]:65535") != NULL);

    /* Buffer exactly right, one too small, tiny, 0, NULL. */
    sin.sin_port = htons(12000);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, 16)); /* "127.0.0.1:12000" + NUL */
    CHECK_STR(buf, "127.0.0.1:12000");
    memset(buf, 0xAB, sizeof buf);
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, 15), UPCASE_ERR_BUFFER_TOO_SMALL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    CHECK(upcase_last_error()[0] != '\0');
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, 4), UPCASE_ERR_BUFFER_TOO_SMALL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, buf, 0), UPCASE_EINVAL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, NULL, 64), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin, NULL, 0), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_name(NULL, sizeof sin, buf, sizeof buf), UPCASE_EINVAL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));

    /* Too short for its family, longer than any address. */
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, sizeof sin - 1, buf, sizeof buf), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, 2, buf, sizeof buf), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sin, 0, buf, sizeof buf), UPCASE_EINVAL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    {
        uint8_t big[sizeof(struct sockaddr_storage) + 16];
        memset(big, 0, sizeof big);
        memcpy(big, &sin, sizeof sin);
        CHECK_RC(upcase_addr_name((struct sockaddr *)big, sizeof big, buf, sizeof buf), UPCASE_EINVAL);
        CHECK_RC(upcase_addr_port((struct sockaddr *)big, sizeof big, &port), UPCASE_EINVAL);
    }

    /* Wrong family: AF_UNIX. */
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, "/tmp/upcase-test.sock");
    CHECK_RC(upcase_addr_name((struct sockaddr *)&sun, sizeof sun, buf, sizeof buf), UPCASE_EINVAL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    port = 0xABAB;
    CHECK_RC(upcase_addr_port((struct sockaddr *)&sun, sizeof sun, &port), UPCASE_EINVAL);
    CHECK_EQ(port, 0xABAB);

    /* upcase_addr_port failures leave *port alone. */
    CHECK_RC(upcase_addr_port(NULL, sizeof sin, &port), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_port((struct sockaddr *)&sin, sizeof sin, NULL), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_port((struct sockaddr *)&sin, sizeof sin - 1, &port), UPCASE_EINVAL);
    CHECK_RC(upcase_addr_port((struct sockaddr *)&sin6, sizeof sin6 - 1, &port), UPCASE_EINVAL);
    CHECK_EQ(port, 0xABAB);
}

static void test_upper(void)
{
    g_test = "upcase_upper";
    uint8_t buf[256], want[256];
    for (int i = 0; i < 256; i++)
        buf[i] = (uint8_t)i;
    ref_upper(buf, want, 256);
    CHECK_OK(upcase_upper(buf, sizeof buf));
    CHECK(memcmp(buf, want, sizeof buf) == 0);
    int ok = 1;
    for (int i = 0; i < 256; i++)
        ok &= buf[i] == ((i >= 'a' && i <= 'z') ? i - 32 : i);
    CHECK(ok);

    char text[] = "Hello, World! z{`@[ 123 \xC3\xA9t\xC3\xA9";
    CHECK_OK(upcase_upper((uint8_t *)text, strlen(text)));
    CHECK_STR(text, "HELLO, WORLD! Z{`@[ 123 \xC3\xA9T\xC3\xA9");

    /* Only the given bytes are touched. */
    uint8_t guard[8] = { 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h' };
    CHECK_OK(upcase_upper(guard + 2, 3));
    CHECK(memcmp(guard, "abCDEfgh", 8) == 0);

    CHECK_OK(upcase_upper(NULL, 0));
    CHECK_OK(upcase_upper(buf, 0));
    CHECK_RC(upcase_upper(NULL, 1), UPCASE_EINVAL);
    CHECK(upcase_last_error()[0] != '\0');

    /* A large buffer. */
    size_t n = 1u << 20;
    uint8_t *big = xmalloc(n), *bigwant = xmalloc(n);
    fill_pattern(big, n, 7);
    ref_upper(big, bigwant, n);
    CHECK_OK(upcase_upper(big, n));
    CHECK(memcmp(big, bigwant, n) == 0);
    free(big);
    free(bigwant);
}

/* Where io_uring is refused (Docker's default seccomp profile refuses it),
   a server that asks for it fails at bind, with the kernel's reason. A
   child process installs a seccomp filter that answers io_uring_setup with
   EPERM, as such a profile does, and tries. */
/* A library built without the io-uring feature refuses io_uring at bind,
   with a message that names the feature; the same server binds without it. */
static void test_io_uring_not_built(void)
{
    g_test = "io_uring not built";
    upcase_server_config cfg;
    upcase_server *srv = NULL;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    cfg.io_uring = 1;
    int rc = upcase_server_bind(&cfg, &srv);
    const char *msg = upcase_last_error();
    if (!CHECK(rc == UPCASE_EINVAL && srv == NULL && strstr(msg, "feature io-uring") != NULL))
        fprintf(stderr, "    bind with io_uring gave %d (%s)\n", rc, msg);
    cfg.io_uring = 0;
    CHECK_EQ(upcase_server_bind(&cfg, &srv), UPCASE_OK);
    upcase_server_free(srv);
}

static void test_io_uring_refused(void)
{
    g_test = "io_uring refused";
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        CHECK(pid >= 0);
        return;
    }
    if (pid == 0) {
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { (unsigned short)(sizeof filter / sizeof filter[0]), filter };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            perror("    seccomp");
            _exit(3);
        }
        upcase_server_config cfg;
        upcase_server *srv = NULL;
        config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
        cfg.io_uring = 1;
        int rc = upcase_server_bind(&cfg, &srv);
        const char *msg = upcase_last_error();
        int ok = rc == -EPERM && srv == NULL && contains_nocase(msg, "io_uring_setup") &&
                 contains_nocase(msg, "not permitted");
        if (!ok)
            fprintf(stderr, "    bind with io_uring refused gave %d (%s)\n", rc, msg);
        /* Without io_uring the same server binds. */
        cfg.io_uring = 0;
        if (upcase_server_bind(&cfg, &srv) != UPCASE_OK || srv == NULL) {
            fprintf(stderr, "    bind without io_uring failed: %s\n", upcase_last_error());
            ok = 0;
        }
        upcase_server_free(srv);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_config_default(void)
{
    g_test = "upcase_server_config_default";
    upcase_server_config cfg;
    memset(&cfg, 0xAB, sizeof cfg);
    upcase_server_config_default(&cfg);
    CHECK(cfg.host == NULL);
    CHECK_EQ(cfg.port, 12000);
    CHECK_EQ(cfg.transport, UPCASE_TRANSPORT_TCP);
    CHECK_EQ(cfg.mode, UPCASE_MODE_CONCURRENT);
    CHECK_EQ(cfg.threads, 0);
    CHECK_EQ(cfg.max_connections, 16384);
    CHECK_EQ(cfg.idle_timeout_ms, 60000);
    CHECK_EQ(cfg.min_rate, 1);
    CHECK_EQ(cfg.backlog, 1024);
    CHECK_EQ(cfg.max_datagram, 65527);
    CHECK(cfg.on_client == NULL);
    CHECK(cfg.user == NULL);
    CHECK_EQ(cfg.io_uring, 0);
    CHECK_EQ(cfg.max_connections_per_address, 1024);
    CHECK(cfg.tls == NULL);
    CHECK_EQ(cfg.tls_handshake_timeout_ms, 10000);
    upcase_server_config_default(NULL); /* ignored */
    CHECK(1);
}

/* ------------------------------------------------------------------ */
/* TCP servers                                                         */
/* ------------------------------------------------------------------ */

static void test_tcp_server(const char *host, int family)
{
    if (g_io_uring)
        g_test = family == AF_INET ? "TCP server 127.0.0.1, io_uring" : "TCP server ::1, io_uring";
    else
        g_test = family == AF_INET ? "TCP server 127.0.0.1" : "TCP server ::1";
    upcase_server_config cfg;
    upcase_server *srv = NULL;
    upcase_stats st;
    runner_t r;
    char addr[UPCASE_ADDRSTRLEN], want_addr[UPCASE_ADDRSTRLEN];
    unsigned long long sent = 0, conns = 0;

    config_for(&cfg, host, UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    if (!CHECK_OK(bind_cfg(&cfg, &srv)) || srv == NULL)
        return;
    uint16_t port = port_of(srv);
    if (family == AF_INET)
        snprintf(want_addr, sizeof want_addr, "127.0.0.1:%u", (unsigned)port);
    else
        snprintf(want_addr, sizeof want_addr, "[::1]:%u", (unsigned)port);
    CHECK_OK(upcase_server_address(srv, addr, sizeof addr));
    CHECK_STR(addr, want_addr);
    memset(addr, 0xAB, sizeof addr);
    CHECK_RC(upcase_server_address(srv, addr, 5), UPCASE_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(upcase_server_address(srv, addr, strlen(want_addr)), UPCASE_ERR_BUFFER_TOO_SMALL);
    CHECK(all_bytes(addr, 0xAB, sizeof addr));
    CHECK_RC(upcase_server_address(srv, addr, 0), UPCASE_EINVAL);
    CHECK_RC(upcase_server_address(srv, NULL, 64), UPCASE_EINVAL);
    CHECK_OK(upcase_server_address(srv, addr, strlen(want_addr) + 1));
    CHECK_STR(addr, want_addr);

    /* Counters start at zero. */
    memset(&st, 0xAB, sizeof st);
    CHECK_OK(upcase_server_stats(srv, &st));
    CHECK(st.connections_accepted == 0 && st.connections_active == 0 && st.bytes_in == 0 && st.bytes_out == 0 &&
          st.errors == 0 && st.datagrams_in == 0);

    /* A client connects before run: it queues, and is served once run starts. */
    upcase_connection *early = NULL;
    CHECK_OK(upcase_connection_new(host, port, 5000, &early));
    conns++;

    if (!runner_start(&r, srv)) {
        upcase_connection_free(early);
        upcase_server_free(srv);
        return;
    }
    if (early != NULL) {
        uint8_t rep[16];
        size_t rl = 0;
        CHECK_OK(upcase_connection_request(early, (const uint8_t *)"early bird", 10, rep, sizeof rep, &rl));
        CHECK(rl == 10 && memcmp(rep, "EARLY BIRD", 10) == 0);
        sent += 10;
    }

    /* The textbook exchange. */
    {
        const char *msg = "hello, world";
        uint8_t rep[64];
        size_t rl = 0;
        CHECK_OK(upcase_tcp_request(host, port, (const uint8_t *)msg, strlen(msg), rep, sizeof rep, &rl, 5000));
        CHECK_EQ(rl, strlen(msg));
        CHECK(rl == 12 && memcmp(rep, "HELLO, WORLD", 12) == 0);
        sent += strlen(msg);
        conns++;
    }
    /* Run is running: a second run from another thread is refused. */
    CHECK_RC(upcase_server_run(srv), UPCASE_ERR_BUSY);

    /* Binary: NUL, every byte value, >= 0x80. */
    {
        uint8_t data[512], rep[512], want[512];
        size_t rl = 0;
        for (int i = 0; i < 512; i++)
            data[i] = (uint8_t)(255 - (i % 256));
        ref_upper(data, want, sizeof data);
        CHECK_OK(upcase_tcp_request(host, port, data, sizeof data, rep, sizeof rep, &rl, 5000));
        CHECK_EQ(rl, sizeof data);
        CHECK(memcmp(rep, want, sizeof rep) == 0);
        sent += sizeof data;
        conns++;
    }
    /* Empty request: NULL buffers with length 0. */
    {
        size_t rl = 99;
        CHECK_OK(upcase_tcp_request(host, port, NULL, 0, NULL, 0, &rl, 5000));
        CHECK_EQ(rl, 0);
        conns++;
    }
    /* Large: 1 MiB, and timeout 0 (wait for ever) on a 64 KiB one. */
    if (tcp_roundtrip(host, port, 1u << 20, 42))
        sent += 1u << 20;
    conns++;
    {
        size_t n = 65536, rl = 0;
        uint8_t *data = xmalloc(n), *want = xmalloc(n), *rep = xmalloc(n);
        fill_pattern(data, n, 3);
        ref_upper(data, want, n);
        CHECK_OK(upcase_tcp_request(host, port, data, n, rep, n, &rl, 0));
        CHECK(rl == n && memcmp(rep, want, n) == 0);
        sent += n;
        conns++;
        /* In place: reply buffer == data buffer. */
        fill_pattern(data, n, 4);
        ref_upper(data, want, n);
        rl = 0;
        CHECK_OK(upcase_tcp_request(host, port, data, n, data, n, &rl, 5000));
        CHECK(rl == n && memcmp(data, want, n) == 0);
        sent += n;
        conns++;
        free(data);
        free(want);
        free(rep);
    }
    /* Reply buffer larger than the message. */
    {
        uint8_t rep[100];
        size_t rl = 0;
        memset(rep, 0xAB, sizeof rep);
        CHECK_OK(upcase_tcp_request(host, port, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 5000));
        CHECK(rl == 3 && memcmp(rep, "ABC", 3) == 0 && all_bytes(rep + 3, 0xAB, sizeof rep - 3));
        sent += 3;
        conns++;
    }
    /* Reply buffer too small: the size needed comes back, the buffer is untouched. */
    {
        uint8_t data[100], rep[50];
        size_t rl = 0;
        memset(data, 'q', sizeof data);
        memset(rep, 0xAB, sizeof rep);
        CHECK_RC(upcase_tcp_request(host, port, data, sizeof data, rep, sizeof rep, &rl, 5000),
                 UPCASE_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(rl, 100);
        CHECK(all_bytes(rep, 0xAB, sizeof rep));
        CHECK(upcase_last_error()[0] != '\0');
        rl = 77;
        CHECK_RC(upcase_tcp_request(host, port, data, 1, NULL, 0, &rl, 5000), UPCASE_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(rl, 1);
    }
    /* Argument errors with a live server. */
    {
        uint8_t rep[16];
        size_t rl = 77;
        CHECK_RC(upcase_tcp_request(host, port, (const uint8_t *)"abc", 3, rep, sizeof rep, NULL, 5000), UPCASE_EINVAL);
        CHECK_RC(upcase_tcp_request(host, port, NULL, 3, rep, sizeof rep, &rl, 5000), UPCASE_EINVAL);
        CHECK_RC(upcase_tcp_request(NULL, port, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 5000), UPCASE_EINVAL);
        CHECK_RC(upcase_tcp_request(host, 0, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 5000), UPCASE_EINVAL);
        CHECK_EQ(rl, 77);
    }
    /* By name: "localhost" is 127.0.0.1 (and maybe ::1 too; every address
     * the name gives is tried in turn, so the order does not matter). */
    if (family == AF_INET) {
        uint8_t rep[16];
        size_t rl = 0;
        CHECK_OK(upcase_tcp_request("localhost", port, (const uint8_t *)"via name", 8, rep, sizeof rep, &rl, 5000));
        CHECK(rl == 8 && memcmp(rep, "VIA NAME", 8) == 0);
        sent += 8;
        conns++;
    }

    /* A kept-open connection: 1000 requests. */
    {
        upcase_connection *conn = (upcase_connection *)&r; /* sentinel, must be overwritten */
        if (CHECK_OK(upcase_connection_new(host, port, 5000, &conn)) && CHECK(conn != (upcase_connection *)&r)) {
            int ok = 1;
            conns++;
            for (int i = 0; i < 1000; i++) {
                char msg[64], want[64];
                uint8_t rep[64];
                size_t rl = 0;
                int n = snprintf(msg, sizeof msg, "message %d of 1000: abc\x01\xff xyz", i);
                ref_upper((const uint8_t *)msg, (uint8_t *)want, (size_t)n);
                int rc = upcase_connection_request(conn, (const uint8_t *)msg, (size_t)n, rep, sizeof rep, &rl);
                if (rc != 0 || rl != (size_t)n || memcmp(rep, want, (size_t)n) != 0) {
                    CHECK_OK(rc);
                    fail_at(__FILE__, __LINE__, "connection request %d: len %zu", i, rl);
                    ok = 0;
                    break;
                }
                sent += (unsigned)n;
            }
            CHECK(ok);
            /* Empty request on the connection: nothing to wait for. */
            size_t rl = 5;
            CHECK_OK(upcase_connection_request(conn, NULL, 0, NULL, 0, &rl));
            CHECK_EQ(rl, 0);
            /* A large request on the same connection, in place. */
            size_t n = 1u << 20;
            uint8_t *data = xmalloc(n), *want = xmalloc(n);
            fill_pattern(data, n, 99);
            ref_upper(data, want, n);
            rl = 0;
            CHECK_OK(upcase_connection_request(conn, data, n, data, n, &rl));
            CHECK(rl == n && memcmp(data, want, n) == 0);
            sent += n;
            free(data);
            free(want);
            /* Still usable afterwards. */
            uint8_t rep[8];
            CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"after", 5, rep, sizeof rep, &rl));
            CHECK(rl == 5 && memcmp(rep, "AFTER", 5) == 0);
            sent += 5;
            /* Argument errors. */
            CHECK_RC(upcase_connection_request(conn, (const uint8_t *)"x", 1, rep, sizeof rep, NULL), UPCASE_EINVAL);
            CHECK_RC(upcase_connection_request(conn, NULL, 1, rep, sizeof rep, &rl), UPCASE_EINVAL);
            CHECK_RC(upcase_connection_request(NULL, (const uint8_t *)"x", 1, rep, sizeof rep, &rl), UPCASE_EINVAL);
        }
        upcase_connection_free(conn == (upcase_connection *)&r ? NULL : conn);
    }
    /* Reply buffer too small on a connection (then it is thrown away). */
    {
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new(host, port, 5000, &conn))) {
            uint8_t rep[4];
            size_t rl = 0;
            memset(rep, 0xAB, sizeof rep);
            CHECK_RC(upcase_connection_request(conn, (const uint8_t *)"too long", 8, rep, sizeof rep, &rl),
                     UPCASE_ERR_BUFFER_TOO_SMALL);
            CHECK_EQ(rl, 8);
            CHECK(all_bytes(rep, 0xAB, sizeof rep));
            conns++;
        }
        upcase_connection_free(conn);
    }
    upcase_connection_free(early);
    upcase_connection_free(NULL);

    /* Counters: connections and bytes (updated by server threads: wait a little). */
    memset(&st, 0, sizeof st);
    WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.bytes_out >= sent && st.connections_accepted >= conns &&
                   st.connections_active == 0,
               3000);
    CHECK_GE(st.connections_accepted, conns);
    CHECK_GE(st.bytes_in, sent);
    CHECK_GE(st.bytes_out, sent);
    CHECK_EQ(st.connections_active, 0);
    CHECK_EQ(st.connections_rejected, 0);
    CHECK_EQ(st.datagrams_in, 0);
    CHECK_EQ(st.idle_timeouts, 0);

    /* A connection open while the server stops. */
    upcase_connection *held = NULL;
    CHECK_OK(upcase_connection_new(host, port, 2000, &held));

    /* Stop from this thread: run returns 0 promptly; stop leaves last_error alone. */
    CHECK_RC(upcase_ip4_addr("bogus", 1, NULL), UPCASE_EINVAL);
    char saved[256];
    snprintf(saved, sizeof saved, "%s", upcase_last_error());
    long long t0 = now_ms();
    CHECK_OK(upcase_server_stop(srv));
    CHECK_STR(upcase_last_error(), saved);
    CHECK_OK(runner_join(&r, 5000));
    CHECK_LE(now_ms() - t0, 2000);
    CHECK_OK(upcase_server_stop(srv)); /* again: harmless */
    CHECK_RC(upcase_server_run(srv), UPCASE_ERR_STOPPED);
    CHECK(upcase_last_error()[0] != '\0');
    CHECK_OK(upcase_server_stats(srv, &st));
    CHECK_GE(st.connections_accepted, conns);
    CHECK_EQ(upcase_server_port(srv), port);

    /* The held connection was closed by the stop: requests fail cleanly
     * (and writing to it must not raise SIGPIPE in this process). */
    if (held != NULL) {
        for (int i = 0; i < 3; i++) {
            uint8_t rep[1024], data[1024];
            size_t rl = 0;
            memset(data, 'z', sizeof data);
            int rc = upcase_connection_request(held, data, sizeof data, rep, sizeof rep, &rl);
            if (!CHECK(rc < 0 && rc != UPCASE_ERR_PANIC))
                fprintf(stderr, "    request %d on a connection closed by stop: %d (%s)\n", i, rc, upcase_errname(rc));
        }
        upcase_connection_free(held);
    }

    upcase_server_free(srv);
    upcase_server_free(NULL);
    CHECK(1);

    /* Freed: the port is released, nothing answers there any more. */
    {
        uint8_t rep[8];
        size_t rl = 0;
        CHECK_RC(upcase_tcp_request(host, port, (const uint8_t *)"x", 1, rep, sizeof rep, &rl, 2000), UPCASE_ECONNREFUSED);
    }
}

static void test_iterative(const char *host)
{
    g_test = "TCP iterative server";
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, host, UPCASE_TRANSPORT_TCP, UPCASE_MODE_ITERATIVE);
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    tcp_roundtrip(host, port, 11, 1);
    tcp_roundtrip(host, port, 256, 2);
    tcp_roundtrip(host, port, 1u << 20, 3);
    {
        size_t rl = 3;
        CHECK_OK(upcase_tcp_request(host, port, NULL, 0, NULL, 0, &rl, 5000));
        CHECK_EQ(rl, 0);
    }
    CHECK_RC(upcase_server_run(srv), UPCASE_ERR_BUSY);
    /* Kept-open connection: several requests, then the next client is served. */
    upcase_connection *conn = NULL;
    if (CHECK_OK(upcase_connection_new(host, port, 5000, &conn))) {
        int ok = 1;
        for (int i = 0; i < 100 && ok; i++) {
            uint8_t rep[32];
            size_t rl = 0;
            char msg[32];
            int n = snprintf(msg, sizeof msg, "iter %d", i);
            ok &= upcase_connection_request(conn, (const uint8_t *)msg, (size_t)n, rep, sizeof rep, &rl) == 0 &&
                  rl == (size_t)n && memcmp(rep, "ITER ", 5) == 0;
        }
        CHECK(ok);
        upcase_connection_free(conn);
    }
    tcp_roundtrip(host, port, 1000, 4);
    upcase_stats st;
    memset(&st, 0, sizeof st);
    WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.connections_accepted >= 6 &&
                   st.bytes_in >= (1u << 20) + 256 + 11 + 1000 && st.bytes_out >= (1u << 20) + 256 + 11,
               3000);
    CHECK_GE(st.connections_accepted, 6);
    CHECK_GE(st.bytes_in, (1u << 20) + 256 + 11 + 1000);
    CHECK_GE(st.bytes_out, (1u << 20) + 256 + 11);

    /* Stop while a client holds the (only) connection open. */
    conn = NULL;
    if (CHECK_OK(upcase_connection_new(host, port, 5000, &conn))) {
        uint8_t rep[8];
        size_t rl = 0;
        CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"hold", 4, rep, sizeof rep, &rl));
    }
    stop_server(srv, &r);
    upcase_connection_free(conn);
}

/* ------------------------------------------------------------------ */
/* UDP servers                                                         */
/* ------------------------------------------------------------------ */

static void test_udp_server(const char *host, int family)
{
    g_test = family == AF_INET ? "UDP server 127.0.0.1" : "UDP server ::1";
    upcase_server_config cfg;
    runner_t r;
    char addr[UPCASE_ADDRSTRLEN];
    config_for(&cfg, host, UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    char want_addr[UPCASE_ADDRSTRLEN];
    snprintf(want_addr, sizeof want_addr, family == AF_INET ? "127.0.0.1:%u" : "[::1]:%u", (unsigned)port);
    CHECK_OK(upcase_server_address(srv, addr, sizeof addr));
    CHECK_STR(addr, want_addr);

    {
        uint8_t rep[32];
        size_t rl = 0;
        CHECK_OK(upcase_udp_request(host, port, (const uint8_t *)"hello, udp", 10, rep, sizeof rep, &rl, 1000, 3));
        CHECK(rl == 10 && memcmp(rep, "HELLO, UDP", 10) == 0);
    }
    /* Empty datagram. */
    {
        size_t rl = 7;
        CHECK_OK(upcase_udp_request(host, port, NULL, 0, NULL, 0, &rl, 1000, 3));
        CHECK_EQ(rl, 0);
    }
    /* Every byte value. */
    udp_roundtrip(host, port, 256, 5);
    udp_roundtrip(host, port, 1500, 6);
    /* The largest datagram: 65507 over IPv4, 65527 over IPv6. */
    size_t maxdg = family == AF_INET ? 65507 : 65527;
    udp_roundtrip(host, port, maxdg, 7);
    /* One more byte: EMSGSIZE, before anything is sent; reply_len untouched. */
    {
        size_t n = maxdg + 1, rl = 4242;
        uint8_t *data = xmalloc(n), *rep = xmalloc(n);
        memset(data, 'm', n);
        CHECK_RC(upcase_udp_request(host, port, data, n, rep, n, &rl, 500, 0), UPCASE_EMSGSIZE);
        CHECK_EQ(rl, 4242);
        CHECK(upcase_last_error()[0] != '\0');
        free(data);
        free(rep);
    }
    /* In place. */
    {
        uint8_t buf[64];
        size_t rl = 0;
        memcpy(buf, "in place", 8);
        CHECK_OK(upcase_udp_request(host, port, buf, 8, buf, sizeof buf, &rl, 1000, 3));
        CHECK(rl == 8 && memcmp(buf, "IN PLACE", 8) == 0);
    }
    /* Reply buffer too small. */
    {
        uint8_t rep[4];
        size_t rl = 0;
        memset(rep, 0xAB, sizeof rep);
        CHECK_RC(upcase_udp_request(host, port, (const uint8_t *)"0123456789", 10, rep, sizeof rep, &rl, 1000, 0),
                 UPCASE_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(rl, 10);
        CHECK(all_bytes(rep, 0xAB, sizeof rep));
    }
    /* Argument errors. */
    {
        uint8_t rep[8];
        size_t rl = 4242;
        CHECK_RC(upcase_udp_request(host, port, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 0, 3), UPCASE_EINVAL);
        CHECK_RC(upcase_udp_request(host, port, (const uint8_t *)"abc", 3, rep, sizeof rep, NULL, 500, 0), UPCASE_EINVAL);
        CHECK_RC(upcase_udp_request(NULL, port, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 500, 0), UPCASE_EINVAL);
        CHECK_RC(upcase_udp_request(host, 0, (const uint8_t *)"abc", 3, rep, sizeof rep, &rl, 500, 0), UPCASE_EINVAL);
        CHECK_RC(upcase_udp_request(host, port, NULL, 3, rep, sizeof rep, &rl, 500, 0), UPCASE_EINVAL);
        CHECK_EQ(rl, 4242);
    }
    /* Many in a row. */
    {
        int ok = 1;
        for (int i = 0; i < 200 && ok; i++) {
            char msg[32];
            uint8_t rep[32];
            size_t rl = 0;
            int n = snprintf(msg, sizeof msg, "dgram %d", i);
            ok &= upcase_udp_request(host, port, (const uint8_t *)msg, (size_t)n, rep, sizeof rep, &rl, 1000, 3) == 0 &&
                  rl == (size_t)n && memcmp(rep, "DGRAM ", 6) == 0;
        }
        CHECK(ok);
    }
    upcase_stats st;
    memset(&st, 0, sizeof st);
    /* 1 + empty + 256 + 1500 + largest + in place + 200 (the rest failed before sending) */
    WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.datagrams_in >= 206 && st.datagrams_out >= 206 &&
                   st.bytes_in >= maxdg + 256 + 1500 + 10 && st.bytes_out >= maxdg + 256 + 1500 + 10,
               3000);
    CHECK_GE(st.datagrams_in, 206);
    CHECK_GE(st.datagrams_out, 206);
    CHECK_GE(st.bytes_in, maxdg + 256 + 1500 + 10);
    CHECK_GE(st.bytes_out, maxdg + 256 + 1500 + 10);
    CHECK_EQ(st.connections_accepted, 0);
    stop_server(srv, &r);
}

static void test_udp_small_max(void)
{
    g_test = "UDP max_datagram";
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    cfg.max_datagram = 100;
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    udp_roundtrip("127.0.0.1", port, 100, 11);
    {
        uint8_t data[200], rep[200];
        size_t rl = 4242;
        memset(data, 'a', sizeof data);
        long long t0 = now_ms();
        CHECK_RC(upcase_udp_request("127.0.0.1", port, data, sizeof data, rep, sizeof rep, &rl, 200, 0), UPCASE_ETIMEDOUT);
        long long dt = now_ms() - t0;
        CHECK_GE(dt, 150);
        CHECK_LE(dt, 2000);
        CHECK_EQ(rl, 4242);
        CHECK(contains_nocase(upcase_last_error(), "127.0.0.1"));
        /* With retries: still bounded, roughly (retries + 1) * timeout. */
        t0 = now_ms();
        CHECK_RC(upcase_udp_request("127.0.0.1", port, data, 101, rep, sizeof rep, &rl, 100, 2), UPCASE_ETIMEDOUT);
        dt = now_ms() - t0;
        CHECK_GE(dt, 250);
        CHECK_LE(dt, 3000);
    }
    udp_roundtrip("127.0.0.1", port, 1, 12);
    upcase_stats st;
    memset(&st, 0, sizeof st);
    WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.datagrams_dropped >= 4 && st.datagrams_in >= 6 &&
                   st.datagrams_out >= 2,
               3000);
    CHECK_GE(st.datagrams_dropped, 4);
    CHECK_GE(st.datagrams_in, 6);
    CHECK_GE(st.datagrams_out, 2);
    stop_server(srv, &r);
}

/* ------------------------------------------------------------------ */
/* Stop from a signal handler; EINTR everywhere                        */
/* ------------------------------------------------------------------ */

static upcase_server *volatile g_sig_server;
static volatile sig_atomic_t g_sig_rc = 99;
static volatile sig_atomic_t g_sig_count;

static void on_sigusr1(int sig)
{
    int saved = errno;
    (void)sig;
    g_sig_rc = upcase_server_stop(g_sig_server);
    g_sig_count++;
    errno = saved;
}

static void on_sigusr2(int sig)
{
    (void)sig; /* only there to interrupt system calls */
}

static void install(int sig, void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: system calls see EINTR */
    sigaction(sig, &sa, NULL);
}

static void signal_stop_case(int transport, int mode, int use_kill)
{
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, "127.0.0.1", transport, mode);
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    /* Serving: one exchange proves run is in its loop. */
    if (transport == UPCASE_TRANSPORT_TCP)
        tcp_roundtrip("127.0.0.1", port, 100, 21);
    else
        udp_roundtrip("127.0.0.1", port, 100, 21);
    g_sig_server = srv;
    g_sig_rc = 99;
    g_sig_count = 0;
    char before[256];
    snprintf(before, sizeof before, "%s", upcase_last_error());
    long long t0 = now_ms();
    if (use_kill)
        CHECK(kill(getpid(), SIGUSR1) == 0);
    else
        CHECK(pthread_kill(r.th, SIGUSR1) == 0);
    CHECK_OK(runner_join(&r, 5000));
    CHECK_LE(now_ms() - t0, 2000);
    CHECK_EQ(g_sig_count, 1);
    CHECK_EQ(g_sig_rc, 0);
    CHECK_STR(upcase_last_error(), before);
    CHECK_RC(upcase_server_run(srv), UPCASE_ERR_STOPPED);
    g_sig_server = NULL;
    upcase_server_free(srv);
}

static void test_signal_stop(void)
{
    g_test = "stop from a signal handler";
    install(SIGUSR1, on_sigusr1);
    signal_stop_case(UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT, 0);
    signal_stop_case(UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT, 1);
    signal_stop_case(UPCASE_TRANSPORT_TCP, UPCASE_MODE_ITERATIVE, 0);
    signal_stop_case(UPCASE_TRANSPORT_TCP, UPCASE_MODE_ITERATIVE, 1);
    signal_stop_case(UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT, 0);
    signal_stop_case(UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT, 1);
    signal(SIGUSR1, SIG_DFL);
}

typedef struct {
    pthread_t targets[2];
    atomic_int stop;
    atomic_int sent;
} pelter_t;

static void *pelter_main(void *arg)
{
    pelter_t *p = arg;
    while (!atomic_load(&p->stop)) {
        for (int i = 0; i < 2; i++)
            if (pthread_kill(p->targets[i], SIGUSR2) == 0)
                atomic_fetch_add(&p->sent, 1);
        struct timespec ts = { 0, 2000000L };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Signals keep interrupting the client (this thread) and the server's
 * thread: every system call must retry on EINTR. */
static void test_eintr(void)
{
    g_test = "EINTR storm";
    upcase_server_config cfg;
    runner_t r, ru;
    pelter_t p;
    install(SIGUSR2, on_sigusr2);
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    cfg.threads = 1;
    upcase_server *srv = start_server(&cfg, &r);
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    cfg.threads = 1;
    upcase_server *usrv = srv ? start_server(&cfg, &ru) : NULL;
    if (srv == NULL || usrv == NULL) {
        if (srv)
            stop_server(srv, &r);
        signal(SIGUSR2, SIG_DFL);
        return;
    }
    uint16_t port = port_of(srv), uport = port_of(usrv);
    tcp_roundtrip("127.0.0.1", port, 10, 1); /* running */
    p.targets[0] = pthread_self();
    p.targets[1] = r.th;
    atomic_init(&p.stop, 0);
    atomic_init(&p.sent, 0);
    pthread_t pt;
    if (CHECK(pthread_create(&pt, NULL, pelter_main, &p) == 0)) {
        int ok = 1;
        for (int i = 0; i < 100 && ok; i++)
            ok &= tcp_roundtrip("127.0.0.1", port, 4096, (uint32_t)i + 100);
        ok &= tcp_roundtrip("127.0.0.1", port, 1u << 20, 77);
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new("127.0.0.1", port, 5000, &conn))) {
            for (int i = 0; i < 200 && ok; i++) {
                uint8_t rep[16];
                size_t rl = 0;
                ok &= CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"interrupted", 11, rep, sizeof rep, &rl)) &&
                      rl == 11 && memcmp(rep, "INTERRUPTED", 11) == 0;
            }
            upcase_connection_free(conn);
        }
        for (int i = 0; i < 50 && ok; i++)
            ok &= udp_roundtrip("127.0.0.1", uport, 512, (uint32_t)i + 500);
        CHECK(ok);
        atomic_store(&p.stop, 1);
        pthread_join(pt, NULL);
        CHECK_GE(atomic_load(&p.sent), 2);
    }
    stop_server(srv, &r);
    stop_server(usrv, &ru);
    signal(SIGUSR2, SIG_DFL);
}

/* ------------------------------------------------------------------ */
/* on_client                                                           */
/* ------------------------------------------------------------------ */

static struct {
    pthread_mutex_t mu;
    int count;
    char host[UPCASE_ADDRSTRLEN];
    unsigned port;
    void *user;
    int ports_seen_match;
    unsigned want_port;
} g_cb = { PTHREAD_MUTEX_INITIALIZER, 0, "", 0, NULL, 0, 0 };

static int g_cb_token;

static void on_client(void *user, const char *host, uint16_t port)
{
    pthread_mutex_lock(&g_cb.mu);
    g_cb.count++;
    snprintf(g_cb.host, sizeof g_cb.host, "%s", host ? host : "(NULL)");
    g_cb.port = port;
    g_cb.user = user;
    if (port == g_cb.want_port)
        g_cb.ports_seen_match++;
    pthread_mutex_unlock(&g_cb.mu);
}

static int cb_count(void)
{
    pthread_mutex_lock(&g_cb.mu);
    int n = g_cb.count;
    pthread_mutex_unlock(&g_cb.mu);
    return n;
}

static void cb_reset(unsigned want_port)
{
    pthread_mutex_lock(&g_cb.mu);
    g_cb.count = 0;
    g_cb.host[0] = '\0';
    g_cb.port = 0;
    g_cb.user = NULL;
    g_cb.ports_seen_match = 0;
    g_cb.want_port = want_port;
    pthread_mutex_unlock(&g_cb.mu);
}

static void on_client_tcp_case(int mode, const char *host, int family, const char *want_host)
{
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, host, UPCASE_TRANSPORT_TCP, mode);
    cfg.on_client = on_client;
    cfg.user = &g_cb_token;
    cb_reset(0);
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    int fd = plain_connect(family, port);
    if (CHECK(fd >= 0)) {
        struct sockaddr_storage me;
        socklen_t len = sizeof me;
        uint16_t my_port = 0;
        CHECK(getsockname(fd, (struct sockaddr *)&me, &len) == 0);
        CHECK_OK(upcase_addr_port((struct sockaddr *)&me, len, &my_port));
        CHECK_EQ(my_port, local_port(fd));
        pthread_mutex_lock(&g_cb.mu);
        g_cb.want_port = my_port;
        pthread_mutex_unlock(&g_cb.mu);
        CHECK(send(fd, "ping me", 7, MSG_NOSIGNAL) == 7);
        shutdown(fd, SHUT_WR);
        uint8_t rep[16];
        size_t got = read_to_eof(fd, rep, sizeof rep, 5000);
        CHECK(got == 7 && memcmp(rep, "PING ME", 7) == 0);
        close(fd);
        WAIT_UNTIL(cb_count() >= 1, 3000);
        pthread_mutex_lock(&g_cb.mu);
        CHECK_EQ(g_cb.count, 1);
        CHECK_STR(g_cb.host, want_host);
        CHECK_EQ(g_cb.port, my_port);
        CHECK(g_cb.user == &g_cb_token);
        pthread_mutex_unlock(&g_cb.mu);
    }
    /* Once per connection. */
    tcp_roundtrip(host, port, 10, 1);
    tcp_roundtrip(host, port, 10, 2);
    WAIT_UNTIL(cb_count() >= 3, 3000);
    CHECK_EQ(cb_count(), 3);
    stop_server(srv, &r);
}

static void test_on_client(void)
{
    g_test = "on_client callback";
    on_client_tcp_case(UPCASE_MODE_CONCURRENT, "127.0.0.1", AF_INET, "127.0.0.1");
    on_client_tcp_case(UPCASE_MODE_ITERATIVE, "127.0.0.1", AF_INET, "127.0.0.1");
    on_client_tcp_case(UPCASE_MODE_CONCURRENT, "::1", AF_INET6, "::1");

    /* UDP: once per datagram. */
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    cfg.on_client = on_client;
    cfg.user = &g_cb_token;
    cb_reset(0);
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    uint16_t uport = 0;
    int fd = plain_bound(AF_INET, SOCK_DGRAM, &uport);
    if (CHECK(fd >= 0)) {
        struct sockaddr_storage to;
        socklen_t tolen = loopback(AF_INET, port, &to);
        pthread_mutex_lock(&g_cb.mu);
        g_cb.want_port = uport;
        pthread_mutex_unlock(&g_cb.mu);
        CHECK(sendto(fd, "dgram", 5, MSG_NOSIGNAL, (struct sockaddr *)&to, tolen) == 5);
        uint8_t rep[16];
        struct pollfd pfd = { fd, POLLIN, 0 };
        CHECK(poll(&pfd, 1, 3000) == 1);
        CHECK(recv(fd, rep, sizeof rep, MSG_DONTWAIT) == 5 && memcmp(rep, "DGRAM", 5) == 0);
        close(fd);
        WAIT_UNTIL(cb_count() >= 1, 3000);
        pthread_mutex_lock(&g_cb.mu);
        CHECK_EQ(g_cb.count, 1);
        CHECK_STR(g_cb.host, "127.0.0.1");
        CHECK_EQ(g_cb.port, uport);
        CHECK(g_cb.user == &g_cb_token);
        pthread_mutex_unlock(&g_cb.mu);
    }
    udp_roundtrip("127.0.0.1", port, 10, 1);
    WAIT_UNTIL(cb_count() >= 2, 3000);
    CHECK_EQ(cb_count(), 2);
    stop_server(srv, &r);
}

/* ------------------------------------------------------------------ */
/* Client errors                                                       */
/* ------------------------------------------------------------------ */

static int is_resolver_code(int rc)
{
    return rc <= UPCASE_EAI_BASE && rc > UPCASE_ERR_BASE;
}

static void test_client_errors(void)
{
    g_test = "client errors";
    uint8_t rep[64];
    size_t rl = 4242;
    const uint8_t *msg = (const uint8_t *)"abc";
    upcase_connection *const sentinel = (upcase_connection *)&g_cb_token;
    upcase_connection *conn;

    /* Bad arguments, before any traffic. */
    CHECK_RC(upcase_tcp_request(NULL, 12000, msg, 3, rep, sizeof rep, &rl, 1000), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "host"));
    CHECK_RC(upcase_tcp_request("127.0.0.1", 12000, msg, 3, rep, sizeof rep, NULL, 1000), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "reply_len"));
    CHECK_RC(upcase_tcp_request("127.0.0.1", 0, msg, 3, rep, sizeof rep, &rl, 1000), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "port"));
    CHECK_EQ(rl, 4242);

    conn = sentinel;
    CHECK_RC(upcase_connection_new(NULL, 12000, 1000, &conn), UPCASE_EINVAL);
    CHECK_RC(upcase_connection_new("127.0.0.1", 12000, 1000, NULL), UPCASE_EINVAL);
    CHECK_RC(upcase_connection_new("127.0.0.1", 0, 1000, &conn), UPCASE_EINVAL);
    CHECK(conn == sentinel);

    /* Connection refused, with the address and the OS's words. */
    uint16_t closed = closed_port(AF_INET, SOCK_STREAM);
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%u", (unsigned)closed);
    long long t0 = now_ms();
    CHECK_RC(upcase_tcp_request("127.0.0.1", closed, msg, 3, rep, sizeof rep, &rl, 2000), UPCASE_ECONNREFUSED);
    CHECK_LE(now_ms() - t0, 2000);
    CHECK(contains_nocase(upcase_last_error(), "127.0.0.1"));
    CHECK(contains_nocase(upcase_last_error(), "refused"));
    CHECK(contains_nocase(upcase_last_error(), port_text));
    CHECK_EQ(rl, 4242);
    CHECK_RC(upcase_tcp_request("127.0.0.1", closed, msg, 3, rep, sizeof rep, &rl, 0), UPCASE_ECONNREFUSED);
    CHECK_RC(upcase_connection_new("127.0.0.1", closed, 2000, &conn), UPCASE_ECONNREFUSED);
    CHECK(contains_nocase(upcase_last_error(), "refused"));
    CHECK(conn == sentinel);
    uint16_t closed6 = closed_port(AF_INET6, SOCK_STREAM);
    CHECK_RC(upcase_tcp_request("::1", closed6, msg, 3, rep, sizeof rep, &rl, 2000), UPCASE_ECONNREFUSED);
    CHECK(contains_nocase(upcase_last_error(), "::1"));
    CHECK(contains_nocase(upcase_last_error(), "refused"));

    /* A name that does not resolve. */
    int rc = upcase_tcp_request("no-such-host.invalid", 12000, msg, 3, rep, sizeof rep, &rl, 2000);
    if (!CHECK(is_resolver_code(rc)))
        fprintf(stderr, "    unknown host gave %d (%s)\n", rc, upcase_errname(rc));
    CHECK(contains_nocase(upcase_last_error(), "no-such-host.invalid"));
    CHECK(strcmp(upcase_errname(rc), "UPCASE_UNKNOWN") != 0);
    CHECK_EQ(rl, 4242);
    rc = upcase_connection_new("no-such-host.invalid", 12000, 2000, &conn);
    CHECK(is_resolver_code(rc));
    CHECK(contains_nocase(upcase_last_error(), "no-such-host.invalid"));
    CHECK(conn == sentinel);
    rc = upcase_udp_request("no-such-host.invalid", 12000, msg, 3, rep, sizeof rep, &rl, 500, 0);
    CHECK(is_resolver_code(rc));
    CHECK(contains_nocase(upcase_last_error(), "no-such-host.invalid"));

    /* UDP: argument errors. */
    CHECK_RC(upcase_udp_request("127.0.0.1", 12000, msg, 3, rep, sizeof rep, &rl, 0, 0), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "timeout"));
    CHECK_RC(upcase_udp_request(NULL, 12000, msg, 3, rep, sizeof rep, &rl, 500, 0), UPCASE_EINVAL);
    CHECK_RC(upcase_udp_request("127.0.0.1", 12000, msg, 3, rep, sizeof rep, NULL, 500, 0), UPCASE_EINVAL);
    CHECK_RC(upcase_udp_request("127.0.0.1", 0, msg, 3, rep, sizeof rep, &rl, 500, 0), UPCASE_EINVAL);
    CHECK_EQ(rl, 4242);

    /* UDP to a closed port: refused (ICMP) or timed out, in bounded time. */
    uint16_t uclosed = closed_port(AF_INET, SOCK_DGRAM);
    t0 = now_ms();
    rc = upcase_udp_request("127.0.0.1", uclosed, msg, 3, rep, sizeof rep, &rl, 300, 1);
    CHECK(rc == UPCASE_ECONNREFUSED || rc == UPCASE_ETIMEDOUT);
    CHECK_LE(now_ms() - t0, 3000);
    CHECK_EQ(rl, 4242);
    uint16_t uclosed6 = closed_port(AF_INET6, SOCK_DGRAM);
    t0 = now_ms();
    rc = upcase_udp_request("::1", uclosed6, msg, 3, rep, sizeof rep, &rl, 300, 1);
    CHECK(rc == UPCASE_ECONNREFUSED || rc == UPCASE_ETIMEDOUT);
    CHECK_LE(now_ms() - t0, 3000);

    /* Datagrams too large for IPv4, whatever the port. */
    {
        size_t n = 100000;
        uint8_t *big = xmalloc(n), *bigrep = xmalloc(n);
        memset(big, 'b', n);
        rl = 4242;
        CHECK_RC(upcase_udp_request("127.0.0.1", uclosed, big, 65508, bigrep, n, &rl, 300, 0), UPCASE_EMSGSIZE);
        CHECK_RC(upcase_udp_request("127.0.0.1", uclosed, big, n, bigrep, n, &rl, 300, 0), UPCASE_EMSGSIZE);
        CHECK_RC(upcase_udp_request("::1", uclosed6, big, 65528, bigrep, n, &rl, 300, 0), UPCASE_EMSGSIZE);
        CHECK_EQ(rl, 4242);
        free(big);
        free(bigrep);
    }
}

/* A misbehaving server, on plain sockets, for the client's error paths. */
enum { FAKE_RST, FAKE_SHORT, FAKE_LONG, FAKE_SILENT, FAKE_SHORT_N };

typedef struct {
    int lfd;
    int mode;
    size_t expect; /* FAKE_SHORT_N: bytes to read before answering */
    int done[2];   /* a pipe: fake_end writes to it, FAKE_SILENT waits for it */
    pthread_t th;
} fake_t;

static void *fake_main(void *arg)
{
    fake_t *f = arg;
    struct pollfd p = { f->lfd, POLLIN, 0 };
    if (poll(&p, 1, 5000) != 1)
        return NULL;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t cap = 1u << 20;
    uint8_t *buf = xmalloc(cap);
    size_t got = 0;
    switch (f->mode) {
    case FAKE_RST: {
        struct pollfd q = { fd, POLLIN, 0 };
        poll(&q, 1, 5000);
        (void)!recv(fd, buf, 1, 0);
        close_with_rst(fd);
        fd = -1;
        break;
    }
    case FAKE_SHORT:
        got = read_to_eof(fd, buf, cap, 5000);
        (void)!send(fd, buf, got / 2, MSG_NOSIGNAL);
        break;
    case FAKE_LONG:
        got = read_to_eof(fd, buf, cap - 16, 5000);
        memset(buf + got, '!', 5);
        (void)!send(fd, buf, got + 5, MSG_NOSIGNAL);
        break;
    case FAKE_SILENT: {
        read_to_eof(fd, buf, cap, 5000); /* the request, to the client's half-close */
        /* and no answer, until the test is over with the client */
        struct pollfd q = { f->done[0], POLLIN, 0 };
        poll(&q, 1, 5000);
        break;
    }
    case FAKE_SHORT_N:
        while (got < f->expect) {
            struct pollfd q = { fd, POLLIN, 0 };
            if (poll(&q, 1, 5000) != 1)
                break;
            ssize_t n = recv(fd, buf + got, f->expect - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        (void)!send(fd, buf, got / 2, MSG_NOSIGNAL);
        break;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static uint16_t fake_start(fake_t *f, int mode, size_t expect)
{
    uint16_t port = 0;
    f->mode = mode;
    f->expect = expect;
    f->lfd = plain_bound(AF_INET, SOCK_STREAM, &port);
    if (!CHECK(f->lfd >= 0))
        return 0;
    if (!CHECK(pipe(f->done) == 0)) {
        close(f->lfd);
        f->lfd = -1;
        return 0;
    }
    if (!CHECK(pthread_create(&f->th, NULL, fake_main, f) == 0)) {
        close(f->lfd);
        close(f->done[0]);
        close(f->done[1]);
        f->lfd = -1;
        return 0;
    }
    return port;
}

static void fake_end(fake_t *f)
{
    if (f->lfd < 0)
        return;
    (void)!write(f->done[1], "", 1);
    pthread_join(f->th, NULL); /* bounded: every wait in fake_main is */
    close(f->lfd);
    close(f->done[0]);
    close(f->done[1]);
}

static void test_bad_peers(void)
{
    g_test = "misbehaving peers";
    fake_t f;
    uint16_t port;
    size_t rl;
    int rc;

    /* Reset while we are still sending 4 MiB: an error, not SIGPIPE. */
    if ((port = fake_start(&f, FAKE_RST, 0)) != 0) {
        size_t n = 4u << 20;
        uint8_t *data = xmalloc(n), *rep = xmalloc(n);
        memset(data, 'r', n);
        rl = 4242;
        rc = upcase_tcp_request("127.0.0.1", port, data, n, rep, n, &rl, 5000);
        if (!CHECK(rc < 0 && rc != UPCASE_ERR_PANIC && rc != UPCASE_ETIMEDOUT))
            fprintf(stderr, "    reset peer gave %d (%s)\n", rc, upcase_errname(rc));
        CHECK_EQ(rl, 4242);
        fake_end(&f);
        free(data);
        free(rep);
    }
    /* Same with a kept-open connection. */
    if ((port = fake_start(&f, FAKE_RST, 0)) != 0) {
        size_t n = 4u << 20;
        uint8_t *data = xmalloc(n), *rep = xmalloc(n);
        memset(data, 'r', n);
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new("127.0.0.1", port, 5000, &conn))) {
            rc = upcase_connection_request(conn, data, n, rep, n, &rl);
            CHECK(rc < 0 && rc != UPCASE_ERR_PANIC && rc != UPCASE_ETIMEDOUT);
            rc = upcase_connection_request(conn, data, 1000, rep, n, &rl);
            CHECK(rc < 0 && rc != UPCASE_ERR_PANIC);
            upcase_connection_free(conn);
        }
        fake_end(&f);
        free(data);
        free(rep);
    }
    /* Half the reply, then EOF: a short reply. */
    if ((port = fake_start(&f, FAKE_SHORT, 0)) != 0) {
        uint8_t data[1000], rep[1000];
        memset(data, 's', sizeof data);
        rl = 4242;
        CHECK_RC(upcase_tcp_request("127.0.0.1", port, data, sizeof data, rep, sizeof rep, &rl, 5000),
                 UPCASE_ERR_SHORT_REPLY);
        CHECK_EQ(rl, 4242);
        fake_end(&f);
    }
    if ((port = fake_start(&f, FAKE_SHORT_N, 1000)) != 0) {
        uint8_t data[1000], rep[1000];
        memset(data, 's', sizeof data);
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new("127.0.0.1", port, 5000, &conn))) {
            rl = 4242;
            CHECK_RC(upcase_connection_request(conn, data, sizeof data, rep, sizeof rep, &rl), UPCASE_ERR_SHORT_REPLY);
            CHECK_EQ(rl, 4242);
            upcase_connection_free(conn);
        }
        fake_end(&f);
    }
    /* A reply longer than the request. */
    if ((port = fake_start(&f, FAKE_LONG, 0)) != 0) {
        uint8_t data[1000], rep[2000];
        memset(data, 'l', sizeof data);
        rl = 4242;
        CHECK_RC(upcase_tcp_request("127.0.0.1", port, data, sizeof data, rep, sizeof rep, &rl, 5000),
                 UPCASE_ERR_PROTOCOL);
        CHECK_EQ(rl, 4242);
        fake_end(&f);
    }
    /* No answer at all: the timeout bounds the wait. */
    if ((port = fake_start(&f, FAKE_SILENT, 0)) != 0) {
        uint8_t rep[8];
        rl = 4242;
        long long t0 = now_ms();
        CHECK_RC(upcase_tcp_request("127.0.0.1", port, (const uint8_t *)"hello?", 6, rep, sizeof rep, &rl, 200),
                 UPCASE_ETIMEDOUT);
        long long dt = now_ms() - t0;
        CHECK_GE(dt, 150);
        CHECK_LE(dt, 2000);
        CHECK_EQ(rl, 4242);
        CHECK(contains_nocase(upcase_last_error(), "127.0.0.1"));
        fake_end(&f);
    }
}

/* ------------------------------------------------------------------ */
/* Bind errors and NULL arguments                                      */
/* ------------------------------------------------------------------ */

static void test_bind_errors(void)
{
    g_test = "bind errors";
    upcase_server_config cfg;
    upcase_server *const sentinel = (upcase_server *)&g_cb_token;
    upcase_server *srv;

    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    srv = sentinel;
    CHECK_RC(upcase_server_bind(NULL, &srv), UPCASE_EINVAL);
    CHECK(srv == sentinel);
    CHECK_RC(upcase_server_bind(&cfg, NULL), UPCASE_EINVAL);

    static const int bad_numbers[] = { 7, -1, 2, INT_MIN, INT_MAX };
    for (size_t i = 0; i < sizeof bad_numbers / sizeof bad_numbers[0]; i++) {
        config_for(&cfg, "127.0.0.1", bad_numbers[i], UPCASE_MODE_CONCURRENT);
        CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
        CHECK(contains_nocase(upcase_last_error(), "transport"));
        config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, bad_numbers[i]);
        CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
        CHECK(contains_nocase(upcase_last_error(), "mode"));
        CHECK(srv == sentinel);
    }
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    cfg.threads = UPCASE_MAX_THREADS + 1;
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "threads"));
    CHECK(srv == sentinel);
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    cfg.max_datagram = 65528;
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
    CHECK(srv == sentinel);
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    cfg.min_rate = UPCASE_MAX_MIN_RATE + 1u;
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "min_rate"));
    CHECK(srv == sentinel);
    /* io_uring serves the concurrent TCP server only. */
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
    cfg.io_uring = 1;
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "io_uring"));
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_ITERATIVE);
    cfg.io_uring = 1;
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "io_uring"));
    CHECK(srv == sentinel);

    /* Host that does not resolve. */
    config_for(&cfg, "no-such-host.invalid", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    int rc = upcase_server_bind(&cfg, &srv);
    if (!CHECK(is_resolver_code(rc)))
        fprintf(stderr, "    bind to an unknown host gave %d (%s)\n", rc, upcase_errname(rc));
    CHECK(contains_nocase(upcase_last_error(), "no-such-host.invalid"));
    CHECK(srv == sentinel);
    /* An address this host does not have (TEST-NET-1). */
    config_for(&cfg, "192.0.2.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EADDRNOTAVAIL);
    CHECK(contains_nocase(upcase_last_error(), "192.0.2.1"));
    CHECK(srv == sentinel);

    /* Address in use: the same port twice (TCP and UDP, v4 and v6). */
    static const struct {
        const char *host;
        int transport;
    } twice[] = { { "127.0.0.1", UPCASE_TRANSPORT_TCP },
                  { "127.0.0.1", UPCASE_TRANSPORT_UDP },
                  { "::1", UPCASE_TRANSPORT_TCP },
                  { "::1", UPCASE_TRANSPORT_UDP } };
    for (size_t i = 0; i < sizeof twice / sizeof twice[0]; i++) {
        upcase_server *first = NULL;
        config_for(&cfg, twice[i].host, twice[i].transport, UPCASE_MODE_CONCURRENT);
        if (!CHECK_OK(bind_cfg(&cfg, &first)))
            continue;
        cfg.port = port_of(first);
        srv = sentinel;
        if (!CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EADDRINUSE))
            fprintf(stderr, "    host %s transport %d\n", twice[i].host, twice[i].transport);
        CHECK(srv == sentinel);
        char port_text[16];
        snprintf(port_text, sizeof port_text, "%u", (unsigned)cfg.port);
        CHECK(contains_nocase(upcase_last_error(), port_text));
        if (srv != sentinel)
            upcase_server_free(srv);
        upcase_server_free(first); /* never run: free stops and closes it */
        /* Released: the port can be bound again. */
        srv = NULL;
        if (CHECK_OK(bind_cfg(&cfg, &srv)))
            CHECK_EQ(upcase_server_port(srv), cfg.port);
        upcase_server_free(srv);
    }
    /* A port held by a plain socket. */
    {
        uint16_t port = 0;
        int fd = plain_bound(AF_INET, SOCK_STREAM, &port);
        if (CHECK(fd >= 0)) {
            config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_ITERATIVE);
            cfg.port = port;
            srv = sentinel;
            CHECK_RC(upcase_server_bind(&cfg, &srv), UPCASE_EADDRINUSE);
            CHECK(srv == sentinel);
            close(fd);
        }
    }

    /* NULL host means 127.0.0.1; a fixed port is taken as given. */
    {
        uint16_t port = closed_port(AF_INET, SOCK_STREAM);
        config_for(&cfg, NULL, UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
        cfg.port = port;
        srv = NULL;
        if (CHECK_OK(bind_cfg(&cfg, &srv))) {
            char addr[UPCASE_ADDRSTRLEN], want[UPCASE_ADDRSTRLEN];
            snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)port);
            CHECK_EQ(upcase_server_port(srv), port);
            CHECK_OK(upcase_server_address(srv, addr, sizeof addr));
            CHECK_STR(addr, want);
            /* Stopped before it ever ran. */
            CHECK_OK(upcase_server_stop(srv));
            CHECK_RC(upcase_server_run(srv), UPCASE_ERR_STOPPED);
            upcase_server_free(srv);
        }
    }
}

static void test_server_null_args(void)
{
    g_test = "server NULL arguments";
    char buf[UPCASE_ADDRSTRLEN];
    upcase_stats st;
    CHECK_RC(upcase_server_port(NULL), UPCASE_EINVAL);
    memset(buf, 0xAB, sizeof buf);
    CHECK_RC(upcase_server_address(NULL, buf, sizeof buf), UPCASE_EINVAL);
    CHECK(all_bytes(buf, 0xAB, sizeof buf));
    CHECK_RC(upcase_server_run(NULL), UPCASE_EINVAL);
    CHECK_RC(upcase_server_stop(NULL), UPCASE_EINVAL);
    memset(&st, 0xAB, sizeof st);
    CHECK_RC(upcase_server_stats(NULL, &st), UPCASE_EINVAL);
    CHECK(all_bytes(&st, 0xAB, sizeof st));

    upcase_server_config cfg;
    upcase_server *srv = NULL;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    if (CHECK_OK(bind_cfg(&cfg, &srv))) {
        CHECK_RC(upcase_server_stats(srv, NULL), UPCASE_EINVAL);
        upcase_server_free(srv);
    }
    upcase_server_free(NULL);
    upcase_connection_free(NULL);
    CHECK(1);
}

/* The last error is per thread. */
static void *last_error_thread(void *arg)
{
    int *ok = arg;
    ok[0] = upcase_last_error() != NULL && upcase_last_error()[0] == '\0';
    ok[1] = upcase_upper(NULL, 5) == UPCASE_EINVAL && contains_nocase(upcase_last_error(), "upcase_upper");
    return NULL;
}

static void test_last_error_per_thread(void)
{
    g_test = "last_error per thread";
    int ok[2] = { 0, 0 };
    pthread_t th;
    CHECK_RC(upcase_ip6_addr("not an address", 1, NULL), UPCASE_EINVAL);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", upcase_last_error());
    if (CHECK(pthread_create(&th, NULL, last_error_thread, ok) == 0)) {
        pthread_join(th, NULL);
        CHECK(ok[0]);
        CHECK(ok[1]);
    }
    CHECK_STR(upcase_last_error(), mine);
    /* Successful calls leave it alone too. */
    uint8_t b[2] = { 'a', 'b' };
    CHECK_OK(upcase_upper(b, 2));
    CHECK_STR(upcase_last_error(), mine);
}

/* ------------------------------------------------------------------ */
/* Limits: max_connections, idle timeout                               */
/* ------------------------------------------------------------------ */

static void test_limits(void)
{
    g_test = "max_connections / idle_timeout";
    upcase_server_config cfg;
    runner_t r;
    upcase_stats st;

    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    cfg.threads = 1;
    cfg.max_connections = 1;
    upcase_server *srv = start_server(&cfg, &r);
    if (srv != NULL) {
        uint16_t port = port_of(srv);
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new("127.0.0.1", port, 5000, &conn))) {
            uint8_t rep[8];
            size_t rl = 0;
            CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"one", 3, rep, sizeof rep, &rl));
            /* The second one is closed at once. */
            int rc = upcase_tcp_request("127.0.0.1", port, (const uint8_t *)"two", 3, rep, sizeof rep, &rl, 2000);
            CHECK(rc < 0 && rc != UPCASE_ETIMEDOUT && rc != UPCASE_ERR_PANIC);
            memset(&st, 0, sizeof st);
            WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.connections_rejected >= 1, 3000);
            CHECK_GE(st.connections_rejected, 1);
            CHECK_EQ(st.connections_active, 1);
            /* The first still works. */
            CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"one more", 8, rep, sizeof rep, &rl));
            CHECK(rl == 8 && memcmp(rep, "ONE MORE", 8) == 0);
            upcase_connection_free(conn);
            /* Room again once it is gone. */
            WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.connections_active == 0, 3000);
            tcp_roundtrip("127.0.0.1", port, 10, 9);
        }
        stop_server(srv, &r);
    }

    for (int mode = UPCASE_MODE_CONCURRENT; mode <= UPCASE_MODE_ITERATIVE; mode++) {
        config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, mode);
        cfg.idle_timeout_ms = 1500; /* room for the first request, even under valgrind on a busy machine */
        srv = start_server(&cfg, &r);
        if (srv == NULL)
            continue;
        uint16_t port = port_of(srv);
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_connection_new("127.0.0.1", port, 5000, &conn))) {
            uint8_t rep[8];
            size_t rl = 0;
            CHECK_OK(upcase_connection_request(conn, (const uint8_t *)"idle", 4, rep, sizeof rep, &rl));
            memset(&st, 0, sizeof st);
            WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.idle_timeouts >= 1, 5000);
            CHECK_GE(st.idle_timeouts, 1);
            CHECK_EQ(st.connections_active, 0);
            int rc = upcase_connection_request(conn, (const uint8_t *)"late", 4, rep, sizeof rep, &rl);
            CHECK(rc < 0 && rc != UPCASE_ERR_PANIC);
            upcase_connection_free(conn);
        }
        tcp_roundtrip("127.0.0.1", port, 10, 10);
        stop_server(srv, &r);
    }
}

/* ------------------------------------------------------------------ */
/* SIGPIPE: clients that reset mid-stream                              */
/* ------------------------------------------------------------------ */

static void sigpipe_case(int mode)
{
    upcase_server_config cfg;
    runner_t r;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, mode);
    cfg.threads = 1;
    upcase_server *srv = start_server(&cfg, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    size_t chunk = 64 * 1024;
    uint8_t *data = xmalloc(chunk);
    memset(data, 'p', chunk);
    for (int round = 0; round < 6; round++) {
        int fd = plain_connect(AF_INET, port);
        if (!CHECK(fd >= 0))
            break;
        /* Send without reading until the pipes are full (or 8 MiB). */
        size_t total = 0;
        long long deadline = now_ms() + 1000;
        while (total < (8u << 20) && now_ms() < deadline) {
            struct pollfd p = { fd, POLLOUT, 0 };
            if (poll(&p, 1, 100) != 1)
                break;
            ssize_t n = send(fd, data, chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (n <= 0)
                break;
            total += (size_t)n;
        }
        CHECK_GE(total, 1);
        /* Unread replies in our buffer: close sends RST. Odd rounds force it. */
        if (round % 2)
            close_with_rst(fd);
        else
            close(fd);
        sleep_ms(20);
    }
    free(data);
    /* Still alive, still answering. */
    tcp_roundtrip("127.0.0.1", port, 1000, 31);
    tcp_roundtrip("127.0.0.1", port, 300000, 32);
    upcase_stats st;
    memset(&st, 0, sizeof st);
    WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.connections_active == 0, 3000);
    CHECK_EQ(st.connections_active, 0);
    CHECK_GE(st.connections_accepted, 8);
    stop_server(srv, &r);
}

static void test_sigpipe(void)
{
    g_test = "SIGPIPE";
    /* SIGPIPE keeps its default action (terminate): check, do not change. */
    struct sigaction sa;
    sigaction(SIGPIPE, NULL, &sa);
    CHECK(sa.sa_handler == SIG_DFL);
    sigpipe_case(UPCASE_MODE_CONCURRENT);
    sigpipe_case(UPCASE_MODE_ITERATIVE);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                 */
/* ------------------------------------------------------------------ */

/* Throwaway certificates, made when the tests run by the openssl command
 * line in a fresh directory: a CA and a server certificate it signs (for
 * localhost, 127.0.0.1 and ::1), a client certificate it signs, and a
 * second CA that signs nothing here. No key is committed. */
static struct {
    int ready;
    char dir[64];
    char ca[128], server[128], server_key[128], other_ca[128], other_ca_key[128];
    char client[128], client_key[128], missing[128];
} g_pki;

static void pki_path(char *out, const char *name)
{
    snprintf(out, 128, "%s/%s", g_pki.dir, name);
}

static int pki_make(void)
{
    static const char script[] =
        "set -e; cd '%s'; command -v openssl >/dev/null || exit 77\n"
        "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
        "for ca in ca other-ca; do\n"
        "  openssl req -x509 $ec -keyout $ca.key -out $ca.pem -days 2 -subj /CN=upcase-test-$ca \\\n"
        "    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign\n"
        "done\n"
        "leaf() { # name serial subject extensions\n"
        "  openssl req -new $ec -keyout $1.key -out $1.csr -subj /CN=$3\n"
        "  printf \"$4\" > $1.ext\n"
        "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -set_serial $2 -days 2 -out $1.pem -extfile $1.ext\n"
        "}\n"
        "leaf server 2 localhost 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\\nextendedKeyUsage=serverAuth\\n'\n"
        "leaf client 3 upcase-test-client 'extendedKeyUsage=clientAuth\\n'\n";
    char cmd[2048];
    strcpy(g_pki.dir, "/tmp/upcase-capi-tls-XXXXXX");
    if (!CHECK(mkdtemp(g_pki.dir) != NULL))
        return 0;
    snprintf(cmd, sizeof cmd, script, g_pki.dir);
    /* The script goes through a file: no quoting of it on a command line. */
    char script_path[128], run[512];
    pki_path(script_path, "make.sh");
    FILE *f = fopen(script_path, "w");
    if (!CHECK(f != NULL))
        return 0;
    fputs(cmd, f);
    fclose(f);
    snprintf(run, sizeof run, "bash '%s' >'%s/openssl.log' 2>&1", script_path, g_pki.dir);
    fflush(NULL);
    int st = system(run);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        fprintf(stderr, "note: no openssl command, TLS tests skipped\n");
        return 0;
    }
    if (!CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        snprintf(run, sizeof run, "cat '%s/openssl.log' >&2", g_pki.dir);
        (void)!system(run);
        return 0;
    }
    pki_path(g_pki.ca, "ca.pem");
    pki_path(g_pki.server, "server.pem");
    pki_path(g_pki.server_key, "server.key");
    pki_path(g_pki.other_ca, "other-ca.pem");
    pki_path(g_pki.other_ca_key, "other-ca.key");
    pki_path(g_pki.client, "client.pem");
    pki_path(g_pki.client_key, "client.key");
    pki_path(g_pki.missing, "missing.pem");
    g_pki.ready = 1;
    return 1;
}

static void pki_remove(void)
{
    char cmd[256];
    if (g_pki.dir[0] == '\0')
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pki.dir);
    (void)!system(cmd);
}

static void test_tls_server_config(void)
{
    g_test = "upcase_tls_server_config_new";
    upcase_tls_server_config *const sentinel = (upcase_tls_server_config *)&g_pki;
    upcase_tls_server_config *tls = sentinel;

    CHECK_RC(upcase_tls_server_config_new(NULL, g_pki.server_key, NULL, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "cert_chain_pem_path"));
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, NULL, NULL, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "key_pem_path"));
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, NULL, NULL), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "out"));
    CHECK_RC(upcase_tls_server_config_new("", g_pki.server_key, NULL, &tls), UPCASE_EINVAL);

    /* A file that cannot be read: the OS's code, the file and the reason. */
    CHECK_RC(upcase_tls_server_config_new(g_pki.missing, g_pki.server_key, NULL, &tls), -ENOENT);
    CHECK(strstr(upcase_last_error(), g_pki.missing) != NULL);
    CHECK(contains_nocase(upcase_last_error(), "no such file"));
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, g_pki.missing, NULL, &tls), -ENOENT);
    CHECK(strstr(upcase_last_error(), g_pki.missing) != NULL);
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, g_pki.missing, &tls), -ENOENT);
    CHECK(strstr(upcase_last_error(), g_pki.missing) != NULL);
    /* A key where the certificate should be, and the other way round. */
    CHECK_RC(upcase_tls_server_config_new(g_pki.server_key, g_pki.server_key, NULL, &tls), UPCASE_EINVAL);
    CHECK(strstr(upcase_last_error(), g_pki.server_key) != NULL);
    CHECK(contains_nocase(upcase_last_error(), "no certificate"));
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, g_pki.server, NULL, &tls), UPCASE_EINVAL);
    CHECK(strstr(upcase_last_error(), g_pki.server) != NULL);
    CHECK(contains_nocase(upcase_last_error(), "no private key"));
    /* Another certificate's key. */
    CHECK_RC(upcase_tls_server_config_new(g_pki.server, g_pki.other_ca_key, NULL, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "does not match"));
    CHECK(tls == sentinel); /* written only on success */

    tls = NULL;
    if (CHECK_OK(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, NULL, &tls)))
        CHECK(tls != NULL && tls != sentinel);
    upcase_tls_server_config_free(tls);
    tls = NULL;
    if (CHECK_OK(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, g_pki.ca, &tls)))
        CHECK(tls != NULL);
    upcase_tls_server_config_free(tls);
    upcase_tls_server_config_free(NULL); /* ignored */
}

static void test_tls_client_config(void)
{
    g_test = "upcase_tls_client_config_new";
    upcase_tls_client_config *const sentinel = (upcase_tls_client_config *)&g_pki;
    upcase_tls_client_config *tls = sentinel;

    CHECK_RC(upcase_tls_client_config_new(g_pki.ca, NULL, NULL, NULL, NULL), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "out"));
    CHECK_RC(upcase_tls_client_config_new(g_pki.ca, NULL, g_pki.client, NULL, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "key_pem_path"));
    CHECK_RC(upcase_tls_client_config_new(g_pki.ca, NULL, NULL, g_pki.client_key, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "cert_pem_path"));
    CHECK_RC(upcase_tls_client_config_new(g_pki.ca, "not a name!", NULL, NULL, &tls), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "not a name!"));
    CHECK_RC(upcase_tls_client_config_new(g_pki.missing, NULL, NULL, NULL, &tls), -ENOENT);
    CHECK(strstr(upcase_last_error(), g_pki.missing) != NULL);
    CHECK(contains_nocase(upcase_last_error(), "no such file"));
    CHECK_RC(upcase_tls_client_config_new(g_pki.ca, NULL, g_pki.client, g_pki.missing, &tls), -ENOENT);
    CHECK(strstr(upcase_last_error(), g_pki.missing) != NULL);
    CHECK_RC(upcase_tls_client_config_new(g_pki.client_key, NULL, NULL, NULL, &tls), UPCASE_EINVAL);
    CHECK(strstr(upcase_last_error(), g_pki.client_key) != NULL);
    CHECK(tls == sentinel); /* written only on success */

    tls = NULL;
    if (CHECK_OK(upcase_tls_client_config_new(g_pki.ca, "localhost", g_pki.client, g_pki.client_key, &tls)))
        CHECK(tls != NULL && tls != sentinel);
    upcase_tls_client_config_free(tls);
    /* The system's trust store: found, or a message that says it is empty. */
    tls = NULL;
    int rc = upcase_tls_client_config_new(NULL, NULL, NULL, NULL, &tls);
    CHECK(rc == UPCASE_OK ? tls != NULL : rc == UPCASE_EINVAL && contains_nocase(upcase_last_error(), "trust store"));
    upcase_tls_client_config_free(tls);
    upcase_tls_client_config_free(NULL); /* ignored */
}

/* A TLS server on 127.0.0.1:0 as `mode` says, requiring client
   certificates when `client_ca` is set; its TLS config is freed as soon as
   it is bound. */
static upcase_server *start_tls_server(int mode, const char *client_ca, uint32_t handshake_ms, runner_t *r)
{
    upcase_server_config cfg;
    upcase_tls_server_config *tls = NULL;
    if (!CHECK_OK(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, client_ca, &tls)))
        return NULL;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, mode);
    cfg.io_uring = 0;
    cfg.tls = tls;
    cfg.tls_handshake_timeout_ms = handshake_ms;
    upcase_server *srv = start_server(&cfg, r);
    upcase_tls_server_config_free(tls); /* the server holds its own reference */
    return srv;
}

/* One TLS request of `len` pattern bytes; checks the reply. */
static int tls_roundtrip(const upcase_tls_client_config *tls, const char *host, uint16_t port, size_t len)
{
    uint8_t *data = xmalloc(len), *want = xmalloc(len), *reply = xmalloc(len);
    size_t reply_len = (size_t)-1;
    fill_pattern(data, len, (uint32_t)len);
    ref_upper(data, want, len);
    int ok = CHECK_OK(upcase_tls_tcp_request(tls, host, port, data, len, reply, len, &reply_len, 10000));
    ok = ok && CHECK_EQ(reply_len, len);
    ok = ok && CHECK(memcmp(reply, want, len) == 0);
    free(data);
    free(want);
    free(reply);
    return ok;
}

static void test_tls_exchange(int mode)
{
    g_test = mode == UPCASE_MODE_ITERATIVE ? "TLS exchange, iterative" : "TLS exchange, concurrent";
    runner_t r;
    upcase_tls_client_config *tls = NULL;
    upcase_server *srv = start_tls_server(mode, NULL, 0, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    if (CHECK_OK(upcase_tls_client_config_new(g_pki.ca, NULL, NULL, NULL, &tls))) {
        tls_roundtrip(tls, "127.0.0.1", port, 5);
        tls_roundtrip(tls, "localhost", port, 1);      /* the name, not the address, checked */
        tls_roundtrip(tls, "127.0.0.1", port, 0);
        tls_roundtrip(tls, "127.0.0.1", port, 200000); /* many records each way */

        /* A kept-open TLS connection outlives the config it came from. */
        upcase_connection *conn = NULL;
        if (CHECK_OK(upcase_tls_connection_new(tls, "127.0.0.1", port, 10000, &conn))) {
            upcase_tls_client_config_free(tls);
            tls = NULL;
            uint8_t rep[64];
            size_t rl = 0;
            static const char *const lines[] = { "first line", "second, longer line", "x" };
            for (size_t i = 0; i < 3; i++) {
                size_t n = strlen(lines[i]);
                uint8_t want[64];
                ref_upper((const uint8_t *)lines[i], want, n);
                CHECK_OK(upcase_connection_request(conn, (const uint8_t *)lines[i], n, rep, sizeof rep, &rl));
                CHECK(rl == n && memcmp(rep, want, n) == 0);
            }
            upcase_connection_free(conn);
        }
    }
    upcase_tls_client_config_free(tls);
    stop_server(srv, &r);
}

static void test_tls_refusals(void)
{
    g_test = "TLS refusals";
    runner_t r;
    uint8_t rep[64];
    size_t rl = 4242;
    const uint8_t *msg = (const uint8_t *)"hello there, tls";
    size_t len = strlen((const char *)msg);
    upcase_tls_client_config *tls = NULL, *other = NULL, *wrong_name = NULL;
    upcase_connection *conn = NULL;

    /* NULL config. */
    CHECK_RC(upcase_tls_tcp_request(NULL, "127.0.0.1", 12000, msg, len, rep, sizeof rep, &rl, 1000), UPCASE_EINVAL);
    CHECK(contains_nocase(upcase_last_error(), "tls is NULL"));
    CHECK_RC(upcase_tls_connection_new(NULL, "127.0.0.1", 12000, 1000, &conn), UPCASE_EINVAL);
    CHECK(conn == NULL);

    upcase_server *srv = start_tls_server(UPCASE_MODE_CONCURRENT, NULL, 0, &r);
    if (srv == NULL)
        return;
    uint16_t port = port_of(srv);
    if (CHECK_OK(upcase_tls_client_config_new(g_pki.ca, NULL, NULL, NULL, &tls)) &&
        CHECK_OK(upcase_tls_client_config_new(g_pki.other_ca, NULL, NULL, NULL, &other)) &&
        CHECK_OK(upcase_tls_client_config_new(g_pki.ca, "example.com", NULL, NULL, &wrong_name))) {
        /* Argument checks come before any traffic, as in plaintext. */
        CHECK_RC(upcase_tls_tcp_request(tls, NULL, port, msg, len, rep, sizeof rep, &rl, 1000), UPCASE_EINVAL);
        CHECK_RC(upcase_tls_tcp_request(tls, "127.0.0.1", port, msg, len, rep, 2, &rl, 1000),
                 UPCASE_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(rl, len);
        rl = 4242;

        /* A server the CA did not sign. */
        long long t0 = now_ms();
        CHECK_RC(upcase_tls_tcp_request(other, "127.0.0.1", port, msg, len, rep, sizeof rep, &rl, 10000),
                 UPCASE_ERR_TLS);
        CHECK(contains_nocase(upcase_last_error(), "certificate"));
        CHECK_RC(upcase_tls_connection_new(other, "127.0.0.1", port, 10000, &conn), UPCASE_ERR_TLS);
        CHECK(conn == NULL);
        /* A certificate for another name. */
        CHECK_RC(upcase_tls_tcp_request(wrong_name, "127.0.0.1", port, msg, len, rep, sizeof rep, &rl, 10000),
                 UPCASE_ERR_TLS);
        CHECK(contains_nocase(upcase_last_error(), "example.com"));
        /* A plaintext client on the TLS port: refused fast, and told why. */
        int rc = upcase_tcp_request("127.0.0.1", port, msg, len, rep, sizeof rep, &rl, 10000);
        CHECK(rc < 0 && rc != UPCASE_ETIMEDOUT);
        CHECK(contains_nocase(upcase_last_error(), "TLS"));
        CHECK_LE(now_ms() - t0, 5000);
        CHECK_EQ(rl, 4242);
        /* The server is none the worse. */
        tls_roundtrip(tls, "127.0.0.1", port, 10);
    }
    stop_server(srv, &r);

    /* A TLS client on a plaintext port: refused fast. */
    upcase_server_config cfg;
    config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
    srv = start_server(&cfg, &r);
    if (srv != NULL && tls != NULL) {
        long long t0 = now_ms();
        CHECK_RC(upcase_tls_tcp_request(tls, "127.0.0.1", port_of(srv), msg, len, rep, sizeof rep, &rl, 10000),
                 UPCASE_ERR_TLS);
        CHECK_LE(now_ms() - t0, 5000);
    }
    if (srv != NULL)
        stop_server(srv, &r);
    upcase_tls_client_config_free(tls);
    upcase_tls_client_config_free(other);
    upcase_tls_client_config_free(wrong_name);
}

static void test_tls_server_options(void)
{
    g_test = "TLS server options";
    runner_t r;
    upcase_server_config cfg;
    upcase_server *srv = NULL;
    upcase_tls_server_config *stls = NULL;
    upcase_tls_client_config *anon = NULL, *with_cert = NULL;

    /* TLS serves TCP only, and not on io_uring. */
    if (CHECK_OK(upcase_tls_server_config_new(g_pki.server, g_pki.server_key, NULL, &stls))) {
        config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_UDP, UPCASE_MODE_CONCURRENT);
        cfg.tls = stls;
        CHECK_RC(bind_cfg(&cfg, &srv), UPCASE_EINVAL);
        CHECK(contains_nocase(upcase_last_error(), "TLS"));
        config_for(&cfg, "127.0.0.1", UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT);
        cfg.tls = stls;
        cfg.io_uring = 1;
        CHECK_RC(bind_cfg(&cfg, &srv), UPCASE_EINVAL);
        CHECK(srv == NULL);
    }
    upcase_tls_server_config_free(stls);

    /* A client that connects and never starts its handshake is closed
       after tls_handshake_timeout_ms, and counted. */
    srv = start_tls_server(UPCASE_MODE_CONCURRENT, NULL, 300, &r);
    if (srv != NULL) {
        int fd = plain_connect(AF_INET, port_of(srv));
        if (CHECK(fd >= 0)) {
            uint8_t buf[64];
            long long t0 = now_ms();
            CHECK_EQ(read_to_eof(fd, buf, sizeof buf, 5000), 0);
            long long took = now_ms() - t0;
            CHECK_GE(took, 200);
            CHECK_LE(took, 3000);
            close(fd);
        }
        upcase_stats st;
        memset(&st, 0, sizeof st);
        WAIT_UNTIL(upcase_server_stats(srv, &st) == 0 && st.idle_timeouts >= 1, 3000);
        CHECK_GE(st.idle_timeouts, 1);
        stop_server(srv, &r);
    }

    /* Mutual TLS: a client without a certificate is refused, one signed by
       the client CA is served. */
    srv = start_tls_server(UPCASE_MODE_CONCURRENT, g_pki.ca, 0, &r);
    if (srv != NULL) {
        uint16_t port = port_of(srv);
        uint8_t rep[16];
        size_t rl = 0;
        if (CHECK_OK(upcase_tls_client_config_new(g_pki.ca, NULL, NULL, NULL, &anon))) {
            int rc = upcase_tls_tcp_request(anon, "127.0.0.1", port, (const uint8_t *)"who?", 4, rep, sizeof rep, &rl,
                                            10000);
            CHECK_RC(rc, UPCASE_ERR_TLS);
        }
        if (CHECK_OK(upcase_tls_client_config_new(g_pki.ca, NULL, g_pki.client, g_pki.client_key, &with_cert)))
            tls_roundtrip(with_cert, "127.0.0.1", port, 7);
        stop_server(srv, &r);
    }
    upcase_tls_client_config_free(anon);
    upcase_tls_client_config_free(with_cert);
}

static void test_tls(void)
{
    if (!pki_make()) {
        pki_remove();
        return;
    }
    test_tls_server_config();
    test_tls_client_config();
    test_tls_exchange(UPCASE_MODE_CONCURRENT);
    test_tls_exchange(UPCASE_MODE_ITERATIVE);
    test_tls_refusals();
    test_tls_server_options();
    pki_remove();
}

/* ------------------------------------------------------------------ */

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, on_alarm);
    alarm(60);
    signal(SIGPIPE, SIG_DFL);

    int fds_before = count_fds();

    test_last_error_initial();
    test_header_compiles();
    test_version();
    test_codes();
    test_byte_order();
    test_ip4_addr();
    test_ip6_addr();
    test_addr_name_port();
    test_upper();
    test_config_default();
    test_last_error_per_thread();
    test_server_null_args();
    test_bind_errors();
    test_client_errors();
    test_bad_peers();
    test_tcp_server("127.0.0.1", AF_INET);
    test_tcp_server("::1", AF_INET6);
    /* The same on the io_uring loop, with UPCASE_TEST_IO_URING=1 and a
       library built with it (this machine allows io_uring; where it is
       refused, bind says so and these fail). The default library has no
       io_uring loop: there, asking for it must fail and say why. */
    const char *uring = getenv("UPCASE_TEST_IO_URING");
    if (uring != NULL && strcmp(uring, "1") == 0) {
        g_io_uring = 1;
        test_tcp_server("127.0.0.1", AF_INET);
        test_tcp_server("::1", AF_INET6);
        g_io_uring = 0;
        test_io_uring_refused();
    } else {
        test_io_uring_not_built();
    }
    test_iterative("127.0.0.1");
    test_iterative("::1");
    test_udp_server("127.0.0.1", AF_INET);
    test_udp_server("::1", AF_INET6);
    test_udp_small_max();
    test_on_client();
    test_signal_stop();
    test_eintr();
    test_limits();
    test_sigpipe();
    test_tls();

    g_test = "descriptor leaks";
    int fds_after = count_fds();
    if (!CHECK_EQ(fds_after, fds_before)) {
        fprintf(stderr, "    open descriptors: %d before, %d after\n", fds_before, fds_after);
        (void)!system("ls -l /proc/$PPID/fd >&2");
    }
    CHECK(fds_before > 0);

    alarm(0);
    print_summary();
    return atomic_load(&g_fail) == 0 ? 0 : 1;
}
