/* The shim in C: what runner/shim.py's main() does, for the local backend's warm launcher.
 *
 * A trivial job's shim in Python costs ~3 ms of CPU, most of it the kernel's: the fork of an
 * interpreter and the copy-on-write faults of every page its code touches (~650 a job). Forked from
 * this module's serve(), a shim touches only its own few pages: the drain of a sweep of trivial jobs
 * ran 17-37 % faster with it (docs/bench/drain.md). shim.py stays the reference (and what runs where
 * this module is not built, or with RUNNER_SHIM=python): tests/test_shim.py holds both to the same
 * results, case by case.
 *
 * Its input is launch.json, which only the daemon writes (in its run folder, 0600); it is parsed
 * whole (a small JSON parser below) and nothing in it is run but the job's own argv. When it names a
 * user, the job runs with her uid, gid and groups and no_new_privs, as in shim.py; the shim stays as
 * it was to record the end. Its files: output.log (appended, never through a link), child.json,
 * exit.json (atomic: a temporary file reserved at the start, so a full disk cannot stop it).
 *
 * run(RUN_DIR) runs one shim in this process; serve() is the warm launcher: for each RUN_DIR line on
 * stdin it forks a shim that becomes the leader of a new session, and answers its pid on stdout. The
 * forked shims never return to Python: each ends with _exit(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TAIL_MAX ((size_t)16 << 20)
#define EXIT_RESERVE (64 << 10)
#define FIRST_MAX 4096
#define STEM_MAX 200

/* ---------- growable bytes ---------- */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_add(Buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int buf_str(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

static int buf_fmt(Buf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return buf_add(b, tmp, n);
    char *big = malloc(n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, n + 1, fmt, ap);
    va_end(ap);
    int r = buf_add(b, big, n);
    free(big);
    return r;
}

/* ---------- JSON in (launch.json) ---------- */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct J {
    int t;
    double num;
    char *s; /* J_STR: UTF-8, NUL-terminated; slen may be less than strlen when it holds a NUL */
    size_t slen;
    struct J *items; /* J_ARR: values; J_OBJ: values, keys in keys */
    char **keys;
    size_t *klens;
    size_t n;
} J;

typedef struct {
    const char *p, *end;
    int depth;
} JP;

static void jws(JP *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r')) jp->p++;
}

static int jhex4(JP *jp, unsigned *out) {
    if (jp->end - jp->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = jp->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    jp->p += 4;
    *out = v;
    return 0;
}

static void utf8_put(Buf *b, unsigned cp) {
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = cp; n = 1; }
    else if (cp < 0x800) { u[0] = 0xC0 | (cp >> 6); u[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) { u[0] = 0xE0 | (cp >> 12); u[1] = 0x80 | ((cp >> 6) & 0x3F); u[2] = 0x80 | (cp & 0x3F); n = 3; }
    else { u[0] = 0xF0 | (cp >> 18); u[1] = 0x80 | ((cp >> 12) & 0x3F); u[2] = 0x80 | ((cp >> 6) & 0x3F); u[3] = 0x80 | (cp & 0x3F); n = 4; }
    buf_add(b, u, n);
}

static int jstring(JP *jp, char **out, size_t *len) {
    Buf b = {0};
    jp->p++; /* the opening quote */
    while (jp->p < jp->end && *jp->p != '"') {
        unsigned char c = *jp->p;
        if (c < 0x20) goto bad;
        if (c != '\\') {
            const char *s = jp->p;
            while (jp->p < jp->end && *jp->p != '"' && *jp->p != '\\' && (unsigned char)*jp->p >= 0x20) jp->p++;
            if (buf_add(&b, s, jp->p - s)) goto bad;
            continue;
        }
        jp->p++;
        if (jp->p >= jp->end) goto bad;
        char e = *jp->p++;
        char ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            unsigned cp;
            if (jhex4(jp, &cp)) goto bad;
            if (cp >= 0xD800 && cp < 0xDC00 && jp->end - jp->p >= 6 && jp->p[0] == '\\' && jp->p[1] == 'u') {
                const char *save = jp->p;
                unsigned lo;
                jp->p += 2;
                if (!jhex4(jp, &lo) && lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else jp->p = save;
            }
            utf8_put(&b, cp);
            continue;
        }
        default: goto bad;
        }
        if (buf_add(&b, &ch, 1)) goto bad;
    }
    if (jp->p >= jp->end) goto bad;
    jp->p++;
    if (!b.p && buf_add(&b, "", 0)) goto bad;
    *out = b.p;
    *len = b.n;
    return 0;
bad:
    free(b.p);
    return -1;
}

static int jvalue(JP *jp, J *v) {
    memset(v, 0, sizeof *v);
    jws(jp);
    if (jp->p >= jp->end || ++jp->depth > 64) return -1;
    int r = -1;
    char c = *jp->p;
    if (c == '"') {
        v->t = J_STR;
        r = jstring(jp, &v->s, &v->slen);
    } else if (c == '[' || c == '{') {
        int obj = c == '{';
        v->t = obj ? J_OBJ : J_ARR;
        size_t cap = 0;
        jp->p++;
        jws(jp);
        if (jp->p < jp->end && *jp->p == (obj ? '}' : ']')) {
            jp->p++;
            r = 0;
        } else {
            for (;;) {
                if (v->n == cap) {
                    cap = cap ? cap * 2 : 8;
                    J *items = realloc(v->items, cap * sizeof(J));
                    if (!items) break;
                    v->items = items;
                    if (obj) {
                        char **keys = realloc(v->keys, cap * sizeof(char *));
                        size_t *klens = realloc(v->klens, cap * sizeof(size_t));
                        if (keys) v->keys = keys;
                        if (klens) v->klens = klens;
                        if (!keys || !klens) break;
                    }
                }
                jws(jp);
                if (obj) {
                    if (jp->p >= jp->end || *jp->p != '"' || jstring(jp, &v->keys[v->n], &v->klens[v->n])) break;
                    jws(jp);
                    if (jp->p >= jp->end || *jp->p != ':') break;
                    jp->p++;
                }
                if (jvalue(jp, &v->items[v->n])) break;
                v->n++;
                jws(jp);
                if (jp->p < jp->end && *jp->p == ',') { jp->p++; continue; }
                if (jp->p < jp->end && *jp->p == (obj ? '}' : ']')) { jp->p++; r = 0; }
                break;
            }
        }
    } else if (c == 't' && jp->end - jp->p >= 4 && !memcmp(jp->p, "true", 4)) {
        v->t = J_TRUE; jp->p += 4; r = 0;
    } else if (c == 'f' && jp->end - jp->p >= 5 && !memcmp(jp->p, "false", 5)) {
        v->t = J_FALSE; jp->p += 5; r = 0;
    } else if (c == 'n' && jp->end - jp->p >= 4 && !memcmp(jp->p, "null", 4)) {
        v->t = J_NULL; jp->p += 4; r = 0;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char tmp[64];
        size_t n = 0;
        while (jp->p + n < jp->end && n < sizeof tmp - 1 && strchr("+-0123456789.eE", jp->p[n])) n++;
        memcpy(tmp, jp->p, n);
        tmp[n] = 0;
        char *e;
        v->t = J_NUM;
        v->num = strtod(tmp, &e);
        if (e == tmp + n && n) { jp->p += n; r = 0; }
    }
    jp->depth--;
    return r;
}

static J *jget(J *o, const char *key) {
    if (!o || o->t != J_OBJ) return NULL;
    for (size_t i = o->n; i-- > 0;) /* the last of a repeated key, as Python's json */
        if (!strcmp(o->keys[i], key) && strlen(key) == o->klens[i]) return &o->items[i];
    return NULL;
}

static int jint(J *v, long long *out) {
    if (!v || v->t != J_NUM || v->num != floor(v->num) || fabs(v->num) > 9.2e18) return -1;
    *out = (long long)v->num;
    return 0;
}

/* ---------- JSON out ---------- */

static void out_str(Buf *b, const char *s, size_t n) {
    /* as Python's json.dumps (ensure_ascii): ASCII out, anything else \uXXXX (invalid UTF-8 bytes as U+FFFD) */
    buf_str(b, "\"");
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        unsigned cp;
        size_t len = 1;
        if (c < 0x80) cp = c;
        else if ((c & 0xE0) == 0xC0 && i + 1 < n && (u[i + 1] & 0xC0) == 0x80) { cp = ((c & 0x1F) << 6) | (u[i + 1] & 0x3F); len = 2; }
        else if ((c & 0xF0) == 0xE0 && i + 2 < n && (u[i + 1] & 0xC0) == 0x80 && (u[i + 2] & 0xC0) == 0x80) {
            cp = ((c & 0x0F) << 12) | ((u[i + 1] & 0x3F) << 6) | (u[i + 2] & 0x3F); len = 3;
        } else if ((c & 0xF8) == 0xF0 && i + 3 < n && (u[i + 1] & 0xC0) == 0x80 && (u[i + 2] & 0xC0) == 0x80 && (u[i + 3] & 0xC0) == 0x80) {
            cp = ((c & 0x07) << 18) | ((u[i + 1] & 0x3F) << 12) | ((u[i + 2] & 0x3F) << 6) | (u[i + 3] & 0x3F); len = 4;
        } else cp = 0xFFFD;
        i += len;
        switch (cp) {
        case '"': buf_str(b, "\\\""); continue;
        case '\\': buf_str(b, "\\\\"); continue;
        case '\n': buf_str(b, "\\n"); continue;
        case '\r': buf_str(b, "\\r"); continue;
        case '\t': buf_str(b, "\\t"); continue;
        case '\b': buf_str(b, "\\b"); continue;
        case '\f': buf_str(b, "\\f"); continue;
        }
        if (cp >= 0x20 && cp < 0x7F) { char ch = cp; buf_add(b, &ch, 1); }
        else if (cp < 0x10000) buf_fmt(b, "\\u%04x", cp);
        else { cp -= 0x10000; buf_fmt(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)); }
    }
    buf_str(b, "\"");
}

static void out_float(Buf *b, double x) {
    /* the shortest text that reads back as x (Python's repr of a float) */
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (strtod(tmp, NULL) == x) break;
    }
    buf_str(b, tmp);
    if (!strpbrk(tmp, ".en")) buf_str(b, ".0");
}

static void out_key(Buf *b, const char *key) {
    if (b->n > 1) buf_str(b, ", ");
    out_str(b, key, strlen(key));
    buf_str(b, ": ");
}

/* ---------- the shim ---------- */

static const char *FULL_WORDS[] = {"No space left on device", "Disk quota exceeded", "[Errno 28]", "ENOSPC"};
#define N_FULL_WORDS 4

typedef struct {
    int log_fd;
    long long cap; /* <= 0: none */
    size_t tail_max;
    long long head_left;
    Buf tail;
    long long cut;
    int cutting;
    long long lost;
    char why_lost[160]; /* what took them: the full disk, or the error */
    int log_full;
    Buf said[4];
    int nsaid;
    int ended_line;
    char prev[64];
    size_t nprev;
    Buf first;
    int done;
    int eof;
} Relay;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void say(int log_fd, const char *line) {
    size_t n = strlen(line);
    while (n) {
        ssize_t w = write(log_fd, line, n);
        if (w <= 0) return;
        line += w;
        n -= w;
    }
}

static int relay_write(Relay *r, const char *data, size_t n) {
    while (n) {
        ssize_t w = write(r->log_fd, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            /* Any error loses output, never the job (a relay that stopped would leave it blocked on a
             * full pipe; a job can make its own log refuse writes: it is hers, its size hers to set). */
            if (errno == ENOSPC || errno == EDQUOT) {
                r->log_full = 1;
                snprintf(r->why_lost, sizeof r->why_lost, "the disk holding this log was full");
            } else {
                snprintf(r->why_lost, sizeof r->why_lost, "writing this log failed (%s)", strerror(errno));
            }
            r->lost += n;
            return 0;
        }
        data += w;
        n -= w;
    }
    return 1;
}

static void relay_out(Relay *r, const char *data, size_t n) {
    if (!n) return;
    if (r->lost) {
        char note[300];
        snprintf(note, sizeof note, "%srunner: %lld bytes of output were lost here: %s\n", r->ended_line ? "" : "\n", r->lost,
                 r->why_lost);
        long long lost = r->lost;
        r->lost = 0;
        if (!relay_write(r, note, strlen(note))) {
            r->lost = lost + n; /* (the note's own bytes are not counted as the job's) */
            return;
        }
        r->ended_line = 1;
    }
    if (relay_write(r, data, n)) r->ended_line = data[n - 1] == '\n';
}

/* The last place of needle in hay, or NULL (glibc's memmem, which is fast, from each place found on). */
static const char *memrmem(const char *hay, size_t n, const char *needle, size_t m) {
    const char *last = NULL, *at = hay;
    while ((size_t)(at - hay) < n && (at = memmem(at, n - (at - hay), needle, m))) {
        last = at;
        at++;
    }
    return last;
}

static void relay_take(Relay *r, const char *data, size_t n) {
    if (r->first.n < FIRST_MAX) buf_add(&r->first, data, n < FIRST_MAX - r->first.n ? n : FIRST_MAX - r->first.n);
    if (r->nsaid < 4) {
        Buf seen = {0};
        buf_add(&seen, r->prev, r->nprev);
        buf_add(&seen, data, n);
        long at = -1;
        for (int w = 0; w < N_FULL_WORDS; w++) {
            const char *f = memrmem(seen.p, seen.n, FULL_WORDS[w], strlen(FULL_WORDS[w]));
            if (f && f - seen.p > at) at = f - seen.p;
        }
        if (at >= 0) {
            long from = at - 300 > 0 ? at - 300 : 0;
            long to = at + 300 < (long)seen.n ? at + 300 : (long)seen.n;
            buf_add(&r->said[r->nsaid++], seen.p + from, to - from);
        }
        free(seen.p);
    }
    r->nprev = n < 64 ? n : 64;
    memcpy(r->prev, data + n - r->nprev, r->nprev);
    if (r->cap <= 0 || (!r->cutting && (long long)n <= r->head_left)) {
        relay_out(r, data, n);
        if (r->cap > 0) r->head_left -= n;
        return;
    }
    if (!r->cutting) {
        size_t room = (size_t)r->head_left < n ? (size_t)r->head_left : n;
        const char *nl = room ? memrchr(data, '\n', room) : NULL;
        if (nl && room - (nl - data) < 65536) room = nl - data + 1;
        relay_out(r, data, room);
        data += room;
        n -= room;
        r->cutting = 1;
        char line[300];
        snprintf(line, sizeof line, "%srunner: this log reached its cap ([jobs] log_max_mb = %g); the output is cut here "
                 "and its last part is written when the job ends\n", r->ended_line ? "" : "\n", r->cap / 1048576.0);
        relay_out(r, line, strlen(line));
    }
    r->cut += n;
    buf_add(&r->tail, data, n);
    if (r->tail.n > r->tail_max) {
        memmove(r->tail.p, r->tail.p + r->tail.n - r->tail_max, r->tail_max);
        r->tail.n = r->tail_max;
    }
}

/* Read what the pipe holds now (without blocking); at its end r->eof. */
static void relay_read(Relay *r, int rfd) {
    static char chunk[1 << 16];
    for (;;) {
        ssize_t n = read(rfd, chunk, sizeof chunk);
        if (n > 0) {
            if (!r->done) relay_take(r, chunk, n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        r->eof = 1;
        return;
    }
}

static void relay_finish(Relay *r) {
    r->done = 1;
    if (!r->cutting) return;
    const char *kept = r->tail.p ? r->tail.p : "";
    size_t kn = r->tail.n;
    if (r->cut > (long long)kn && kn > 1) {
        const char *nl = memchr(kept, '\n', kn - 1);
        if (nl) { kn -= nl - kept + 1; kept = nl + 1; }
    }
    char line[200];
    snprintf(line, sizeof line, "runner: %lld bytes of output were cut here; its last %zu bytes follow\n", r->cut - (long long)kn, kn);
    relay_out(r, line, strlen(line));
    relay_out(r, kept, kn);
}

static int free_bytes(const char *path, long long *out) {
    struct statvfs st;
    if (statvfs(path, &st)) return -1;
    *out = (long long)st.f_bavail * st.f_frsize;
    return 0;
}

/* exit.json's disk_full (shim.py's _Relay.disk_full), or nothing */
static void relay_disk_full(Relay *r, Buf *end, const char *log_folder, const char **job_folders, int nfolders) {
    if (!r->log_full && !r->nsaid) return;
    const char *folders[8];
    int nf = 0;
    for (int i = 0; i <= nfolders; i++) {
        const char *f = i < nfolders ? job_folders[i] : log_folder;
        if (!f || !*f) continue;
        int dup = 0;
        for (int k = 0; k < nf; k++) dup |= !strcmp(folders[k], f);
        if (!dup) folders[nf++] = f;
    }
    const char *folder = NULL;
    if (r->log_full) folder = log_folder;
    else {
        Buf said = {0};
        for (int i = 0; i < r->nsaid; i++) buf_add(&said, r->said[i].p, r->said[i].n);
        size_t best = 0;
        for (int i = 0; i < nf; i++) /* the longest folder its words name (the first of equal ones) */
            if (strlen(folders[i]) > best && said.p && memmem(said.p, said.n, folders[i], strlen(folders[i]))) {
                folder = folders[i];
                best = strlen(folders[i]);
            }
        free(said.p);
        if (!folder) { /* else the one with the least space left */
            long long least = 0;
            for (int i = 0; i < nf; i++) {
                long long fb;
                if (free_bytes(folders[i], &fb)) fb = 1LL << 62;
                if (!folder || fb < least) { folder = folders[i]; least = fb; }
            }
        }
    }
    if (!folder) return;
    long long fb;
    out_key(end, "disk_full");
    buf_str(end, "{\"folder\": ");
    out_str(end, folder, strlen(folder));
    buf_str(end, ", \"free_bytes\": ");
    if (free_bytes(folder, &fb)) buf_str(end, "null");
    else buf_fmt(end, "%lld", fb);
    buf_str(end, r->log_full ? ", \"log\": true}" : ", \"log\": false}");
}

static long long host_oom_kills(void) {
    int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    Buf b = {0};
    char chunk[8192];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) buf_add(&b, chunk, n);
    close(fd);
    long long v = -1;
    const char *at = b.p ? memmem(b.p, b.n, "\noom_kill ", 10) : NULL;
    if (at) v = strtoll(at + 10, NULL, 10);
    free(b.p);
    return v;
}

/* atomic.py's temporary name: beside path, hidden, of this process, never used before */
static void tmp_name(char *out, size_t size, const char *dir, const char *name) {
    unsigned char rnd[4] = {0};
    if (syscall(SYS_getrandom, rnd, 4, 0) != 4) { /* (the name is also made with O_EXCL: never another's file) */
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        memcpy(rnd, &t.tv_nsec, 4);
    }
    snprintf(out, size, "%s/.%.*s.%d.%02x%02x%02x%02x", dir, STEM_MAX, name, (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3]);
}

/* atomic.write_bytes: into `tmp` (made now unless reserved_fd >= 0), then renamed over dir/name */
static int write_atomic(const char *dir, const char *name, const Buf *data, int do_fsync, int reserved_fd, const char *reserved_tmp) {
    char tmp[4096], path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = reserved_fd;
    if (fd >= 0) snprintf(tmp, sizeof tmp, "%s", reserved_tmp);
    else {
        tmp_name(tmp, sizeof tmp, dir, name);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) return -1;
    }
    int ok = 1;
    if (reserved_fd >= 0 && lseek(fd, 0, SEEK_SET) < 0) ok = 0;
    size_t left = data->n;
    const char *p = data->p;
    while (ok && left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { ok = 0; break; }
        p += w;
        left -= w;
    }
    if (ok && reserved_fd >= 0 && ftruncate(fd, data->n)) ok = 0;
    if (ok && do_fsync && fsync(fd)) ok = 0;
    close(fd);
    if (ok && rename(tmp, path)) ok = 0;
    if (!ok) unlink(tmp);
    return ok ? 0 : -1;
}

/* Python's repr() of a str, for the log's "failed to start 'PROGRAM'" */
static void py_repr(Buf *b, const char *s) {
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    buf_add(b, &q, 1);
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '\\') buf_str(b, "\\\\");
        else if (*u == (unsigned char)q) { buf_str(b, "\\"); buf_add(b, u, 1); }
        else if (*u == '\n') buf_str(b, "\\n");
        else if (*u == '\r') buf_str(b, "\\r");
        else if (*u == '\t') buf_str(b, "\\t");
        else if (*u < 0x20 || *u == 0x7F) buf_fmt(b, "\\x%02x", *u);
        else buf_add(b, u, 1);
    }
    buf_add(b, &q, 1);
}

static volatile sig_atomic_t got_signal = 0;
static volatile pid_t child_pid = 0;

static void forward(int sig) {
    /* A signal to the shim goes to the job's whole group; the shim stays to record how it ended. */
    got_signal = sig;
    if (child_pid > 0) kill(-child_pid, sig);
}

static const struct { const char *name; int kind; const char *field; } RLIMITS[] = {
    {"RLIMIT_AS", RLIMIT_AS, "memory_gb"}, {"RLIMIT_NOFILE", RLIMIT_NOFILE, "max_open_files"},
    {"RLIMIT_NPROC", RLIMIT_NPROC, "max_processes"}, {"RLIMIT_CPU", RLIMIT_CPU, "cpu_seconds"},
    {"RLIMIT_CORE", RLIMIT_CORE, NULL}, {"RLIMIT_DATA", RLIMIT_DATA, NULL}, {"RLIMIT_FSIZE", RLIMIT_FSIZE, NULL},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK, NULL}, {"RLIMIT_RSS", RLIMIT_RSS, NULL}, {"RLIMIT_STACK", RLIMIT_STACK, NULL},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS, NULL}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE, NULL}, {"RLIMIT_NICE", RLIMIT_NICE, NULL},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO, NULL}, {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING, NULL},
};
#define N_RLIMITS (sizeof RLIMITS / sizeof RLIMITS[0])

typedef struct {
    int kind;
    rlim_t value;
} Limit;

/* What the child reports on its error pipe when it cannot start the program. */
typedef struct {
    int err;     /* errno, or 0 for the preexec failure */
    int where;   /* 0: exec (the program named), 1: chdir (the cwd named), 2: before exec (nothing named) */
} SpawnErr;

static void child_fail(int fd, int err, int where) {
    SpawnErr e = {err, where};
    if (write(fd, &e, sizeof e) < 0) {}
    _exit(255);
}

static void close_from(int lowfd, int keep) {
#ifdef SYS_close_range
    if (keep < lowfd) {
        if (!syscall(SYS_close_range, lowfd, ~0U, 0)) return;
    } else if (!syscall(SYS_close_range, lowfd, keep - 1, 0) && !syscall(SYS_close_range, keep + 1, ~0U, 0)) {
        return;
    }
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 1 << 20) max = 1 << 20;
    for (long fd = lowfd; fd < max; fd++)
        if (fd != keep) close(fd);
}

static int run_shim(const char *job_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/launch.json", job_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    Buf raw = {0};
    char chunk[16384];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0) buf_add(&raw, chunk, got);
    close(fd);
    if (!raw.p) return 1;
    J spec;
    JP jp = {raw.p, raw.p + raw.n, 0};
    if (jvalue(&jp, &spec) || spec.t != J_OBJ) return 1;
    J *argv_j = jget(&spec, "argv"), *env_j = jget(&spec, "env"), *cwd_j = jget(&spec, "cwd");
    if (!argv_j || argv_j->t != J_ARR || !argv_j->n || !env_j || env_j->t != J_OBJ || !cwd_j || cwd_j->t != J_STR) return 1;
    for (size_t i = 0; i < argv_j->n; i++)
        if (argv_j->items[i].t != J_STR) return 1;
    for (size_t i = 0; i < env_j->n; i++)
        if (env_j->items[i].t != J_STR) return 1;
    J *program_j = jget(&spec, "program");
    const char *program = program_j && program_j->t == J_STR ? program_j->s : argv_j->items[0].s;
    J *user = jget(&spec, "user");
    if (user && user->t == J_NULL) user = NULL;
    long long uid = -1, gid = -1;
    gid_t *groups = NULL;
    size_t ngroups = 0;
    if (user) {
        J *g = jget(user, "groups");
        if (jint(jget(user, "uid"), &uid) || jint(jget(user, "gid"), &gid) || !g || g->t != J_ARR || uid < 0 || gid < 0) return 1;
        groups = calloc(g->n + 1, sizeof(gid_t));
        for (size_t i = 0; i < g->n; i++) {
            long long x;
            if (jint(&g->items[i], &x) || x < 0) return 1;
            groups[ngroups++] = (gid_t)x;
        }
    }
    J *sandboxed_j = jget(&spec, "sandboxed");
    int sandboxed = sandboxed_j && sandboxed_j->t == J_TRUE;
    long long log_mode = 0600, cap = 0;
    J *mode_j = jget(&spec, "log_mode"), *cap_j = jget(&spec, "log_max_bytes");
    if (mode_j && jint(mode_j, &log_mode)) return 1;
    if (cap_j && cap_j->t != J_NULL && jint(cap_j, &cap)) return 1;

    char exit_name[] = "exit.json";
    snprintf(path, sizeof path, "%s/output.log", job_dir);
    int log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, (mode_t)log_mode);
    if (log_fd < 0) return 1;
    if (user && fchown(log_fd, (uid_t)uid, (gid_t)gid)) return 1; /* hers to read; the folder stays the daemon's */
    if (fchmod(log_fd, (mode_t)log_mode)) return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);

    double started = now();
    long long oom_before = host_oom_kills();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* the job's orphans come here, and bubblewrap's init */
    char reserved_tmp[4096];
    tmp_name(reserved_tmp, sizeof reserved_tmp, job_dir, exit_name);
    int reserved_fd = open(reserved_tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (reserved_fd >= 0) posix_fallocate(reserved_fd, 0, EXIT_RESERVE);
    int out[2];
    if (pipe2(out, O_CLOEXEC)) return 1;

    /* The limits, fitted as shim.py's _fit_limits: above the hard limit it inherits, only a root job could raise them. */
    Limit limits[N_RLIMITS];
    size_t nlimits = 0;
    J *rl = jget(&spec, "rlimits");
    int can_raise = geteuid() == 0 && !user;
    for (size_t i = 0; rl && rl->t == J_OBJ && i < rl->n; i++) {
        size_t k = 0;
        while (k < N_RLIMITS && strcmp(RLIMITS[k].name, rl->keys[i])) k++;
        long long value;
        if (k == N_RLIMITS || jint(&rl->items[i], &value)) return 1;
        const char *field = RLIMITS[k].field ? RLIMITS[k].field : RLIMITS[k].name;
        struct rlimit cur;
        getrlimit(RLIMITS[k].kind, &cur);
        char line[400];
        if (RLIMITS[k].kind == RLIMIT_NOFILE) {
            int nfd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC);
            if (nfd >= 0) {
                char txt[32] = {0};
                ssize_t tn = read(nfd, txt, sizeof txt - 1);
                close(nfd);
                char *e;
                long long nr_open = tn > 0 ? strtoll(txt, &e, 10) : -1;
                if (tn > 0 && e != txt && value > nr_open && nr_open >= 0) {
                    snprintf(line, sizeof line, "runner: warning: resources.%s: %lld is above this machine's fs.nr_open; using %lld\n", field, value, nr_open);
                    say(log_fd, line);
                    value = nr_open;
                }
            }
        }
        if (cur.rlim_max != RLIM_INFINITY && value > (long long)cur.rlim_max && !can_raise) {
            snprintf(line, sizeof line, "runner: warning: resources.%s: %lld is above this user's hard limit; using %llu\n", field, value,
                     (unsigned long long)cur.rlim_max);
            say(log_fd, line);
            value = cur.rlim_max;
        }
        size_t at = 0; /* a kind named twice: its last value, in its first place (a Python dict) */
        while (at < nlimits && limits[at].kind != RLIMITS[k].kind) at++;
        limits[at].kind = RLIMITS[k].kind;
        limits[at].value = value < 0 ? RLIM_INFINITY : (rlim_t)value;
        if (at == nlimits) nlimits++;
    }

    /* The environment: launch.json's, with the names it lists in `inherit` taken from this process's own. */
    size_t nenv = 0;
    char **envp = calloc(env_j->n + 1 + 64, sizeof(char *));
    const char *bad = NULL;
    J *inherit = jget(&spec, "inherit");
    const char *home = NULL, *tmpdir = NULL, *path_var = NULL;
    for (size_t i = 0; i < env_j->n && !bad; i++) {
        const char *k = env_j->keys[i];
        const char *v = env_j->items[i].s;
        int dup = 0;
        for (size_t j = i + 1; j < env_j->n; j++) dup |= !strcmp(env_j->keys[j], k); /* (the parser keeps repeats: the last wins) */
        if (dup) continue;
        for (size_t j = 0; inherit && inherit->t == J_ARR && j < inherit->n; j++)
            if (inherit->items[j].t == J_STR && !strcmp(inherit->items[j].s, k) && getenv(k)) v = getenv(k);
        if (strlen(k) != env_j->klens[i] || strlen(v) != (v == env_j->items[i].s ? env_j->items[i].slen : strlen(v))) bad = "embedded null byte";
        else if (strchr(k, '=')) bad = "illegal environment variable name";
        char *kv = malloc(strlen(k) + strlen(v) + 2);
        sprintf(kv, "%s=%s", k, v);
        envp[nenv++] = kv;
        if (!strcmp(k, "HOME")) home = v;
        if (!strcmp(k, "TMPDIR")) tmpdir = v;
        if (!strcmp(k, "PATH")) path_var = v;
    }
    for (size_t j = 0; inherit && inherit->t == J_ARR && j < inherit->n && !bad; j++) { /* inherited names launch.json's env lacks */
        const char *k = inherit->items[j].t == J_STR ? inherit->items[j].s : NULL;
        if (!k || !getenv(k) || jget(env_j, k) || nenv >= env_j->n + 64) continue;
        int seen = 0;
        for (size_t i = 0; i < j; i++) seen |= inherit->items[i].t == J_STR && !strcmp(inherit->items[i].s, k);
        if (seen) continue;
        char *kv = malloc(strlen(k) + strlen(getenv(k)) + 2);
        sprintf(kv, "%s=%s", k, getenv(k));
        envp[nenv++] = kv;
        if (!strcmp(k, "HOME")) home = getenv(k);
        if (!strcmp(k, "TMPDIR")) tmpdir = getenv(k);
        if (!strcmp(k, "PATH")) path_var = getenv(k);
    }
    /* HOME and TMPDIR in the job folder, made by whoever runs the job */
    J *jd_j = jget(env_j, "RUNNER_JOB_DIR");
    char jd[4096] = "";
    if (jd_j && jd_j->t == J_STR) {
        snprintf(jd, sizeof jd, "%s", jd_j->s);
        size_t l = strlen(jd);
        while (l && jd[l - 1] == '/') jd[--l] = 0;
    }
    const char *folders[2];
    int nfold = 0;
    size_t jdl = strlen(jd);
    if (jdl && home && !strncmp(home, jd, jdl) && home[jdl] == '/') folders[nfold++] = home;
    if (jdl && tmpdir && !strncmp(tmpdir, jd, jdl) && tmpdir[jdl] == '/') folders[nfold++] = tmpdir;
    const char *folder_err = NULL; /* this shim runs as the job's user already: it makes them */
    int folder_errno = 0;
    for (int i = 0; !user && i < nfold && !folder_err; i++)
        if (mkdir(folders[i], 0700) && errno != EEXIST) { folder_err = folders[i]; folder_errno = errno; }

    char **argv = calloc(argv_j->n + 1, sizeof(char *));
    for (size_t i = 0; i < argv_j->n && !bad; i++) {
        argv[i] = argv_j->items[i].s;
        if (strlen(argv[i]) != argv_j->items[i].slen) bad = "embedded null byte";
    }
    const char *cwd = cwd_j->s;
    if (strlen(cwd) != cwd_j->slen) bad = "embedded null byte";

    /* Where the program is looked for: its own path when it has a slash, else each folder of the job's PATH. */
    const char *exe = argv[0];
    Buf cands = {0};
    size_t ncand = 0;
    if (!bad) {
        if (strchr(exe, '/')) { buf_add(&cands, exe, strlen(exe) + 1); ncand = 1; }
        else {
            const char *pv = path_var ? path_var : "/bin:/usr/bin";
            for (const char *s = pv;; ) {
                const char *e = strchr(s, ':');
                size_t l = e ? (size_t)(e - s) : strlen(s);
                if (l) { buf_add(&cands, s, l); if (s[l - 1] != '/') buf_add(&cands, "/", 1); }
                buf_add(&cands, exe, strlen(exe) + 1);
                ncand++;
                if (!e) break;
                s = e + 1;
            }
        }
    }
    char **cand = calloc(ncand + 1, sizeof(char *));
    for (size_t i = 0, off = 0; i < ncand; i++) { cand[i] = cands.p + off; off += strlen(cand[i]) + 1; }

    Buf err_text = {0};
    pid_t pid = -1;
    if (bad) buf_str(&err_text, bad);
    else if (folder_err) {
        buf_fmt(&err_text, "[Errno %d] %s: ", folder_errno, strerror(folder_errno));
        py_repr(&err_text, folder_err);
    } else {
        int errp[2];
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || pipe2(errp, O_CLOEXEC)) {
            buf_fmt(&err_text, "[Errno %d] %s", errno, strerror(errno));
        } else {
            sigset_t all, old;
            sigfillset(&all);
            sigprocmask(SIG_SETMASK, &all, &old); /* no handler of the shim's runs in the child */
            pid = fork();
            if (pid == 0) {
                for (int s = 1; s < NSIG; s++) { /* the shim's handlers are not the job's; SIGHUP stays ignored, as from shim.py */
                    if (s == SIGKILL || s == SIGSTOP || s == SIGHUP) continue;
                    signal(s, SIG_DFL);
                }
                sigprocmask(SIG_SETMASK, &old, NULL);
                close(out[0]);
                close(errp[0]);
                if (dup2(null, 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0) child_fail(errp[1], errno, 2);
                if (chdir(cwd)) child_fail(errp[1], errno, 1);
                if (setpgid(0, 0)) child_fail(errp[1], errno, 2);
                if (user) {
                    if (setgroups(ngroups, groups)) child_fail(errp[1], errno, 2);
                    if (setregid((gid_t)gid, (gid_t)gid)) child_fail(errp[1], errno, 2);
                    if (setreuid((uid_t)uid, (uid_t)uid)) child_fail(errp[1], errno, 2);
                    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); /* no setuid binary gives the job more */
                    for (int i = 0; i < nfold; i++) /* as the job's user: hers, in her folder */
                        if (mkdir(folders[i], 0700) && errno != EEXIST) child_fail(errp[1], 0, 2);
                }
                for (size_t i = 0; i < nlimits; i++) {
                    struct rlimit r = {limits[i].value, limits[i].value};
                    if (setrlimit(limits[i].kind, &r)) child_fail(errp[1], 0, 2);
                }
                close_from(3, errp[1]);
                int saved = 0;
                for (size_t i = 0; i < ncand; i++) {
                    execve(cand[i], argv, envp);
                    if (errno != ENOENT && errno != ENOTDIR && !saved) saved = errno;
                }
                child_fail(errp[1], saved ? saved : errno, 0);
            }
            int fork_errno = errno;
            sigprocmask(SIG_SETMASK, &old, NULL);
            close(errp[1]);
            close(null);
            if (pid < 0) {
                close(errp[0]);
                buf_fmt(&err_text, "[Errno %d] %s", fork_errno, strerror(fork_errno));
            } else {
                SpawnErr e;
                ssize_t n;
                while ((n = read(errp[0], &e, sizeof e)) < 0 && errno == EINTR) {}
                close(errp[0]);
                if (n == (ssize_t)sizeof e) { /* it never started: as Popen says it */
                    int st;
                    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
                    pid = -1;
                    if (!e.err) buf_str(&err_text, "Exception occurred in preexec_fn.");
                    else {
                        buf_fmt(&err_text, "[Errno %d] %s", e.err, strerror(e.err));
                        if (e.where < 2) {
                            buf_str(&err_text, ": ");
                            py_repr(&err_text, e.where == 1 ? cwd : exe);
                        }
                    }
                }
            }
        }
    }
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        Buf line = {0};
        buf_str(&line, "runner: failed to start ");
        py_repr(&line, program);
        buf_fmt(&line, ": %s\n", err_text.p);
        say(log_fd, line.p);
        Buf end = {0};
        buf_str(&end, "{\"exit_code\": null, \"signal\": null, \"spawn_error\": ");
        out_str(&end, err_text.p, err_text.n);
        buf_str(&end, ", \"started_at\": ");
        out_float(&end, started);
        buf_str(&end, ", \"finished_at\": ");
        out_float(&end, now());
        buf_str(&end, "}");
        write_atomic(job_dir, exit_name, &end, 1, reserved_fd, reserved_tmp);
        return 0;
    }
    close(out[1]);
    child_pid = pid;
    fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
    Relay r;
    memset(&r, 0, sizeof r);
    r.log_fd = log_fd;
    r.cap = cap;
    r.ended_line = 1;
    if (cap > 0) {
        long long tm = cap / 4 > 4096 ? cap / 4 : 4096;
        r.tail_max = tm < (long long)TAIL_MAX ? (size_t)tm : TAIL_MAX;
        struct stat st;
        long long size = fstat(log_fd, &st) ? 0 : st.st_size;
        long long left = cap - (long long)r.tail_max - size;
        r.head_left = left > 0 ? left : 0;
    }
    {
        Buf child = {0};
        buf_fmt(&child, "{\"pid\": %d, \"pgid\": %d, \"started_at\": ", (int)pid, (int)pid);
        out_float(&child, started);
        buf_fmt(&child, ", \"shim_pid\": %d}", (int)getpid());
        write_atomic(job_dir, "child.json", &child, 0, -1, NULL); /* (a full disk: the daemon follows the shim's pid) */
        free(child.p);
    }
    if (got_signal) forward(got_signal);

    /* Wait for the job, copying its output meanwhile. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno == ECHILD) { /* reaped by someone else (never here): ended, as Popen.wait() takes it */
            status = 0;
            break;
        }
        struct pollfd p[2] = {{out[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
        int np = 0;
        struct pollfd *pp = p;
        if (!r.eof) np++;
        else pp = p + 1;
        if (pidfd >= 0) np++;
        int timeout = pidfd >= 0 ? -1 : 20;
        if (np == 0) { poll(NULL, 0, timeout); continue; }
        if (poll(pp, np, timeout) > 0 && !r.eof && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) relay_read(&r, out[0]);
    }
    double finished = now();
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    if (pidfd >= 0) close(pidfd);

    /* What is left of the job (orphans that came here, bubblewrap's init): 0.5 s to end by itself, then
     * SIGTERM, then after 2 s SIGKILL; each reaped. Naps of 0.25 ms first, doubling up to 10 ms. */
    double t0 = now(), nap = 0.00025;
    for (;;) {
        int st2;
        pid_t w = waitpid(-1, &st2, WNOHANG);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) break;
        if (w > 0) continue;
        double age = now() - t0;
        if (age > 10.0) break;
        if (age > 0.5) {
            int sig = age < 2.5 ? SIGTERM : SIGKILL;
            char cpath[64];
            snprintf(cpath, sizeof cpath, "/proc/self/task/%d/children", (int)getpid());
            int cfd = open(cpath, O_RDONLY | O_CLOEXEC);
            if (cfd >= 0) {
                char kids[4096];
                ssize_t kn = read(cfd, kids, sizeof kids - 1);
                close(cfd);
                if (kn > 0) {
                    kids[kn] = 0;
                    for (char *s = kids, *e; *s; s = e) {
                        long k = strtol(s, &e, 10);
                        if (e == s) break;
                        if (k > 0) kill((pid_t)k, sig);
                    }
                }
            }
        }
        if (!r.eof) {
            struct pollfd p = {out[0], POLLIN, 0};
            struct timespec ts = {0, (long)(nap * 1e9)};
            if (ppoll(&p, 1, &ts, NULL) > 0) relay_read(&r, out[0]);
        } else {
            struct timespec ts = {0, (long)(nap * 1e9)};
            nanosleep(&ts, NULL);
        }
        nap = nap * 2 < 0.01 ? nap * 2 : 0.01;
    }
    /* The pipe's end: every process of the job has ended (or kept it open: not waited for past 5 s). */
    double until = now() + 5.0;
    while (!r.eof) {
        int left = (int)((until - now()) * 1000);
        if (left <= 0) break;
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, left) > 0) relay_read(&r, out[0]);
    }
    relay_finish(&r);
    close(out[0]);

    Buf end = {0};
    if (sandboxed && rc == 1 && r.first.n > 7 && !memcmp(r.first.p, "bwrap: ", 7) && r.first.p[r.first.n - 1] == '\n' &&
        memchr(r.first.p, '\n', r.first.n) == r.first.p + r.first.n - 1) {
        /* bubblewrap never started the program: one line of its own and exit status 1 */
        Buf why = {0};
        buf_add(&why, r.first.p + 7, r.first.n - 8);
        if (why.n > 7 && !memcmp(why.p, "execvp ", 7)) { /* "execvp PROG: REASON": the reason alone */
            const char *sep = memrmem(why.p, why.n, ": ", 2);
            if (sep) {
                size_t off = sep + 2 - why.p;
                memmove(why.p, why.p + off, why.n - off + 1);
                why.n -= off;
            }
        }
        Buf line = {0};
        buf_str(&line, "runner: failed to start ");
        py_repr(&line, program);
        buf_str(&line, ": ");
        buf_add(&line, why.p, why.n);
        buf_str(&line, "\n");
        say(log_fd, line.p);
        buf_str(&end, "{\"exit_code\": null, \"signal\": null, \"spawn_error\": ");
        out_str(&end, why.p, why.n);
        buf_fmt(&end, ", \"raw_status\": %d, \"started_at\": ", rc);
        out_float(&end, started);
        buf_str(&end, ", \"finished_at\": ");
        out_float(&end, finished);
        buf_str(&end, "}");
        write_atomic(job_dir, exit_name, &end, 1, reserved_fd, reserved_tmp);
        close(log_fd);
        return 0;
    }
    int sig = rc < 0 ? -rc : 0;
    if (sandboxed && rc > 128 && rc - 128 < 65) sig = rc - 128; /* bubblewrap reports a child killed by signal N as 128+N */
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    buf_str(&end, "{\"exit_code\": ");
    if (sig) buf_fmt(&end, "null, \"signal\": %d", sig);
    else buf_fmt(&end, "%d, \"signal\": null", rc);
    buf_fmt(&end, ", \"raw_status\": %d, \"started_at\": ", rc);
    out_float(&end, started);
    buf_str(&end, ", \"finished_at\": ");
    out_float(&end, finished);
    buf_fmt(&end, ", \"max_rss_kb\": %ld, \"cpu_seconds\": ", ru.ru_maxrss);
    out_float(&end, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    if (rc != 0 || sig) {
        J *e = env_j;
        J *f0 = jget(e, "RUNNER_JOB_DIR"), *f2 = jget(e, "TMPDIR"), *f3 = jget(e, "HOME");
        const char *jf[4] = {f0 && f0->t == J_STR ? f0->s : NULL, cwd, f2 && f2->t == J_STR ? f2->s : NULL, f3 && f3->t == J_STR ? f3->s : NULL};
        relay_disk_full(&r, &end, job_dir, jf, 4);
    }
    if (rc != 0 && oom_before >= 0) {
        long long oom_after = host_oom_kills(); /* the host ran out of memory meanwhile (runner.outcome) */
        if (oom_after > oom_before) buf_fmt(&end, ", \"host_oom_kills\": %lld", oom_after - oom_before);
    }
    buf_str(&end, "}");
    write_atomic(job_dir, exit_name, &end, 1, reserved_fd, reserved_tmp);
    close(log_fd);
    return 0;
}

static PyObject *shim_run(PyObject *self, PyObject *args) {
    const char *job_dir;
    if (!PyArg_ParseTuple(args, "s", &job_dir)) return NULL;
    int code = run_shim(job_dir);
    return PyLong_FromLong(code);
}

static PyObject *shim_serve(PyObject *self, PyObject *args) {
    signal(SIGCHLD, SIG_IGN); /* its shims are reaped by the kernel */
    signal(SIGHUP, SIG_IGN);
    Buf in = {0};
    char chunk[4096];
    for (;;) {
        char *nl;
        while (!in.p || !(nl = memchr(in.p, '\n', in.n))) {
            ssize_t n = read(0, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { free(in.p); Py_RETURN_NONE; } /* the daemon went: the shims run on */
            buf_add(&in, chunk, n);
        }
        *nl = 0;
        char run_dir[4096];
        snprintf(run_dir, sizeof run_dir, "%s", in.p);
        size_t used = nl - in.p + 1;
        memmove(in.p, in.p + used, in.n - used + 1);
        in.n -= used;
        pid_t pid = fork();
        if (pid == 0) {
            int code = 1;
            signal(SIGCHLD, SIG_DFL); /* the shim waits for its job */
            setsid();
            int null = open("/dev/null", O_RDWR);
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
                if (null > 2) close(null);
            }
            code = run_shim(run_dir);
            _exit(code);
        }
        char line[32];
        int len = snprintf(line, sizeof line, "%d\n", (int)pid);
        if (write(1, line, len) != len) { free(in.p); Py_RETURN_NONE; }
    }
}

static PyMethodDef methods[] = {
    {"run", shim_run, METH_VARARGS, "run(run_dir): the shim of one job, in this process; its exit code."},
    {"serve", shim_serve, METH_NOARGS, "serve(): the warm launcher: a shim forked for each RUN_DIR line on stdin, its pid on stdout."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_shim_c", "The shim in C (runner/shim.py's main).", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__shim_c(void) { return PyModule_Create(&module); }
