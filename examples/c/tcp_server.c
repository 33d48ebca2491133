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
 * With --tls-cert and --tls-key it serves the same protocol inside TLS.
 *
 * usage: tcp_server [OPTIONS] [PORT [HOST]]   (default: 12000, all interfaces)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upcase.h"
#include "cli.h"

static const char USAGE[] = "usage: tcp_server [OPTIONS] [PORT [HOST]]\n";
static const char HELP[] =
    "The upper-case TCP server: the slides' TCPServer, on libupcase.\n"
    "Prints one line per client; Ctrl-C (SIGINT) or SIGTERM stops it.\n"
    "\n"
    "PORT comes first, then HOST, the order python -m http.server takes them\n"
    "(default: 12000 on every interface, IPv4 and IPv6; PORT 0 picks a free port).\n"
    "A HOST of digits only is refused: it would be read as an IPv4 number.\n"
    "\n"
    "options:\n"
    "  -h, --help                   print this help and exit\n"
    "      --version                print the library's version and exit\n"
    "      --iterative              one client at a time, as the slides' loop\n"
    "      --quiet                  no line per client\n"
    "      --threads N              event loops: 0 (one per CPU, the default) to 1024\n"
    "      --max-connections N      clients at once, 1 to 4294967295; default 16384\n"
    "      --max-per-address N      clients at once from one address (IPv6: one /64):\n"
    "                               0 (no limit) to 4294967295; default 1024\n"
    "      --idle-timeout SECONDS   close a silent client: 0 (never) to 4294967; default 60\n"
    "      --min-rate BYTES         least bytes/s a client must send: 0 (off) to 1000000000;\n"
    "                               default 1\n"
    "      --defer-accept           accept a connection once its first bytes arrive\n"
    "      --io-uring               serve on io_uring instead of epoll (Linux 6.1+)\n"
    "      --tls-cert PEM           serve TLS with this certificate chain (leaf first)\n"
    "      --tls-key PEM            TLS: the certificate's private key (with --tls-cert)\n"
    "      --tls-client-ca PEM      TLS: require client certificates signed by these CAs\n"
    "      --tls-handshake-timeout SECONDS\n"
    "                               TLS: close a client whose handshake takes longer; default 10\n";

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

int main(int argc, char **argv)
{
    cli_prog = "tcp_server"; /* for the messages of cli.h */
    cli_usage = USAGE;

    upcase_server_config cfg;
    upcase_server_config_default(&cfg);
    cfg.transport = UPCASE_TRANSPORT_TCP;   /* SOCK_STREAM */
    cfg.mode = UPCASE_MODE_CONCURRENT;      /* many clients at once */
    cfg.port = 12000;                       /* serverPort = 12000 */
    cfg.host = "";                          /* bind(('', ...)): every interface, IPv4 and
                                               IPv6 (the library's own default is loopback) */
    cfg.on_client = on_client;

    enum {
        OPT_VERSION = 256, OPT_ITERATIVE, OPT_QUIET, OPT_THREADS, OPT_MAX_CONNECTIONS,
        OPT_MAX_PER_ADDRESS, OPT_IDLE_TIMEOUT, OPT_MIN_RATE, OPT_DEFER_ACCEPT, OPT_IO_URING,
        OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CLIENT_CA, OPT_TLS_HANDSHAKE_TIMEOUT,
    };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"iterative", no_argument, NULL, OPT_ITERATIVE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
        {"max-per-address", required_argument, NULL, OPT_MAX_PER_ADDRESS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"min-rate", required_argument, NULL, OPT_MIN_RATE},
        {"defer-accept", no_argument, NULL, OPT_DEFER_ACCEPT},
        {"io-uring", no_argument, NULL, OPT_IO_URING},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
        {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE_TIMEOUT},
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* usage_error says what is wrong, naming the argument */
    int c;
    uint32_t secs = 0;
    const char *tls_cert = NULL, *tls_key = NULL, *tls_client_ca = NULL; /* PEM files */
    const char *tls_only = NULL; /* a TLS option other than the certificate and key */
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s%s", USAGE, HELP);
            return 0;
        case OPT_VERSION:
            printf("tcp_server (upcase) %s\n", upcase_version());
            return 0;
        case OPT_ITERATIVE:
            cfg.mode = UPCASE_MODE_ITERATIVE;   /* the slide's server: one client at a time */
            break;
        case OPT_QUIET:
            cfg.on_client = NULL;               /* no line per client */
            break;
        case OPT_THREADS:
            if (parse_count(optarg, 0, UPCASE_MAX_THREADS, &cfg.threads) != 0)
                return usage_error("--threads '%s': give a number from 0 (one per CPU) to 1024", optarg);
            break;
        case OPT_MAX_CONNECTIONS:
            if (parse_count(optarg, 1, UINT32_MAX, &cfg.max_connections) != 0)
                return usage_error("--max-connections '%s': give a number from 1 to 4294967295", optarg);
            break;
        case OPT_MAX_PER_ADDRESS:
            if (parse_count(optarg, 0, UINT32_MAX, &cfg.max_connections_per_address) != 0)
                return usage_error("--max-per-address '%s': give a number from 0 (no limit)"
                                   " to 4294967295", optarg);
            if (cfg.max_connections_per_address == 0)
                cfg.max_connections_per_address = UINT32_MAX; /* the config's 0 is the default */
            break;
        case OPT_IDLE_TIMEOUT:
            if (parse_count(optarg, 0, 4294967, &secs) != 0)
                return usage_error("--idle-timeout '%s': give seconds, 0 (never) to 4294967", optarg);
            cfg.idle_timeout_ms = secs * 1000;
            break;
        case OPT_MIN_RATE:
            /* against slowloris: a client must average this many bytes/s */
            if (parse_count(optarg, 0, UPCASE_MAX_MIN_RATE, &cfg.min_rate) != 0)
                return usage_error("--min-rate '%s': give bytes per second, 0 (off) to 1000000000", optarg);
            break;
        case OPT_DEFER_ACCEPT:
            cfg.defer_accept = 1;               /* accept only once a request has arrived */
            break;
        case OPT_IO_URING:
            cfg.io_uring = 1;                   /* completions (io_uring) instead of epoll */
            break;
        case OPT_TLS_CERT:
            tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            tls_key = optarg;
            break;
        case OPT_TLS_CLIENT_CA:
            tls_client_ca = optarg;             /* mutual TLS */
            tls_only = "--tls-client-ca";
            break;
        case OPT_TLS_HANDSHAKE_TIMEOUT:
            if (parse_seconds(optarg, &cfg.tls_handshake_timeout_ms) != 0)
                return usage_error("--tls-handshake-timeout '%s': give seconds, more than 0,"
                                   " at most 4294967", optarg);
            tls_only = "--tls-handshake-timeout";
            break;
        default:
            return bad_option(argv, c);
        }
    }
    if (server_operands(argc, argv, &cfg.port, &cfg.host) != 0)
        return 2;
    if (tls_cert_and_key(tls_cert, tls_key) != 0)
        return 2;
    if (tls_only != NULL && tls_cert == NULL)
        return usage_error("%s is for TLS: give --tls-cert and --tls-key too", tls_only);

    /* TLS: the certificate and key are read now, so that a bad file stops
       the server here and not at its first client. */
    upcase_tls_server_config *tls = NULL;
    if (tls_cert != NULL && upcase_tls_server_config_new(tls_cert, tls_key, tls_client_ca, &tls) != UPCASE_OK) {
        fprintf(stderr, "tcp_server: %s\n", upcase_last_error());
        return 1;
    }
    cfg.tls = tls;                          /* NULL: plaintext */

    /* serverSocket = socket(...); bind(...); listen(...) */
    upcase_server *server = NULL;
    int bound = upcase_server_bind(&cfg, &server);
    upcase_tls_server_config_free(tls);     /* the server keeps its own reference */
    if (bound != UPCASE_OK) {
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
