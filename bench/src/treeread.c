/* treeread DIR...: read every regular file below each DIR completely (64 KiB reads), walking
 * directories with opendir/readdir (d_type; lstat only when d_type is unknown), never following
 * symlinks. Used identically for every setup by bench/run.sh (workloads 2 and 7). Prints
 * "files bytes" on stderr with -v. Exit 1 on any error. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char buf[1 << 16];
static unsigned long long nfiles, nbytes;

static int walk(int fd0, const char *path) {
    DIR *d = fdopendir(fd0);
    if (!d) { perror(path); close(fd0); return -1; }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        unsigned char t = e->d_type;
        if (t == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(fd0, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) { perror(e->d_name); rc = -1; continue; }
            t = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (t == DT_DIR) {
            int fd = openat(fd0, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) { perror(e->d_name); rc = -1; continue; }
            if (walk(fd, e->d_name) < 0) rc = -1;
        } else if (t == DT_REG) {
            int fd = openat(fd0, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) { perror(e->d_name); rc = -1; continue; }
            ssize_t n;
            while ((n = read(fd, buf, sizeof buf)) > 0) nbytes += (unsigned long long)n;
            if (n < 0) { perror(e->d_name); rc = -1; }
            close(fd);
            nfiles++;
        }
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv) {
    int verbose = 0, i = 1, rc = 0;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) { verbose = 1; i++; }
    if (i >= argc) { fprintf(stderr, "usage: treeread [-v] DIR...\n"); return 2; }
    for (; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) { perror(argv[i]); rc = 1; continue; }
        if (walk(fd, argv[i]) < 0) rc = 1;
    }
    if (verbose) fprintf(stderr, "%llu %llu\n", nfiles, nbytes);
    return rc;
}
