/* UDPClient from the slides, in C, on libupcase.
 *
 *   clientSocket = socket(AF_INET, SOCK_DGRAM)
 *   message = raw_input('Input lowercase sentence:')
 *   clientSocket.sendto(message, (serverName, serverPort))
 *   modifiedMessage, serverAddress = clientSocket.recvfrom(2048)
 *   print modifiedMessage
 *   clientSocket.close()
 *
 * upcase_udp_request does sendto / recvfrom / close in one call, and, since
 * UDP may lose datagrams, waits a bounded time and sends again a few times.
 *
 * usage: udp_client [HOST [PORT]] < line   (default: localhost 12000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upcase.h"

/* A port number: digits only, 1 to 65535. */
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
    if (v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *server_name = "localhost";  /* serverName */
    uint16_t server_port = 12000;           /* serverPort */

    if (argc > 3 || (argc == 3 && parse_port(argv[2], &server_port) != 0)) {
        fprintf(stderr, "udp_client: PORT must be a number from 1 to 65535\n"
                        "usage: udp_client [HOST [PORT]] < line\n");
        return 2;
    }
    if (argc > 1)
        server_name = argv[1];

    /* message = raw_input('Input lowercase sentence:') -- one line */
    if (isatty(STDIN_FILENO)) {
        fputs("Input lowercase sentence: ", stdout);
        fflush(stdout);
    }
    char *message = NULL;
    size_t cap = 0;
    ssize_t n = getline(&message, &cap, stdin);
    if (n < 0) {
        fprintf(stderr, "udp_client: no input: expected one line on stdin\n");
        free(message);
        return 1;
    }
    size_t len = (size_t)n;
    if (len > 0 && message[len - 1] == '\n')
        message[--len] = '\0';

    /* sendto, recvfrom (1 s each try, 3 more tries), close */
    uint8_t *modified = malloc(len > 0 ? len : 1);
    size_t modified_len = 0;
    if (modified == NULL) {
        fprintf(stderr, "udp_client: out of memory\n");
        free(message);
        return 1;
    }
    int rc = upcase_udp_request(server_name, server_port, (const uint8_t *)message, len,
                                modified, len, &modified_len, 1000 /* ms */, 3 /* retries */);
    if (rc != UPCASE_OK) {
        fprintf(stderr, "udp_client: %s\n", upcase_last_error());
        free(modified);
        free(message);
        return 1;
    }

    /* print modifiedMessage (with the TCP client's "From Server:") */
    fputs("From Server: ", stdout);
    fwrite(modified, 1, modified_len, stdout);
    putchar('\n');

    free(modified);
    free(message);
    return fflush(stdout) == 0 ? 0 : 1;
}
