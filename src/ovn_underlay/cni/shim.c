/*
 * ovn-underlay-cni-shim: the native front of the ovn-underlay CNI binary.
 *
 * A container runtime executes the CNI binary once per pod network call.
 * The binary that `ovn-k8s-underlay node-init --install-cni` writes is a
 * Python script whose first line names this program as its interpreter, so
 * the kernel runs `ovn-underlay-cni-shim SCRIPT`.  The script's comment lines
 *
 *     #socket: PATH           the node daemon's unix socket
 *     #python: PATH           the interpreter of the in-process fallback
 *     #reply-timeout: SECONDS how long to wait for the daemon's answer
 *
 * tell this program what to do: forward the call (the CNI_* environment and
 * stdin) to the daemon, exactly as ovn_underlay/cni/shim.py does, print the
 * answer and exit with its code.  It costs ~0.5 ms where starting Python
 * costs ~8 ms of CPU, which matters on a node starting many pods at once.
 *
 * stdin is read whole before connecting to the daemon, so a runtime slow to
 * write it holds no connection of the daemon meanwhile.
 *
 * Whenever the daemon cannot serve the call, Python takes over by running
 * the same script with one argument (see ovn_underlay/cli/cni_binary.py launch), stdin handed over in
 * a memfd:
 *   --in-process  no daemon listens, or it broke off: serve the call in that
 *                 process;
 *   --timed-out   the daemon took the call but did not answer in time:
 *                 report CNI error 11 (try again; it may still be working).
 * The wire format is ovn_underlay/cni/wire.py's.
 */
#define _GNU_SOURCE
#include <errno.h>
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

static void die(const char *what)
{
    fprintf(stderr, "ovn-underlay-cni-shim: %s: %s\n", what, strerror(errno));
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: ovn-underlay-cni-shim SCRIPT (the interpreter line of the "
                "ovn-underlay CNI binary; run that binary instead)\n");
        return 2;
    }
    const char *script = argv[1];
    struct settings s;
    load_settings(script, &s);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(s.socket) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        die(s.socket);
    }
    strcpy(addr.sun_path, s.socket);

    struct buf in = {0}, request = {0}, env = {0}, reply = {0};
    read_all(0, &in);
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
    append_u32(&request, in.len);
    append(&request, in.data, in.len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        python(&s, script, "--in-process", &in);  /* no daemon: Python serves the call */
    if (send_all(fd, request.data, request.len) < 0 || shutdown(fd, SHUT_WR) < 0)
        python(&s, script, "--in-process", &in);
    int got = receive(fd, &reply, s.reply_timeout);
    close(fd);
    if (got == -2)
        python(&s, script, "--timed-out", &in);
    size_t head = MAGIC_LEN + 1 + 4;
    if (got < 0 || reply.len < head || memcmp(reply.data, MAGIC, MAGIC_LEN) != 0
        || read_u32(reply.data + MAGIC_LEN + 1) != reply.len - head)
        python(&s, script, "--in-process", &in);
    for (size_t done = head; done < reply.len;) {
        ssize_t n = write(1, reply.data + done, reply.len - done);
        if (n < 0 && errno != EINTR)
            die("writing the answer");
        done += n > 0 ? (size_t)n : 0;
    }
    return (unsigned char)reply.data[MAGIC_LEN];
}
