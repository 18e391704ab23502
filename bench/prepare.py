#!/usr/bin/env python3
"""Create the benchmark data once, below REAL (called by bench/run.sh).

REAL/big.bin                1 GiB x scale of random bytes            (workload 1)
REAL/tree/dNNN/fNNNN        200 dirs x (100 x scale) files of 4 KiB  (workloads 2, 3, 6, 7)
REAL/repo/                  a copy of tree/, committed to git        (workload 4)
REAL/wide/eNNNNNNN          100,000 x scale empty files, one dir     (workload 5)
REAL/mem/dNNN/fNNNNN        200 dirs x (1000 x scale) empty files    (daemon memory)

Each part is built in a temporary directory and renamed into place when complete, so an
interrupted preparation is redone, never half-used. A part that exists is kept.
"""
import os
import shutil
import subprocess
import sys
import time

FILE_SIZE = 4096
NDIRS = 200


def log(msg):
    print(f"bench: prepare: {msg}", file=sys.stderr, flush=True)


def build(final, make):
    if os.path.exists(final):
        return
    tmp = final + ".partial"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp) if os.path.isdir(tmp) else os.unlink(tmp)
    t = time.monotonic()
    make(tmp)
    os.rename(tmp, final)
    log(f"{os.path.basename(final)} ready ({time.monotonic() - t:.1f} s)")


def make_big(path, size):
    chunk = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def make_tree(path, per_dir, size):
    os.mkdir(path)
    for d in range(NDIRS):
        dp = os.path.join(path, f"d{d:03d}")
        os.mkdir(dp)
        for i in range(per_dir):
            with open(os.path.join(dp, f"f{i:04d}"), "wb") as f:
                if size:
                    f.write(os.urandom(size))


def make_empty_tree(path, per_dir):
    os.mkdir(path)
    for d in range(NDIRS):
        dp = os.path.join(path, f"d{d:03d}")
        os.mkdir(dp)
        for i in range(per_dir):
            os.close(os.open(os.path.join(dp, f"f{i:05d}"), os.O_CREAT | os.O_WRONLY, 0o644))


def make_wide(path, n):
    os.mkdir(path)
    for i in range(n):
        os.close(os.open(os.path.join(path, f"e{i:07d}"), os.O_CREAT | os.O_WRONLY, 0o644))


def make_repo(path, tree):
    shutil.copytree(tree, path)
    # Files must be older than the index by more than the timestamp granularity, so that git
    # finds no "racily clean" entries and `git status` never has to re-read file contents.
    time.sleep(1.1)
    # No automatic gc: the commit of 20,000 files would start one in the background, and the
    # explicit gc below then fails with "gc is already running".
    git = ["git", "-C", path, "-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "init.defaultBranch=main", "-c", "safe.directory=*", "-c", "gc.auto=0",
           "-c", "maintenance.auto=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark tree"],
                 ["gc", "-q"], ["status", "--porcelain"]):
        subprocess.run(git + args, check=True, stdout=subprocess.DEVNULL)


def main():
    real, scale = sys.argv[1], float(sys.argv[2])
    os.makedirs(real, exist_ok=True)
    per_tree = max(1, round(100 * scale))
    build(os.path.join(real, "big.bin"), lambda p: make_big(p, max(1, round(1024 * scale)) << 20))
    build(os.path.join(real, "tree"), lambda p: make_tree(p, per_tree, FILE_SIZE))
    build(os.path.join(real, "repo"), lambda p: make_repo(p, os.path.join(real, "tree")))
    build(os.path.join(real, "wide"), lambda p: make_wide(p, max(1, round(100000 * scale))))
    build(os.path.join(real, "mem"), lambda p: make_empty_tree(p, max(1, round(1000 * scale))))


if __name__ == "__main__":
    main()
