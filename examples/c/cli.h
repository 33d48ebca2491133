/* The command-line rules of the four example programs: options are read
 * first (getopt_long), a usage error names the argument at fault and exits
 * 2, numbers are digits only, and a HOST of digits only is refused.
 *
 * Each program sets cli_prog and cli_usage before parsing.
 */
#ifndef UPCASE_EXAMPLES_CLI_H
#define UPCASE_EXAMPLES_CLI_H

#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *cli_prog;   /* "tcp_client", for messages */
static const char *cli_usage;  /* "usage: tcp_client ...\n" */

/* A usage error: the reason, naming the argument at fault, then the usage line; exit status 2. */
static inline int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", cli_usage);
    return 2;
}

/* What getopt_long stopped at (it returned ':' or '?'): "--name" as typed, or "-c". */
static inline int bad_option(char **argv, int rc)
{
    const char *arg = argv[optind - 1];
    if (rc == ':')
        return usage_error("option '%s' needs a value", arg);
    if (optopt != 0 && strncmp(arg, "--", 2) != 0)
        return usage_error("unknown option '-%c'", optopt);
    return usage_error("unknown option '%s'", arg);
}

/* A whole number: digits only (no sign, no space), from low to high. */
static inline int parse_number(const char *s, unsigned long long low, unsigned long long high,
                               unsigned long long *out)
{
    unsigned long long v = 0;
    if (*s == '\0' || strlen(s) > 10)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    if (v < low || v > high)
        return -1;
    *out = v;
    return 0;
}

/* A port number from low (0 for a server: any free port; 1 for a client) to 65535. */
static inline int parse_port(const char *s, unsigned low, uint16_t *out)
{
    unsigned long long v;
    if (parse_number(s, low, 65535, &v) != 0)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* A count for an option, from low to high (at most 4294967295). */
static inline int parse_count(const char *s, uint32_t low, uint32_t high, uint32_t *out)
{
    unsigned long long v;
    if (parse_number(s, low, high, &v) != 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Seconds such as "5" or "0.25", in milliseconds rounded up: more than 0,
   at most 4294967 s (what a uint32_t of milliseconds holds). */
static inline int parse_seconds(const char *s, uint32_t *ms)
{
    unsigned long long whole = 0, frac = 0;
    int digits = 0, places = 0, rest = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        if ((whole = whole * 10 + (unsigned long long)(*p - '0')) > 4294967)
            return -1;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (places < 3) {
                frac = frac * 10 + (unsigned long long)(*p - '0');
                places++;
            } else if (*p != '0') {
                rest = 1; /* less than a millisecond left: round up */
            }
        }
    }
    for (; places < 3; places++)
        frac *= 10;
    unsigned long long total = whole * 1000 + frac + (unsigned long long)rest;
    if (*p != '\0' || digits == 0 || total == 0 || total > 4294967295ULL)
        return -1;
    *ms = (uint32_t)total;
    return 0;
}

/* A HOST of digits only ("70000") is a port in the wrong place: refused
   rather than read as an IPv4 number (0.1.17.112) and sent off the machine. */
static inline int check_host(const char *host, const char *order)
{
    const char *p = host;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*host == '\0' || *p != '\0')
        return 0;
    return usage_error("HOST '%s' is only digits: give a name or an address such as 127.0.0.1 (%s)",
                       host, order);
}

/* A client's operands after its options: [HOST [PORT]], as nc and telnet
   take them. 0, or the exit status 2 of a usage error. */
static inline int client_operands(int argc, char **argv, const char **host, uint16_t *port)
{
    if (optind < argc)
        *host = argv[optind++];
    if (check_host(*host, "HOST comes before PORT") != 0)
        return 2;
    if (optind < argc && parse_port(argv[optind++], 1, port) != 0)
        return usage_error("PORT '%s' is not a number from 1 to 65535", argv[optind - 1]);
    if (optind < argc)
        return usage_error("too many arguments: '%s'", argv[optind]);
    return 0;
}

/* A server's operands after its options: [PORT [HOST]], as
   python -m http.server takes them; PORT 0 picks a free port. */
static inline int server_operands(int argc, char **argv, uint16_t *port, const char **host)
{
    if (optind < argc && parse_port(argv[optind++], 0, port) != 0)
        return usage_error("PORT '%s' is not a number from 0 to 65535", argv[optind - 1]);
    if (optind < argc)
        *host = argv[optind++];
    if (check_host(*host, "PORT comes before HOST") != 0)
        return 2;
    if (optind < argc)
        return usage_error("too many arguments: '%s'", argv[optind]);
    return 0;
}

/* --tls-cert and --tls-key come together: 0, or the exit status 2 of a
   usage error naming the one given alone. */
static inline int tls_cert_and_key(const char *cert, const char *key)
{
    if (cert != NULL && key == NULL)
        return usage_error("--tls-cert needs --tls-key (the certificate's private key)");
    if (cert == NULL && key != NULL)
        return usage_error("--tls-key needs --tls-cert (the certificate of that key)");
    return 0;
}

#endif
