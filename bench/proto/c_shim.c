/* A measuring prototype, not used by runner: the path of runner/shim.py that a trivial job takes,
 * in C, to measure what a shim that is not Python would give the drain (#30; docs/bench/drain.md).
 * Run by drain_c_shim.sh, which puts it in place of `shim.py --serve` in a throwaway worktree.
 *
 * It does what shim.py does for /bin/true run as the daemon's own user: reads launch.json's argv,
 * env and cwd; opens output.log; becomes the subreaper; reserves exit.json's space; starts the job
 * in a process group of its own with its output piped into the log; writes child.json; waits; waits
 * for what is left (naps from 0.25 ms); writes exit.json (fsync, rename). It leaves out what a
 * trivial job never reaches: launch.json's user, rlimits, inherit and log cap, the disk-full and
 * bubblewrap-failure reasons, signals forwarded, the SIGTERM and SIGKILL of leftovers, and JSON
 * escapes past \n and \t. It trusts its launch.json: never point it at one a user wrote. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <errno.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY); if (fd < 0) return NULL;
    struct stat st; fstat(fd, &st); char *b = malloc(st.st_size + 1);
    ssize_t n = read(fd, b, st.st_size); close(fd); if (n < 0) n = 0; b[n] = 0; return b;
}
/* parse a JSON string at *p (pointing at '"'), return malloc'd unescaped (no \u handling beyond ascii) */
static char *jstr(char **p) {
    char *s = *p + 1, *out = malloc(strlen(s) + 1), *o = out;
    while (*s && *s != '"') {
        if (*s == '\\') { s++; switch (*s) { case 'n': *o++='\n'; break; case 't': *o++='\t'; break; default: *o++=*s; } s++; }
        else *o++ = *s++;
    }
    *o = 0; *p = s + 1; return out;
}
static void skipws(char **p) { while (**p == ' ' || **p == '\n' || **p == ',' || **p == ':') (*p)++; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void write_atomic(const char *dir, const char *name, const char *data, int fsync_it, int fd_reserved, const char *tmp_reserved) {
    char path[4096], tmp[4096]; snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = fd_reserved;
    if (fd < 0) { snprintf(tmp, sizeof tmp, "%s/.%s.tmp%d", dir, name, getpid()); fd = open(tmp, O_WRONLY|O_CREAT|O_TRUNC, 0644); }
    else snprintf(tmp, sizeof tmp, "%s", tmp_reserved);
    size_t len = strlen(data); if (write(fd, data, len) < 0) {}
    if (fd_reserved >= 0) if (ftruncate(fd, len)) {}
    if (fsync_it) fsync(fd);
    close(fd); rename(tmp, path);
}

static int run(const char *dir) {
    char path[4096]; snprintf(path, sizeof path, "%s/launch.json", dir);
    char *j = slurp(path); if (!j) return 1;
    char *argv[256]; int argc = 0; char *envp[512]; int envc = 0; char *cwd = NULL;
    char *p = strstr(j, "\"argv\""); p = strchr(p, '['); p++;
    for (;;) { skipws(&p); if (*p == ']') break; argv[argc++] = jstr(&p); } argv[argc] = NULL;
    p = strstr(j, "\"env\""); p = strchr(p, '{'); p++;
    for (;;) { skipws(&p); if (*p == '}') break; char *k = jstr(&p); skipws(&p); char *v = jstr(&p);
        char *kv = malloc(strlen(k) + strlen(v) + 2); sprintf(kv, "%s=%s", k, v); envp[envc++] = kv; } envp[envc] = NULL;
    p = strstr(j, "\"cwd\""); p = strchr(p + 5, '"'); cwd = jstr(&p);
    snprintf(path, sizeof path, "%s/output.log", dir);
    int log = open(path, O_WRONLY|O_CREAT|O_APPEND|O_NOFOLLOW|O_CLOEXEC, 0600);
    double started = now();
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    char rtmp[4096]; snprintf(rtmp, sizeof rtmp, "%s/.exit.json.r%d", dir, getpid());
    int rfd = open(rtmp, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644); posix_fallocate(rfd, 0, 65536);
    int pp[2]; pipe2(pp, O_CLOEXEC);
    pid_t c = fork();
    if (c == 0) {
        setpgid(0, 0); int nul = open("/dev/null", O_RDWR); dup2(nul, 0); dup2(pp[1], 1); dup2(pp[1], 2);
        if (chdir(cwd)) _exit(127);
        execve(argv[0], argv, envp); _exit(127);
    }
    close(pp[1]);
    char buf[65536];
    snprintf(buf, sizeof buf, "{\"pid\": %d, \"pgid\": %d, \"started_at\": %.6f, \"shim_pid\": %d}", c, c, started, getpid());
    write_atomic(dir, "child.json", buf, 0, -1, NULL);
    ssize_t n; while ((n = read(pp[0], buf, sizeof buf)) > 0) if (write(log, buf, n) < 0) {}
    int st, st2; waitpid(c, &st, 0); double finished = now();
    double nap = 0.00025, t0 = now();
    for (;;) { pid_t w = waitpid(-1, &st2, WNOHANG); if (w < 0) break; if (w > 0) continue; if (now() - t0 > 10) break;
        struct timespec ts = {0, (long)(nap * 1e9)}; nanosleep(&ts, NULL); nap = nap * 2 > 0.01 ? 0.01 : nap * 2; }
    struct rusage ru; getrusage(RUSAGE_CHILDREN, &ru);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    snprintf(buf, sizeof buf, "{\"exit_code\": %d, \"signal\": null, \"raw_status\": %d, \"started_at\": %.6f, \"finished_at\": %.6f, \"max_rss_kb\": %ld, \"cpu_seconds\": %.6f}",
             rc, rc, started, finished, ru.ru_maxrss, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    write_atomic(dir, "exit.json", buf, 1, rfd, rtmp);
    close(log);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--serve")) return run(argv[1]);
    signal(SIGCHLD, SIG_IGN); signal(SIGHUP, SIG_IGN);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGCHLD, SIG_DFL); setsid(); int nul = open("/dev/null", O_RDWR); dup2(nul, 0); dup2(nul, 1); dup2(nul, 2);
            _exit(run(line));
        }
        printf("%d\n", pid); fflush(stdout);
    }
    return 0;
}
