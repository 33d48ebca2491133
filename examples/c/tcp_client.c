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
 * reads the whole reply, however long (no 1024-byte cut).
 *
 * usage: tcp_client [HOST [PORT]] < line   (default: localhost 12000)
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
        fprintf(stderr, "tcp_client: PORT must be a number from 1 to 65535\n"
                        "usage: tcp_client [HOST [PORT]] < line\n");
        return 2;
    }
    if (argc > 1)
        server_name = argv[1];

    /* sentence = raw_input('Input lowercase sentence:') -- one line, any length */
    if (isatty(STDIN_FILENO)) {
        fputs("Input lowercase sentence: ", stdout);
        fflush(stdout);
    }
    char *sentence = NULL;
    size_t cap = 0;
    ssize_t n = getline(&sentence, &cap, stdin);
    if (n < 0) {
        fprintf(stderr, "tcp_client: no input: expected one line on stdin\n");
        free(sentence);
        return 1;
    }
    size_t len = (size_t)n;
    if (len > 0 && sentence[len - 1] == '\n')
        sentence[--len] = '\0';

    /* connect, send, recv, close: the reply is as long as the request */
    uint8_t *modified = malloc(len > 0 ? len : 1);
    size_t modified_len = 0;
    if (modified == NULL) {
        fprintf(stderr, "tcp_client: out of memory\n");
        free(sentence);
        return 1;
    }
    int rc = upcase_tcp_request(server_name, server_port, (const uint8_t *)sentence, len,
                                modified, len, &modified_len, 5000 /* ms per wait */);
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
