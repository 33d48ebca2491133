/* The smallest complete use of libupcase: a server on a free loopback port,
 * run on a thread, one request to it, and a clean stop.
 *
 *   cc hello.c $(pkg-config --cflags --libs upcase) -lpthread -o hello
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "upcase.h"

static void *serve(void *server)
{
    upcase_server_run(server); /* blocks until upcase_server_stop */
    return NULL;
}

int main(void)
{
    upcase_server_config cfg;
    upcase_server *server = NULL;
    upcase_server_config_default(&cfg); /* 127.0.0.1, TCP, concurrent */
    cfg.port = 0;                       /* any free port */
    if (upcase_server_bind(&cfg, &server) != UPCASE_OK) {
        fprintf(stderr, "bind: %s\n", upcase_last_error());
        return 1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, serve, server);

    const char *line = "hello, sockets";
    char reply[64];
    size_t reply_len = 0;
    int rc = upcase_tcp_request("127.0.0.1", (uint16_t)upcase_server_port(server), (const uint8_t *)line,
                                strlen(line), (uint8_t *)reply, sizeof reply, &reply_len, 5000);
    if (rc == UPCASE_OK)
        printf("From Server: %.*s\n", (int)reply_len, reply);
    else
        fprintf(stderr, "request: %s (%s)\n", upcase_last_error(), upcase_errname(rc));

    upcase_server_stop(server);
    pthread_join(thread, NULL);
    upcase_server_free(server);
    return rc == UPCASE_OK ? 0 : 1;
}
