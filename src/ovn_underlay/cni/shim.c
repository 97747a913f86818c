/*
 * ovn-underlay-cni-shim: the native front of the ovn-underlay CNI binary.
 *
 * A container runtime executes the CNI binary once per pod network call.
 * This program forwards the call (the CNI_* environment and stdin) to the
 * node daemon over its unix socket, exactly as ovn_underlay/cni/shim.py does,
 * prints the answer and exits with its code.  It costs ~0.5 ms where starting
 * Python costs ~8 ms of CPU, which matters on a node starting many pods at
 * once.  stdin is read whole before connecting to the daemon, so a runtime
 * slow to write it holds no connection of the daemon meanwhile.  The wire
 * format is ovn_underlay/cni/wire.py's.  It runs in one of two modes:
 *
 * Script mode (standalone nodes).  The binary that `ovn-k8s-underlay
 * node-init --install-cni` writes is a Python script whose first line names
 * this program as its interpreter, so the kernel runs
 * `ovn-underlay-cni-shim SCRIPT`.  The script's comment lines
 *
 *     #socket: PATH           the node daemon's unix socket
 *     #python: PATH           the interpreter of the in-process fallback
 *     #reply-timeout: SECONDS how long to wait for the daemon's answer
 *
 * are its settings.  Whenever the daemon cannot serve the call, Python takes
 * over by running the same script with one argument (see
 * ovn_underlay/cli/cni_binary.py launch), stdin handed over in a memfd:
 *   --in-process  no daemon listens, or it broke off: serve the call in that
 *                 process;
 *   --timed-out   the daemon took the call but did not answer in time:
 *                 report CNI error 11 (try again; it may still be working).
 *
 * Host mode (cluster nodes).  Installed as the CNI binary itself (a runtime
 * runs it with no argument; see ovn_underlay/cni/host_install.py), on a host
 * that has no Python: it is linked statically and reads its settings from
 * the file named like the binary plus ".conf" (e.g.
 * /opt/cni/bin/ovn-underlay.conf), lines
 *
 *     socket: PATH            the node daemon's unix socket
 *     reply-timeout: SECONDS  how long to wait for the daemon's answer
 *
 * ('#' lines are comments), each defaulting to DEFAULT_SOCKET and
 * DEFAULT_REPLY_TIMEOUT when absent, as both are when the file is.  Nothing
 * takes over when the daemon cannot serve the call: it prints the CNI error
 * object (exit code 1) in the call's version (spec.reply_version):
 *   no daemon listens, or it broke off: code 11 (try again), "the ovn-underlay
 *     node agent is not running on this node"; to STATUS, code 50 (the plugin
 *     is not available), the code the spec asks STATUS for;
 *   the daemon took the call but did not answer in time: code 11, as
 *     ovn_underlay/cni/shim.py timed_out words it;
 *   anything else (unreadable settings, out of memory): code 102, the
 *     project's internal error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "OUL1"
#define MAGIC_LEN 4
#define MAX_MESSAGE (64u << 20)
#define MAX_SCRIPT 8192
#define MAX_SETTING 1024
#define MAX_JSON_DEPTH 1000 /* about where Python's json stops (its recursion limit) */

/* ovn_underlay/cni/wire.py DEFAULT_SOCKET and ovn_underlay/cni/shim.py REPLY_TIMEOUT. */
#define DEFAULT_SOCKET "/run/ovn-underlay/cni.sock"
#define DEFAULT_REPLY_TIMEOUT 300.0
#define SETTINGS_SUFFIX ".conf"

/* ovn_underlay/cni/spec.py error codes and SUPPORTED_VERSIONS. */
#define ERR_TRY_AGAIN 11
#define ERR_NOT_AVAILABLE 50
#define ERR_INTERNAL 102
#define NOT_RUNNING "the ovn-underlay node agent is not running on this node"
static const char *const SUPPORTED_VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_VERSIONS (sizeof SUPPORTED_VERSIONS / sizeof *SUPPORTED_VERSIONS)
#define LATEST_VERSION ((int)N_VERSIONS - 1)

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

struct settings {
    char socket[MAX_SETTING];
    char python[MAX_SETTING];
    double reply_timeout;
};

/* Host mode: the version of error replies (an index into SUPPORTED_VERSIONS), else -1. */
static int host_version = -1;

static void cni_error(int version, int code, const char *msg, const char *details);

/* Fail: say why on stderr, in host mode as the CNI error object too (once: a failure
   while printing that one only goes to stderr). */
static void die(const char *what)
{
    const char *why = strerror(errno);
    int version = host_version;
    host_version = -1;
    fprintf(stderr, "ovn-underlay-cni-shim: %s: %s\n", what, why);
    if (version >= 0) {
        char msg[MAX_SETTING + 64];
        snprintf(msg, sizeof msg, "ovn-underlay-cni-shim: %s", what);
        cni_error(version, ERR_INTERNAL, msg, why);
    }
    exit(1);
}

static void reserve(struct buf *b, size_t more)
{
    if (b->len + more > MAX_MESSAGE + 16) {
        errno = EMSGSIZE;
        die("message too large");
    }
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->data = realloc(b->data, cap);
    if (b->data == NULL)
        die("out of memory");
    b->cap = cap;
}

static void append(struct buf *b, const void *data, size_t len)
{
    reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void append_str(struct buf *b, const char *s)
{
    append(b, s, strlen(s));
}

static void append_u32(struct buf *b, size_t value)
{
    unsigned char be[4] = {value >> 24, value >> 16, value >> 8, value};
    append(b, be, 4);
}

static uint32_t read_u32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void write_all(int fd, const char *data, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "ovn-underlay-cni-shim: writing the answer: %s\n", strerror(errno));
            exit(1);
        }
        done += n > 0 ? (size_t)n : 0;
    }
}

/* --- the CNI error object (runner.error_reply: json.dumps(indent=2) and a newline) --- */

static void append_json_string(struct buf *b, const char *s)
{
    append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *escape = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                             : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                             : c == '\f' ? "\\f" : NULL;
        char control[8];
        if (escape == NULL && c < 0x20) {
            snprintf(control, sizeof control, "\\u%04x", c);
            escape = control;
        }
        if (escape)
            append_str(b, escape);
        else
            append(b, s, 1);
    }
    append(b, "\"", 1);
}

/* Print the CNI error object in `version` (an index into SUPPORTED_VERSIONS). */
static void cni_error(int version, int code, const char *msg, const char *details)
{
    struct buf out = {0};
    char number[16];
    append_str(&out, "{\n  \"cniVersion\": ");
    append_json_string(&out, SUPPORTED_VERSIONS[version]);
    snprintf(number, sizeof number, "%d", code);
    append_str(&out, ",\n  \"code\": ");
    append_str(&out, number);
    append_str(&out, ",\n  \"msg\": ");
    append_json_string(&out, msg);
    if (details[0]) {
        append_str(&out, ",\n  \"details\": ");
        append_json_string(&out, details);
    }
    append_str(&out, "\n}\n");
    write_all(1, out.data, out.len);
}

/* --- the call's version: spec.reply_version on a strict JSON parse of stdin --- */

struct json {
    const char *p, *end;
    int depth;
};

enum kind { J_OTHER, J_NULL, J_STRING, J_ARRAY };

/* What a parsed value is, as far as spec.negotiate_version looks at it. */
struct item {
    enum kind kind;
    int version;     /* J_STRING: its index in SUPPORTED_VERSIONS, -1 if empty, -2 otherwise */
    int best;        /* J_ARRAY: the highest such index among its items, -1 if none is one */
    int all_strings; /* J_ARRAY: whether every item is a string */
};

static int json_value(struct json *j, struct item *it);

static void skip_space(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int at(const struct json *j, char c)
{
    return j->p < j->end && *j->p == c;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The string at j->p (a '"'); 0 if malformed.  A version written with escapes is
   no supported version. */
static int json_string(struct json *j, struct item *it)
{
    const char *start = ++j->p;
    int escaped = 0;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        escaped = 1;
        if (j->p >= j->end)
            return 0;
        char e = *j->p++;
        if (e == 'u') {
            for (int i = 0; i < 4; i++)
                if (j->p >= j->end || !is_hex(*j->p++))
                    return 0;
        } else if (e == '\0' || strchr("\"\\/bfnrt", e) == NULL) {
            return 0;
        }
    }
    if (j->p >= j->end)
        return 0;
    size_t len = (size_t)(j->p++ - start);
    it->kind = J_STRING;
    it->version = len == 0 ? -1 : -2;
    for (size_t i = 0; len && !escaped && i < N_VERSIONS; i++)
        if (strlen(SUPPORTED_VERSIONS[i]) == len && memcmp(SUPPORTED_VERSIONS[i], start, len) == 0)
            it->version = (int)i;
    return 1;
}

static int digits(struct json *j)
{
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > start;
}

static int json_number(struct json *j)
{
    if (at(j, '-'))
        j->p++;
    if (at(j, '0'))
        j->p++;
    else if (!digits(j))
        return 0;
    if (at(j, '.')) {
        j->p++;
        if (!digits(j))
            return 0;
    }
    if (at(j, 'e') || at(j, 'E')) {
        j->p++;
        if (at(j, '+') || at(j, '-'))
            j->p++;
        if (!digits(j))
            return 0;
    }
    return 1;
}

static int json_literal(struct json *j, const char *word, struct item *it, enum kind kind)
{
    size_t len = strlen(word);
    if ((size_t)(j->end - j->p) < len || memcmp(j->p, word, len) != 0)
        return 0;
    j->p += len;
    it->kind = kind;
    return 1;
}

static int json_array(struct json *j, struct item *it)
{
    *it = (struct item){.kind = J_ARRAY, .best = -1, .all_strings = 1};
    j->p++;
    skip_space(j);
    if (at(j, ']')) {
        j->p++;
        return 1;
    }
    for (;;) {
        struct item element = {J_OTHER, 0, 0, 0};
        if (!json_value(j, &element))
            return 0;
        if (element.kind != J_STRING)
            it->all_strings = 0;
        else if (element.version > it->best)
            it->best = element.version;
        skip_space(j);
        if (!at(j, ',') && !at(j, ']'))
            return 0;
        if (*j->p++ == ']')
            return 1;
    }
}

/* The object at j->p; its cniVersion and cniVersions values into `version` and
   `offered` when they are not NULL (the top-level object's; the last of a repeated key). */
static int json_object(struct json *j, struct item *version, struct item *offered)
{
    j->p++;
    skip_space(j);
    if (at(j, '}')) {
        j->p++;
        return 1;
    }
    for (;;) {
        struct item key = {J_OTHER, 0, 0, 0}, value = {J_OTHER, 0, 0, 0};
        skip_space(j);
        const char *name = j->p + 1;
        if (!at(j, '"') || !json_string(j, &key))
            return 0;
        size_t len = (size_t)(j->p - 1 - name);
        skip_space(j);
        if (!at(j, ':'))
            return 0;
        j->p++;
        if (!json_value(j, &value))
            return 0;
        if (version && len == 10 && memcmp(name, "cniVersion", len) == 0)
            *version = value;
        if (offered && len == 11 && memcmp(name, "cniVersions", len) == 0)
            *offered = value;
        skip_space(j);
        if (!at(j, ',') && !at(j, '}'))
            return 0;
        if (*j->p++ == '}')
            return 1;
    }
}

static int json_value(struct json *j, struct item *it)
{
    skip_space(j);
    if (j->p >= j->end)
        return 0;
    int ok;
    switch (*j->p) {
    case '"':
        return json_string(j, it);
    case '{':
    case '[':
        if (++j->depth > MAX_JSON_DEPTH)
            return 0;
        ok = *j->p == '{' ? json_object(j, NULL, NULL) : json_array(j, it);
        j->depth--;
        return ok;
    case 't':
        return json_literal(j, "true", it, J_OTHER);
    case 'f':
        return json_literal(j, "false", it, J_OTHER);
    case 'n':
        return json_literal(j, "null", it, J_NULL);
    default:
        return json_number(j);
    }
}

/*
 * The version of an error reply to the call on `stdin_data`, as
 * spec.reply_version picks it: cniVersion if set, else the highest supported
 * of cniVersions, else (also for stdin that is no JSON object, or a version
 * not supported) the latest supported.
 */
static int reply_version(const struct buf *stdin_data)
{
    struct json j = {stdin_data->data, stdin_data->data + stdin_data->len, 1};
    struct item version = {J_NULL, 0, 0, 0}, offered = {J_NULL, 0, 0, 0};
    skip_space(&j);
    if (!at(&j, '{') || !json_object(&j, &version, &offered))
        return LATEST_VERSION;
    skip_space(&j);
    if (j.p != j.end)
        return LATEST_VERSION;
    if (version.kind == J_STRING && version.version != -1)
        return version.version >= 0 ? version.version : LATEST_VERSION;
    if (version.kind != J_NULL && version.kind != J_STRING)
        return LATEST_VERSION;
    if (offered.kind == J_ARRAY && offered.all_strings && offered.best >= 0)
        return offered.best;
    return LATEST_VERSION;
}

/* --- settings --- */

/* Copy the value of the "#KEY: value" line of `script` into `out`; 0 if absent. */
static int setting(const char *script, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    const char *line = script;
    while (*line) {
        const char *next = line + strcspn(line, "\n");
        if (line[0] == '#' && strncmp(line + 1, key, klen) == 0 && line[1 + klen] == ':') {
            const char *value = line + 2 + klen;
            while (*value == ' ')
                value++;
            size_t len = (size_t)(next - value);
            if (len == 0 || len >= size)
                return 0;
            memcpy(out, value, len);
            out[len] = '\0';
            return 1;
        }
        line = *next ? next + 1 : next;
    }
    return 0;
}

/* The number of seconds `text` holds, or -1 unless it is a positive finite number. */
static double seconds(const char *text)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    return end != text && *end == '\0' && errno == 0 && isfinite(value) && value > 0 ? value : -1;
}

static void load_settings(const char *path, struct settings *s)
{
    static char script[MAX_SCRIPT + 1];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        die(path);
    size_t n = fread(script, 1, MAX_SCRIPT, f);
    fclose(f);
    script[n] = '\0';
    char timeout[64];
    if (!setting(script, "socket", s->socket, sizeof s->socket)
        || !setting(script, "python", s->python, sizeof s->python)
        || !setting(script, "reply-timeout", timeout, sizeof timeout)) {
        fprintf(stderr, "ovn-underlay-cni-shim: %s lacks #socket:, #python: or "
                "#reply-timeout: lines; rewrite it with ovn-k8s-underlay node-init "
                "--install-cni\n", path);
        exit(1);
    }
    s->reply_timeout = strtod(timeout, NULL);
}

/* Host mode: refuse the settings file at `path`, saying why (`line` 0: the whole file). */
static void bad_settings(const char *path, int line, const char *why)
{
    char details[MAX_SETTING + 128];
    if (line)
        snprintf(details, sizeof details, "%s line %d: %s", path, line, why);
    else
        snprintf(details, sizeof details, "%s: %s", path, why);
    fprintf(stderr, "ovn-underlay-cni-shim: %s\n", details);
    cni_error(host_version, ERR_INTERNAL, "the ovn-underlay CNI settings cannot be read", details);
    exit(1);
}

/* Host mode: the settings file of the binary at `binary`, the defaults where it is silent. */
static void load_host_settings(const char *binary, struct settings *s)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s%s", binary, SETTINGS_SUFFIX) >= sizeof path) {
        errno = ENAMETOOLONG;
        die(binary);
    }
    strcpy(s->socket, DEFAULT_SOCKET);
    s->python[0] = '\0';
    s->reply_timeout = DEFAULT_REPLY_TIMEOUT;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return;
        die(path);
    }
    static char text[MAX_SCRIPT + 2];
    size_t n = fread(text, 1, MAX_SCRIPT + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed)
        die(path);
    if (n > MAX_SCRIPT)
        bad_settings(path, 0, "larger than 8192 bytes");
    text[n] = '\0';
    if (strlen(text) != n)
        bad_settings(path, 0, "holds a NUL byte");
    char *line = text;
    for (int number = 1; *line; number++) {
        char *next = line + strcspn(line, "\n");
        if (*next)
            *next++ = '\0';
        line += strspn(line, " \t");
        size_t len = strlen(line);
        while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *colon = strchr(line, ':');
        if (len == 0 || line[0] == '#') {
            line = next;
            continue;
        }
        if (colon == NULL)
            bad_settings(path, number, "not KEY: VALUE");
        *colon = '\0';
        char *value = colon + 1 + strspn(colon + 1, " \t");
        if (strcmp(line, "socket") == 0) {
            if (!*value || strlen(value) >= sizeof s->socket)
                bad_settings(path, number, "socket: needs a path");
            strcpy(s->socket, value);
        } else if (strcmp(line, "reply-timeout") == 0) {
            s->reply_timeout = seconds(value);
            if (s->reply_timeout < 0)
                bad_settings(path, number, "reply-timeout: needs a positive number of seconds");
        } else {
            bad_settings(path, number, "unknown key (socket: and reply-timeout: are known)");
        }
        line = next;
    }
}

/* The path this program was executed as: argv[0] as a runtime passes it, else /proc/self/exe. */
static void own_path(const char *argv0, char *out, size_t size)
{
    if (strchr(argv0, '/')) {
        if (strlen(argv0) >= size) {
            errno = ENAMETOOLONG;
            die(argv0);
        }
        strcpy(out, argv0);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n < 0)
        die("/proc/self/exe");
    out[n] = '\0';
}

/* --- the call --- */

static void read_all(int fd, struct buf *b)
{
    for (;;) {
        reserve(b, 65536);
        ssize_t n = read(fd, b->data + b->len, 65536);
        if (n == 0)
            return;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("reading stdin");
        }
        b->len += (size_t)n;
    }
}

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The reply until EOF: 0, -1 if the connection failed, -2 on timeout. */
static int receive(int fd, struct buf *reply, double timeout)
{
    double deadline = now() + timeout;
    for (;;) {
        double left = deadline - now();
        if (left <= 0)
            return -2;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, (int)(left * 1000) + 1);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready <= 0)
            continue;
        reserve(reply, 65536);
        ssize_t n = recv(fd, reply->data + reply->len, 65536, 0);
        if (n == 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
        reply->len += n > 0 ? (size_t)n : 0;
    }
}

enum outcome {
    ANSWERED,  /* `reply` holds a whole reply */
    NO_DAEMON, /* nothing listens on the socket (errno says why) */
    BROKE_OFF, /* the daemon took the call and broke off before a whole reply */
    TIMED_OUT, /* the daemon took the call and did not answer in time */
};

/* Send the call (this process's CNI_* environment and `in`) to the daemon; its reply. */
static enum outcome ask(const struct settings *s, const struct buf *in, struct buf *reply)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(s->socket) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        die(s->socket);
    }
    strcpy(addr.sun_path, s->socket);
    struct buf request = {0}, env = {0};
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4) != 0)
            continue;
        if (env.len)
            append(&env, "", 1);
        append(&env, *e, strlen(*e));
    }
    append(&request, MAGIC, MAGIC_LEN);
    append_u32(&request, env.len);
    append(&request, env.data, env.len);
    append_u32(&request, in->len);
    append(&request, in->data, in->len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int why = errno;
        close(fd);
        errno = why;
        return NO_DAEMON;
    }
    if (send_all(fd, request.data, request.len) < 0 || shutdown(fd, SHUT_WR) < 0) {
        close(fd);
        return BROKE_OFF;
    }
    int got = receive(fd, reply, s->reply_timeout);
    close(fd);
    if (got == -2)
        return TIMED_OUT;
    size_t head = MAGIC_LEN + 1 + 4;
    if (got < 0 || reply->len < head || memcmp(reply->data, MAGIC, MAGIC_LEN) != 0
        || read_u32(reply->data + MAGIC_LEN + 1) != reply->len - head)
        return BROKE_OFF;
    return ANSWERED;
}

/* Print the daemon's answer; its exit code. */
static int answer(const struct buf *reply)
{
    size_t head = MAGIC_LEN + 1 + 4;
    write_all(1, reply->data + head, reply->len - head);
    return (unsigned char)reply->data[MAGIC_LEN];
}

/* Run the script with Python in `mode`, `stdin_data` as its stdin. */
static void python(const struct settings *s, const char *script, const char *mode,
                   const struct buf *stdin_data)
{
    int fd = memfd_create("cni-stdin", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create");
    for (size_t done = 0; done < stdin_data->len;) {
        ssize_t n = write(fd, stdin_data->data + done, stdin_data->len - done);
        if (n < 0 && errno != EINTR)
            die("writing stdin for Python");
        done += n > 0 ? (size_t)n : 0;
    }
    if (lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0)
        die("handing stdin to Python");
    char *argv[] = {(char *)s->python, "-IS", (char *)script, (char *)mode, NULL};
    execv(s->python, argv);
    die(s->python);
}

static int script_mode(const char *script)
{
    struct settings s;
    struct buf in = {0}, reply = {0};
    load_settings(script, &s);
    read_all(0, &in);
    switch (ask(&s, &in, &reply)) {
    case ANSWERED:
        return answer(&reply);
    case TIMED_OUT:
        python(&s, script, "--timed-out", &in);
        break;
    case NO_DAEMON:
    case BROKE_OFF:
        python(&s, script, "--in-process", &in);  /* Python serves the call */
        break;
    }
    return 1;
}

static int host_mode(const char *argv0)
{
    struct settings s;
    struct buf in = {0}, reply = {0};
    char binary[PATH_MAX], details[MAX_SETTING + 128];
    host_version = LATEST_VERSION;
    read_all(0, &in);
    host_version = reply_version(&in);
    own_path(argv0, binary, sizeof binary);
    load_host_settings(binary, &s);
    const char *command = getenv("CNI_COMMAND");
    int unavailable = command && strcmp(command, "STATUS") == 0 ? ERR_NOT_AVAILABLE
                                                                 : ERR_TRY_AGAIN;
    switch (ask(&s, &in, &reply)) {
    case ANSWERED:
        return answer(&reply);
    case NO_DAEMON:
        snprintf(details, sizeof details, "nothing listens on %s: %s", s.socket,
                 strerror(errno));
        cni_error(host_version, unavailable, NOT_RUNNING, details);
        break;
    case BROKE_OFF:
        snprintf(details, sizeof details, "the daemon on %s broke off before answering",
                 s.socket);
        cni_error(host_version, unavailable, NOT_RUNNING, details);
        break;
    case TIMED_OUT:
        snprintf(details, sizeof details, "no reply on %s within %gs", s.socket,
                 s.reply_timeout);
        cni_error(host_version, ERR_TRY_AGAIN, "the ovn-underlay daemon did not answer", details);
        break;
    }
    return 1;
}

/* Script mode with the script's path as the argument, host mode without any. */
int main(int argc, char **argv)
{
    return argc > 1 ? script_mode(argv[1]) : host_mode(argc ? argv[0] : "");
}
