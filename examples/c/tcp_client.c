/* TCPClient from the slides, in C, on libupcase.
 *
 *   clientSocket = socket(AF_INET, SOCK_STREAM)
 *   clientSocket.connect((serverName, serverPort))
 *   sentence = raw_input('Input lowercase sentence:')
 *   clientSocket.send(sentence)
 *   modifiedSentence = clientSocket.recv(1024)
 *   print 'From Server:', modifiedSentence
 *   clientSocket.close()
 *
 * upcase_tcp_request does connect / send / recv / close in one call, and
 * reads the whole reply, however long (no 1024-byte cut); with --tls,
 * upcase_tls_tcp_request does the same inside TLS.
 *
 * usage: tcp_client [OPTIONS] [HOST [PORT]] < line   (default: localhost 12000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upcase.h"
#include "cli.h"

static const char USAGE[] = "usage: tcp_client [OPTIONS] [HOST [PORT]] < line\n";
static const char HELP[] =
    "Sends one line to the upper-case TCP server and prints its reply:\n"
    "the slides' TCPClient, on libupcase.\n"
    "\n"
    "HOST comes first, then PORT, the order nc and telnet take them\n"
    "(default: localhost 12000). A HOST of digits only is refused: it would be\n"
    "read as an IPv4 number.\n"
    "\n"
    "options:\n"
    "  -h, --help             print this help and exit\n"
    "      --version          print the library's version and exit\n"
    "  -m, --message TEXT     send TEXT instead of the first line of stdin\n"
    "      --timeout SECONDS  bound on each wait (connect, each read); default 5\n"
    "      --tls              speak TLS, checking the server's certificate\n"
    "      --tls-ca PEM       TLS: trust these CAs (default: the system's)\n"
    "      --tls-name NAME    TLS: the name the certificate must have (default: HOST)\n"
    "      --tls-cert PEM     TLS: present this certificate chain...\n"
    "      --tls-key PEM      ...with this private key, to a server that asks\n";

int main(int argc, char **argv)
{
    cli_prog = "tcp_client"; /* for the messages of cli.h */
    cli_usage = USAGE;

    const char *server_name = "localhost";  /* serverName */
    uint16_t server_port = 12000;           /* serverPort */
    const char *message = NULL;             /* -m TEXT, instead of stdin */
    uint32_t timeout_ms = 5000;             /* for each wait */

    int use_tls = 0;                        /* --tls */
    const char *tls_ca = NULL, *tls_name = NULL, *tls_cert = NULL, *tls_key = NULL;
    const char *tls_only = NULL;            /* the last --tls-* option given */

    enum { OPT_VERSION = 256, OPT_TIMEOUT, OPT_TLS, OPT_TLS_CA, OPT_TLS_NAME, OPT_TLS_CERT, OPT_TLS_KEY };
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"message", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"tls", no_argument, NULL, OPT_TLS},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-name", required_argument, NULL, OPT_TLS_NAME},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* usage_error says what is wrong, naming the argument */
    int c;
    while ((c = getopt_long(argc, argv, ":hm:", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s%s", USAGE, HELP);
            return 0;
        case OPT_VERSION:
            printf("tcp_client (upcase) %s\n", upcase_version());
            return 0;
        case 'm':
            message = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_seconds(optarg, &timeout_ms) != 0)
                return usage_error("--timeout '%s': give seconds, more than 0, at most 4294967", optarg);
            break;
        case OPT_TLS:
            use_tls = 1;
            break;
        case OPT_TLS_CA:
            tls_ca = optarg;
            tls_only = "--tls-ca";
            break;
        case OPT_TLS_NAME:
            tls_name = optarg;
            tls_only = "--tls-name";
            break;
        case OPT_TLS_CERT:
            tls_cert = optarg;
            tls_only = "--tls-cert";
            break;
        case OPT_TLS_KEY:
            tls_key = optarg;
            tls_only = "--tls-key";
            break;
        default:
            return bad_option(argv, c);
        }
    }
    if (client_operands(argc, argv, &server_name, &server_port) != 0)
        return 2;
    if (tls_only != NULL && !use_tls)
        return usage_error("%s is for TLS: add --tls", tls_only);
    if (tls_cert_and_key(tls_cert, tls_key) != 0)
        return 2;

    /* TLS: what to trust, read before any input (a bad file stops us here) */
    upcase_tls_client_config *tls = NULL;
    if (use_tls && upcase_tls_client_config_new(tls_ca, tls_name, tls_cert, tls_key, &tls) != UPCASE_OK) {
        fprintf(stderr, "tcp_client: %s\n", upcase_last_error());
        return 1;
    }

    /* sentence = raw_input('Input lowercase sentence:') -- one line, any length */
    char *sentence = NULL;
    size_t len;
    if (message != NULL) {
        len = strlen(message);
    } else {
        if (isatty(STDIN_FILENO)) {
            fputs("Input lowercase sentence: ", stdout);
            fflush(stdout);
        }
        size_t cap = 0;
        ssize_t n = getline(&sentence, &cap, stdin);
        if (n < 0) {
            fprintf(stderr, "tcp_client: no input: expected one line on stdin\n");
            free(sentence);
            upcase_tls_client_config_free(tls);
            return 1;
        }
        len = (size_t)n;
        if (len > 0 && sentence[len - 1] == '\n')
            sentence[--len] = '\0';
        message = sentence;
    }

    /* connect, send, recv, close: the reply is as long as the request */
    uint8_t *modified = malloc(len > 0 ? len : 1);
    size_t modified_len = 0;
    if (modified == NULL) {
        fprintf(stderr, "tcp_client: out of memory\n");
        free(sentence);
        upcase_tls_client_config_free(tls);
        return 1;
    }
    int rc = tls != NULL
        ? upcase_tls_tcp_request(tls, server_name, server_port, (const uint8_t *)message, len,
                                 modified, len, &modified_len, timeout_ms)
        : upcase_tcp_request(server_name, server_port, (const uint8_t *)message, len,
                             modified, len, &modified_len, timeout_ms);
    upcase_tls_client_config_free(tls);
    if (rc != UPCASE_OK) {
        fprintf(stderr, "tcp_client: %s\n", upcase_last_error());
        free(modified);
        free(sentence);
        return 1;
    }

    /* print 'From Server:', modifiedSentence */
    fputs("From Server: ", stdout);
    fwrite(modified, 1, modified_len, stdout);
    putchar('\n');

    free(modified);
    free(sentence);
    return fflush(stdout) == 0 ? 0 : 1;
}
