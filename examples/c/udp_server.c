/* UDPServer from the slides, in C, on libupcase.
 *
 *   serverSocket = socket(AF_INET, SOCK_DGRAM)
 *   serverSocket.bind(('', serverPort))
 *   print "The server is ready to receive"
 *   while 1: message, clientAddress = recvfrom(); sendto(message.upper(), clientAddress)
 *
 * The library does the socket calls; this program configures it, says who
 * sent each datagram, and stops it cleanly on Ctrl-C (SIGINT) or SIGTERM.
 *
 * usage: udp_server [OPTIONS] [PORT [HOST]]   (default: 12000, all interfaces)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upcase.h"
#include "cli.h"

static const char USAGE[] = "usage: udp_server [OPTIONS] [PORT [HOST]]\n";
static const char HELP[] =
    "The upper-case UDP server: the slides' UDPServer, on libupcase.\n"
    "Prints one line per datagram; Ctrl-C (SIGINT) or SIGTERM stops it.\n"
    "\n"
    "PORT comes first, then HOST, the order python -m http.server takes them\n"
    "(default: 12000 on every interface, IPv4 and IPv6; PORT 0 picks a free port).\n"
    "A HOST of digits only is refused: it would be read as an IPv4 number.\n"
    "\n"
    "options:\n"
    "  -h, --help                   print this help and exit\n"
    "      --version                print the library's version and exit\n"
    "      --iterative              one loop on one thread, as the slides' loop\n"
    "      --quiet                  no line per datagram\n"
    "      --threads N              loops: 0 (one per CPU, the default) to 1024\n"
    "      --max-datagram BYTES     largest datagram answered, 1 to 65527 (the default)\n";

static upcase_server *volatile g_server;

/* Ctrl-C / SIGTERM: ask the server loop to return (async-signal-safe). */
static void on_signal(int sig)
{
    (void)sig;
    upcase_server_stop(g_server);
}

/* Called for each datagram: the clientAddress that recvfrom() gives. */
static void on_client(void *user, const char *host, uint16_t port)
{
    (void)user;
    if (strchr(host, ':'))
        printf("datagram from [%s]:%u\n", host, (unsigned)port);
    else
        printf("datagram from %s:%u\n", host, (unsigned)port);
    fflush(stdout); /* stdout is often a pipe: show each line at once */
}

int main(int argc, char **argv)
{
    cli_prog = "udp_server"; /* for the messages of cli.h */
    cli_usage = USAGE;

    upcase_server_config cfg;
    upcase_server_config_default(&cfg);
    cfg.transport = UPCASE_TRANSPORT_UDP;   /* SOCK_DGRAM */
    cfg.mode = UPCASE_MODE_CONCURRENT;      /* several loops share the socket */
    cfg.port = 12000;                       /* serverPort = 12000 */
    cfg.host = "";                          /* bind(('', ...)): every interface, IPv4 and
                                               IPv6 (the library's own default is loopback) */
    cfg.on_client = on_client;

    enum { OPT_VERSION = 256, OPT_ITERATIVE, OPT_QUIET, OPT_THREADS, OPT_MAX_DATAGRAM };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"iterative", no_argument, NULL, OPT_ITERATIVE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"max-datagram", required_argument, NULL, OPT_MAX_DATAGRAM},
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* usage_error says what is wrong, naming the argument */
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s%s", USAGE, HELP);
            return 0;
        case OPT_VERSION:
            printf("udp_server (upcase) %s\n", upcase_version());
            return 0;
        case OPT_ITERATIVE:
            cfg.mode = UPCASE_MODE_ITERATIVE;   /* the slide's server: one loop */
            break;
        case OPT_QUIET:
            cfg.on_client = NULL;               /* no line per datagram */
            break;
        case OPT_THREADS:
            if (parse_count(optarg, 0, UPCASE_MAX_THREADS, &cfg.threads) != 0)
                return usage_error("--threads '%s': give a number from 0 (one per CPU) to 1024", optarg);
            break;
        case OPT_MAX_DATAGRAM:
            if (parse_count(optarg, 1, 65527, &cfg.max_datagram) != 0)
                return usage_error("--max-datagram '%s': give bytes, 1 to 65527", optarg);
            break;
        default:
            return bad_option(argv, c);
        }
    }
    if (server_operands(argc, argv, &cfg.port, &cfg.host) != 0)
        return 2;

    /* serverSocket = socket(...); bind(...) */
    upcase_server *server = NULL;
    if (upcase_server_bind(&cfg, &server) != UPCASE_OK) {
        fprintf(stderr, "udp_server: %s\n", upcase_last_error());
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

    /* while 1: recvfrom, upper, sendto -- until a signal stops it.
       UPCASE_ERR_STOPPED: the signal came before the loop started. */
    int rc = upcase_server_run(server);
    if (rc != UPCASE_OK && rc != UPCASE_ERR_STOPPED) {
        fprintf(stderr, "udp_server: %s\n", upcase_last_error());
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
