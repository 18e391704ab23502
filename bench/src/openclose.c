/* openclose DIR N ROUNDS: collect the first N regular files below DIR (readdir order, walking
 * subdirectories in order; not timed), then time ROUNDS rounds of open(path, O_RDONLY) + close
 * over them. Prints "SECONDS OPS_PER_SECOND" on stdout. Used identically for every setup by
 * bench/run.sh (workload 6). Exit 1 on any error. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char **paths;
static long npaths, want;

static void collect(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { perror(dir); exit(1); }
    struct dirent *e;
    char **subdirs = NULL;
    long nsub = 0;
    while ((e = readdir(d)) != NULL && npaths < want) {
        if (e->d_name[0] == '.') continue;
        char *p;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) exit(1);
        if (e->d_type == DT_REG) paths[npaths++] = p;
        else if (e->d_type == DT_DIR) { subdirs = realloc(subdirs, (nsub + 1) * sizeof *subdirs); subdirs[nsub++] = p; }
        else free(p);
    }
    closedir(d);
    for (long i = 0; i < nsub; i++) { if (npaths < want) collect(subdirs[i]); free(subdirs[i]); }
    free(subdirs);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: openclose DIR N ROUNDS\n"); return 2; }
    want = atol(argv[2]);
    long rounds = atol(argv[3]);
    paths = calloc((size_t)want, sizeof *paths);
    collect(argv[1]);
    if (npaths < want) { fprintf(stderr, "openclose: only %ld files below %s\n", npaths, argv[1]); return 1; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long r = 0; r < rounds; r++)
        for (long i = 0; i < npaths; i++) {
            int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
            if (fd < 0) { perror(paths[i]); return 1; }
            close(fd);
        }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%.6f %.1f\n", s, (double)(npaths * rounds) / s);
    return 0;
}
