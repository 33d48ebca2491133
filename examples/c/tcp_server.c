/* TCPServer from the slides, in C, on libupcase.
 *
 *   serverSocket = socket(AF_INET, SOCK_STREAM)
 *   serverSocket.bind(('', serverPort)); serverSocket.listen(1)
 *   print 'The server is ready to receive'
 *   while 1: accept(), recv(), upper(), send(), close()
 *
 * The library does the socket calls; this program configures it, says who
 * connects, and stops it cleanly on Ctrl-C (SIGINT) or SIGTERM.
 *
 * usage: tcp_server [--iterative] [--quiet] [--threads N] [--defer-accept] [--io-uring] [--max-connections N] [--idle-timeout SECONDS] [--min-rate BYTES_PER_SECOND] [PORT [HOST]]   (default: 12000, all interfaces)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upcase.h"

static upcase_server *volatile g_server;

/* Ctrl-C / SIGTERM: ask the server loop to return (async-signal-safe). */
static void on_signal(int sig)
{
    (void)sig;
    upcase_server_stop(g_server);
}

/* Called for each accepted connection: the "addr" of accept() in the slide. */
static void on_client(void *user, const char *host, uint16_t port)
{
    (void)user;
    if (strchr(host, ':'))
        printf("connection from [%s]:%u\n", host, (unsigned)port);
    else
        printf("connection from %s:%u\n", host, (unsigned)port);
    fflush(stdout); /* stdout is often a pipe: show each line at once */
}

/* A port number: digits only, 0 (any free port) to 65535. */
static int parse_port(const char *s, uint16_t *out)
{
    unsigned long v = 0;
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* A whole number for an option: digits only, at most 4294967295. */
static int parse_count(const char *s, uint32_t *out)
{
    unsigned long long v = 0;
    if (*s == '\0' || strlen(s) > 10)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    if (v > 4294967295ULL)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int usage(const char *why)
{
    fprintf(stderr, "tcp_server: %s\nusage: tcp_server [--iterative] [--quiet] [--threads N] [--defer-accept] [--io-uring] [--max-connections N] [--idle-timeout SECONDS] [--min-rate BYTES_PER_SECOND] [PORT [HOST]]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    upcase_server_config cfg;
    upcase_server_config_default(&cfg);
    cfg.transport = UPCASE_TRANSPORT_TCP;   /* SOCK_STREAM */
    cfg.mode = UPCASE_MODE_CONCURRENT;      /* many clients at once */
    cfg.port = 12000;                       /* serverPort = 12000 */
    cfg.host = "";                          /* bind(('', ...)): every interface, IPv4 and
                                               IPv6 (the library's own default is loopback) */
    cfg.on_client = on_client;

    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--iterative") == 0) {
            cfg.mode = UPCASE_MODE_ITERATIVE;   /* the slide's server: one client at a time */
        } else if (strcmp(argv[i], "--quiet") == 0) {
            cfg.on_client = NULL;               /* no line per client */
        } else if (strcmp(argv[i], "--defer-accept") == 0) {
            cfg.defer_accept = 1;               /* accept only once a request has arrived */
        } else if (strcmp(argv[i], "--io-uring") == 0) {
            cfg.io_uring = 1;                   /* completions (io_uring) instead of epoll */
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            if (parse_count(argv[++i], &cfg.threads) != 0 || cfg.threads > UPCASE_MAX_THREADS)
                return usage("--threads takes a number from 0 (one per CPU) to 1024");
        } else if (strcmp(argv[i], "--max-connections") == 0 && i + 1 < argc) {
            if (parse_count(argv[++i], &cfg.max_connections) != 0 || cfg.max_connections == 0)
                return usage("--max-connections takes a number from 1 to 4294967295");
        } else if (strcmp(argv[i], "--idle-timeout") == 0 && i + 1 < argc) {
            uint32_t secs = 0;
            if (parse_count(argv[++i], &secs) != 0 || secs > 4294967)
                return usage("--idle-timeout takes seconds, 0 (never) to 4294967");
            cfg.idle_timeout_ms = secs * 1000;
        } else if (strcmp(argv[i], "--min-rate") == 0 && i + 1 < argc) {
            /* against slowloris: a client must average this many bytes/s */
            if (parse_count(argv[++i], &cfg.min_rate) != 0 || cfg.min_rate > 1000000000)
                return usage("--min-rate takes bytes per second, 0 (off) to 1000000000");
        } else {
            return usage("unknown option");
        }
    }
    if (i < argc && parse_port(argv[i++], &cfg.port) != 0)
        return usage("PORT must be a number from 0 to 65535");
    if (i < argc)
        cfg.host = argv[i++];
    if (i < argc)
        return usage("too many arguments");

    /* serverSocket = socket(...); bind(...); listen(...) */
    upcase_server *server = NULL;
    if (upcase_server_bind(&cfg, &server) != UPCASE_OK) {
        fprintf(stderr, "tcp_server: %s\n", upcase_last_error());
        return 1;
    }
    g_server = server;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char addr[UPCASE_ADDRSTRLEN];
    upcase_server_address(server, addr, sizeof addr);
    printf("The server is ready to receive\nlistening on %s\n", addr);
    fflush(stdout);

    /* while 1: accept, recv, upper, send, close -- until a signal stops it.
       UPCASE_ERR_STOPPED: the signal came before the loop started. */
    int rc = upcase_server_run(server);
    if (rc != UPCASE_OK && rc != UPCASE_ERR_STOPPED) {
        fprintf(stderr, "tcp_server: %s\n", upcase_last_error());
        return 1;
    }

    /* No signal handler may see the server once it is freed. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    g_server = NULL;
    upcase_server_free(server);
    return 0;
}
