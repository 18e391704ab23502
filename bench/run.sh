#!/usr/bin/env bash
# relocfs benchmark: relocfs against native access, a bind mount, bindfs and mergerfs, all
# serving the same real directory, measured in one run and interleaved. See bench/README.md.
#
# Usage (as root):  bench/run.sh [--quick] [--pinned|--unpinned] [--reps N] [--scale F]
#                                [--only W,W,...] [--no-build | --rev REV] [--out FILE]
#                                [--transport dev|io_uring|auto]
#
#   (default)     unpinned and pinned variants, 5 repetitions, full sizes; writes BENCHMARKS.md
#   --quick       3 repetitions, unpinned only (add --pinned for the pinned one only)
#   --pinned      only the pinned variant (client: taskset -c 0; FUSE daemons: taskset -a -p -c 0)
#   --unpinned    only the unpinned variant
#   --reps N      repetitions per workload and setup (median reported)
#   --scale F     multiply every data size by F (e.g. 0.05 while developing); with F != 1 the
#                 report goes to $BENCH_DIR/BENCHMARKS-scale-F.md, not to the repository
#   --only LIST   run only these workloads: w1cold,w1warm,w2,w3mount,w3warm,w4,w5,w6,w7,mem
#   --no-build    use target/release/relocfs as it is (default: cargo build --release first)
#   --rev REV     benchmark git revision REV (e.g. HEAD) instead of the working tree: exported
#                 with `git archive` to $BENCH_DIR/src/COMMIT, built there (own target dir),
#                 so uncommitted edits of others are left out and the repository is untouched
#   --out FILE    where to write the report (default: BENCHMARKS.md at the repository root)
#   --transport T mount relocfs with -o transport=T (default: none, i.e. the config default,
#                 auto); io_uring and auto turn /sys/module/fuse/parameters/enable_uring on for
#                 the run and put the old value back at exit
#
# Environment: BENCH_DIR (default /var/tmp/relocfs-bench: data, mountpoints, helpers; must be
# on a local disk with >= 3 GiB free), BENCH_TIMEOUT (seconds for the whole run; default 2700,
# 900 with --quick), BENCH_CMD_TIMEOUT (seconds for one timed command; default 300).
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC=$REPO/bench
BENCH_DIR=${BENCH_DIR:-/var/tmp/relocfs-bench}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-300}
COMMAND_LINE="bench/run.sh${*:+ $*}"

QUICK=0 REPS="" SCALE=1 ONLY="" BUILD=1 OUT="" VARIANTS="" GITREV="" TRANSPORT=""
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --pinned) VARIANTS=pinned ;;
        --unpinned) VARIANTS=unpinned ;;
        --reps) REPS=$2; shift ;;
        --scale) SCALE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --no-build) BUILD=0 ;;
        --rev) GITREV=$2; shift ;;
        --out) OUT=$2; shift ;;
        --transport) TRANSPORT=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -z $TRANSPORT || $TRANSPORT =~ ^(dev|io_uring|auto)$ ]] ||
    { echo "bench: --transport wants dev, io_uring or auto" >&2; exit 2; }
[[ -n $REPS ]] || { ((QUICK)) && REPS=3 || REPS=5; }
[[ -n $VARIANTS ]] || { ((QUICK)) && VARIANTS=unpinned || VARIANTS="unpinned pinned"; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "bench: --reps wants a positive integer" >&2; exit 2; }
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "bench: --scale wants a positive number" >&2; exit 2; }
if [[ -z $OUT ]]; then
    if [[ $SCALE == 1 || $SCALE == 1.0 ]]; then OUT=$REPO/BENCHMARKS.md; else OUT=$BENCH_DIR/BENCHMARKS-scale-$SCALE.md; fi
fi
LIMIT=${BENCH_TIMEOUT:-$( ((QUICK)) && echo 900 || echo 2700)}

ALL_WORKLOADS=(w1cold w1warm w2 w3mount w3warm w4 w5 w6 w7 mem)
want() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (mounts, drop_caches, taskset of daemons)"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"

# --- peers -------------------------------------------------------------------------------
need_pkgs=()
command -v bindfs >/dev/null || need_pkgs+=(bindfs)
command -v mergerfs >/dev/null || need_pkgs+=(mergerfs)
command -v fusermount3 >/dev/null || need_pkgs+=(fuse3)
command -v git >/dev/null || need_pkgs+=(git)
command -v gcc >/dev/null || need_pkgs+=(gcc libc6-dev)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v pgrep >/dev/null || need_pkgs+=(procps)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null; } ||
        die "could not install ${need_pkgs[*]}"
fi

# --- state and cleanup -------------------------------------------------------------------
SETUPS=(native bind bindfs mergerfs relocfs-audit relocfs-noaudit)
DATA=$BENCH_DIR/data-s$SCALE
REAL=$DATA/real
MNTROOT=$BENCH_DIR/mnt
RUN=$BENCH_DIR/run
AUDIT_LOG=/tmp/relocfs-bench-audit.jsonl
declare -A DPID=()
WATCHDOG=""
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_OLD=""
PINNED=0
VARIANT=""

mnt_of() { if [[ $1 == native ]]; then echo "$REAL"; else echo "$MNTROOT/$1"; fi; }

# The FUSE daemon serving mountpoint $1 (daemonised: found by its command line).
daemon_pid() {
    pgrep -f -- "^[^ ]*(bindfs|mergerfs|relocfs) .*$1( |\$)" | head -n1 || true
}

unmount_path() {
    local m=$1 pid=${2:-}
    if mountpoint -q "$m"; then
        umount "$m" 2>/dev/null || { sleep 0.5; umount "$m" 2>/dev/null; } || umount -l "$m" || true
    fi
    if [[ -n $pid ]]; then
        local i
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; sleep 1; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    set +e
    [[ -n $WATCHDOG ]] && kill "$WATCHDOG" 2>/dev/null
    local s m
    for s in "${SETUPS[@]}"; do
        [[ $s == native ]] && continue
        m=$MNTROOT/$s
        unmount_path "$m" "${DPID[$s]:-}"
        mountpoint -q "$m" && { log "WARNING: $m still mounted, detaching"; umount -l "$m"; }
    done
    [[ -n $URING_OLD ]] && { [[ $URING_OLD == Y ]] && echo 1 || echo 0; } >"$URING_PARAM"
    exit "$rc"
}
trap cleanup EXIT
set -E
trap 'log "failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (time limit ${LIMIT}s or signal)"; exit 143' TERM
# Watchdog: TERM to this script after $LIMIT seconds (the trap then unmounts everything); its
# sleep is killed with it, so that nothing outlives the run.
(
    # shellcheck disable=SC2217  # no inherited stdout: a sleeping watchdog must not hold pipes open
    sleep "$LIMIT" </dev/null >/dev/null 2>&1 &
    sp=$!
    trap 'kill $sp 2>/dev/null; exit 0' TERM
    wait $sp && { log "time limit of ${LIMIT}s reached, stopping"; kill -TERM $$; }
) &
WATCHDOG=$!

mkdir -p "$BENCH_DIR" "$MNTROOT" "$RUN"
# Leftovers of an earlier, killed run.
for s in "${SETUPS[@]}"; do
    [[ $s == native ]] && continue
    mkdir -p "$MNTROOT/$s"
    if mountpoint -q "$MNTROOT/$s"; then
        log "unmounting a leftover mount at $MNTROOT/$s"
        unmount_path "$MNTROOT/$s" "$(daemon_pid "$MNTROOT/$s")"
    fi
done

# --- build -------------------------------------------------------------------------------
T_START=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n $GITREV ]]; then
    commit=$(git -C "$REPO" rev-parse --verify --quiet "$GITREV^{commit}") || die "--rev $GITREV: no such commit"
    src=$BENCH_DIR/src/$commit
    if [[ ! -d $src ]]; then
        rm -rf "$src.partial" && mkdir -p "$src.partial"
        git -C "$REPO" archive "$commit" | tar -x -C "$src.partial" && mv "$src.partial" "$src"
    fi
    log "cargo build --release (commit $commit, in $src)"
    (cd "$src" && CARGO_TARGET_DIR=$BENCH_DIR/target cargo build --release --quiet) || die "cargo build --release of $commit failed"
    BUILT=$BENCH_DIR/target/release/relocfs
    REV="$(git -C "$REPO" rev-parse --short=12 "$commit") (--rev $GITREV: committed tree only, built from git archive)"
else
    if ((BUILD)); then
        log "cargo build --release (in $REPO)"
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed (another change in progress? try --rev HEAD)"
    fi
    BUILT=$REPO/target/release/relocfs
    REV=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock build.rs 2>/dev/null | wc -l)
    if ((DIRTY)); then
        REV="$REV + uncommitted changes in $DIRTY file(s) under src/, Cargo.* (diff sha256 $(git -C "$REPO" diff HEAD -- src Cargo.toml Cargo.lock | sha256sum | cut -c1-12))"
    fi
fi
# The [fuse] defaults of the benchmarked source, for the report (the configs leave them unset).
FUSE_DEFAULTS=$(sed -n '/^\[fuse\]/,/^\[[a-z]/{/^[a-z_]* *=/p}' "${src:-$REPO}/config.example.toml" 2>/dev/null | paste -sd';' | sed 's/;/; /g')
[[ -x $BUILT ]] || die "no $BUILT (build it or drop --no-build)"
# A private copy: other people rebuilding target/ during the run must not change the binary
# between remounts.
mkdir -p "$RUN/bin"
cp "$BUILT" "$RUN/bin/relocfs.new" && mv -f "$RUN/bin/relocfs.new" "$RUN/bin/relocfs"
RELOCFS=$RUN/bin/relocfs
gcc -O2 -Wall -o "$RUN/bin/treeread" "$BENCH_SRC/src/treeread.c"
gcc -O2 -Wall -o "$RUN/bin/openclose" "$BENCH_SRC/src/openclose.c"
TREEREAD=$RUN/bin/treeread
OPENCLOSE=$RUN/bin/openclose

# --- data --------------------------------------------------------------------------------
avail_kb=$(df -Pk "$BENCH_DIR" | awk 'NR==2{print $4}')
if [[ ! -d $REAL/mem ]]; then
    need_kb=$(awk -v s="$SCALE" 'BEGIN{printf "%d", (1024*s + 200 + 400) * 1024 + 1048576}')
    ((avail_kb > need_kb)) || die "$BENCH_DIR: $((avail_kb / 1024)) MiB free, need $((need_kb / 1024)) MiB"
fi
log "data in $REAL ($(df -Ph "$BENCH_DIR" | awk 'NR==2{print $1", "$4" free"}'); prepared once, kept)"
python3 "$BENCH_SRC/prepare.py" "$REAL" "$SCALE"
HALF_A=() HALF_B=()
for d in "$REAL"/tree/d*; do
    n=${d##*/d}
    if ((10#$n < 100)); then HALF_A+=("d$n"); else HALF_B+=("d$n"); fi
done
TREE_FILES=$(find "$REAL/tree" -type f | wc -l)
MEM_ENTRIES=$(find "$REAL/mem" | wc -l)
git -C "$REAL/repo" -c safe.directory='*' status --porcelain >/dev/null   # index refreshed, natively

# --- setups ------------------------------------------------------------------------------
BINDFS_OPTS="-o ro,multithreaded"
MERGERFS_OPTS="-o ro,allow_other,use_ino,inodecalc=passthrough,cache.files=partial,dropcacheonclose=false,category.create=mfs,fsname=bench-mergerfs"
RELOCFS_OPTS="-o allow_other${TRANSPORT:+,transport=$TRANSPORT}"
if [[ $TRANSPORT == io_uring || $TRANSPORT == auto ]]; then
    [[ -e $URING_PARAM ]] || die "--transport $TRANSPORT: this kernel has no $URING_PARAM"
    URING_OLD=$(cat "$URING_PARAM")
    echo 1 >"$URING_PARAM"
fi
CONF_AUDIT=$RUN/relocfs-audit.toml
CONF_NOAUDIT=$RUN/relocfs-noaudit.toml
cat >"$CONF_NOAUDIT" <<EOF
[[map]]
from = "/"
to = "$REAL"
mode = "ro"
EOF
cat "$CONF_NOAUDIT" - >"$CONF_AUDIT" <<EOF

[audit]
log = "$AUDIT_LOG"
rate_limit = 0
EOF
rm -f "$AUDIT_LOG"
"$RELOCFS" check "$CONF_AUDIT" "$MNTROOT/relocfs-audit" >/dev/null || die "relocfs check refused $CONF_AUDIT"

declare -A HOW=(
    [native]="the real directory itself: $REAL"
    [bind]="mount --bind $REAL MNT; mount -o remount,bind,ro MNT"
    [bindfs]="bindfs $BINDFS_OPTS $REAL MNT"
    [mergerfs]="mergerfs $MERGERFS_OPTS $REAL MNT"
    [relocfs-audit]="relocfs CONFIG MNT $RELOCFS_OPTS; CONFIG: one rule from=\"/\" to=REAL mode=\"ro\", [audit] log=$AUDIT_LOG, [fuse] defaults (${FUSE_DEFAULTS:-see config.example.toml})"
    [relocfs-noaudit]="relocfs CONFIG MNT $RELOCFS_OPTS; CONFIG: the same without [audit]"
)

pin_daemon() {
    local pid=$1
    ((PINNED)) && [[ -n $pid ]] && { taskset -a -p -c 0 "$pid" >/dev/null || die "taskset -a -p -c 0 $pid failed"; }
    return 0
}

mount_setup() {
    local s=$1 m
    m=$(mnt_of "$s")
    case $s in
        native) return 0 ;;
        bind) mount --bind "$REAL" "$m" && mount -o remount,bind,ro "$m" ;;
        bindfs) bindfs $BINDFS_OPTS "$REAL" "$m" ;;
        mergerfs) mergerfs $MERGERFS_OPTS "$REAL" "$m" ;;
        relocfs-audit) "$RELOCFS" "$CONF_AUDIT" "$m" $RELOCFS_OPTS ;;
        relocfs-noaudit) "$RELOCFS" "$CONF_NOAUDIT" "$m" $RELOCFS_OPTS ;;
    esac || die "mounting $s failed"
    local i
    for ((i = 0; i < 100; i++)); do [[ -f $m/big.bin ]] && break; sleep 0.05; done
    [[ -f $m/big.bin && -d $m/tree/d000 ]] || die "$s at $m does not show the data"
    if [[ $s != bind ]]; then
        DPID[$s]=$(daemon_pid "$m")
        [[ -n ${DPID[$s]} ]] || die "no daemon found for $s at $m"
        pin_daemon "${DPID[$s]}"
    fi
}

umount_setup() {
    local s=$1
    [[ $s == native ]] && return 0
    unmount_path "$MNTROOT/$s" "${DPID[$s]:-}"
    DPID[$s]=""
}

mount_all() { local s; for s in "${SETUPS[@]}"; do mount_setup "$s"; done; }
umount_all() { local s; for s in "${SETUPS[@]}"; do umount_setup "$s"; done; }

# --- measuring ---------------------------------------------------------------------------
RESULTS=$RUN/results.tsv
MEMORY=$RUN/memory.tsv
: >"$RESULTS"
: >"$MEMORY"

# Runs the client command $@ (pinned to CPU 0 in the pinned variant), bounded in time.
client() {
    if ((PINNED)); then
        timeout -k 5 "$CMD_TIMEOUT" taskset -c 0 "$@"
    else
        timeout -k 5 "$CMD_TIMEOUT" "$@"
    fi
}

drop_caches() { # $1: 3 = page cache + dentries + inodes (after sync), 2 = dentries + inodes
    [[ $1 == 3 ]] && sync
    echo "$1" >/proc/sys/vm/drop_caches
}

# The command of workload $1 on mount path $2; its stdout is discarded.
run_workload() {
    local w=$1 m=$2
    case $w in
        w1cold | w1warm) client dd if="$m/big.bin" of=/dev/null bs=1M status=none ;;
        w2) client "$TREEREAD" "$m/tree" ;;
        w3mount | w3warm) client find "$m/tree" -printf '%s %T@\n' >/dev/null ;;
        w4) client git -c safe.directory='*' --no-optional-locks -C "$m/repo" status >/dev/null ;;
        w5) client ls -f "$m/wide" >/dev/null ;;
        w6) client "$OPENCLOSE" "$m/tree" "$((TREE_FILES < 1000 ? TREE_FILES : 1000))" 10 ;;
        w7) (cd "$m/tree" && {
                client "$TREEREAD" "${HALF_A[@]}" & a=$!
                client "$TREEREAD" "${HALF_B[@]}" & b=$!
                wait $a && wait $b
            }) ;;
    esac
}

# Times one run of workload $1 on setup $2 (repetition $3) and records it.
measure() {
    local w=$1 s=$2 rep=$3 m t0 t1 us extra="" out
    m=$(mnt_of "$s")
    case $w in
        w1cold) drop_caches 3 ;;
        w3mount)
            [[ $s != native ]] && { umount_setup "$s"; mount_setup "$s"; }
            drop_caches 2 ;;
        w1warm | w2 | w3warm | w4 | w5 | w6 | w7)
            # warm: an identical untimed run on the same setup immediately before
            run_workload "$w" "$m" >/dev/null || die "$w on $s failed (warm-up)" ;;
    esac
    t0=$EPOCHREALTIME
    out=$(run_workload "$w" "$m") || die "$w on $s failed"
    t1=$EPOCHREALTIME
    us=$((10#${t1/./} - 10#${t0/./}))
    if [[ $w == w6 ]]; then
        read -r sec ops <<<"$out"
        us=$(awk -v s="$sec" 'BEGIN{printf "%d", s*1e6}')
        extra=$ops
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$VARIANT" "$w" "$s" "$rep" "$(awk -v u="$us" 'BEGIN{printf "%.6f", u/1e6}')" "$extra" >>"$RESULTS"
    printf '  %-8s %-16s rep %d  %8.3f s %s\n' "$w" "$s" "$rep" "$(awk -v u="$us" 'BEGIN{print u/1e6}')" "${extra:+($extra ops/s)}" >&2
}

# Every repetition cycles through all setups, starting one setup later each time.
interleave() {
    local w=$1 rep i n=${#SETUPS[@]}
    for ((rep = 1; rep <= REPS; rep++)); do
        for ((i = 0; i < n; i++)); do
            measure "$w" "${SETUPS[$(((i + rep - 1) % n))]}" "$rep"
        done
    done
}

# Sanity: every setup shows the same tree (file count and bytes) as the real directory.
check_same() {
    local s m ref got
    ref=$("$TREEREAD" -v "$REAL/tree" 2>&1 >/dev/null)
    for s in "${SETUPS[@]}"; do
        m=$(mnt_of "$s")
        got=$("$TREEREAD" -v "$m/tree" 2>&1 >/dev/null) || die "reading $m/tree failed"
        [[ $got == "$ref" ]] || die "$s shows '$got' files/bytes in tree/, the real directory '$ref'"
    done
}

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# Daemon memory: RSS after mount, after a find walk of mem/ (every entry looked up), and after
# the kernel forgot those inodes (drop_caches 2, FORGETs to the daemon) and 5 s.
memory() {
    local s m pid r0 r1 r2 n which=(relocfs-audit relocfs-noaudit bindfs mergerfs)
    ((QUICK)) && which=(relocfs-audit relocfs-noaudit)
    for s in "${which[@]}"; do
        m=$(mnt_of "$s")
        umount_setup "$s"
        drop_caches 2
        mount_setup "$s"
        pid=${DPID[$s]}
        sleep 1
        r0=$(rss_kb "$pid")
        n=$(client find "$m/mem" -printf '%s %T@\n' | wc -l)
        r1=$(rss_kb "$pid")
        drop_caches 2
        sleep 5
        r2=$(rss_kb "$pid")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$VARIANT" "$s" "$n" "$r0" "$r1" "$r2" >>"$MEMORY"
        log "  memory   $s: RSS ${r0} kB at start, ${r1} kB after walking $n entries, ${r2} kB after forget"
    done
}

run_variant() {
    VARIANT=$1
    PINNED=0
    [[ $VARIANT == pinned ]] && PINNED=1
    log "=== variant $VARIANT: $REPS repetitions, setups ${SETUPS[*]}"
    mount_all
    check_same
    local w
    for w in "${ALL_WORKLOADS[@]}"; do
        want "$w" || continue
        log "--- $w"
        if [[ $w == mem ]]; then
            # Memory does not depend on pinning: measured in the first variant only.
            [[ $VARIANT == "${VARIANTS%% *}" ]] && memory
        else
            interleave "$w"
        fi
    done
    umount_all
    # The audit log of this variant (the daemons have exited and flushed it): its size, and
    # whether events were lost (then audit-on would have done less work than it should).
    if [[ -f $AUDIT_LOG ]]; then
        AUDIT_STATS+="$VARIANT: $(wc -l <"$AUDIT_LOG") lines, $(du -h "$AUDIT_LOG" | cut -f1); lost events: $(awk '/"op":"dropped"/ && match($0, /"count":[0-9]+/) {n += substr($0, RSTART + 8, RLENGTH - 8)} END {print n + 0}' "$AUDIT_LOG"). "
        rm -f "$AUDIT_LOG"
    fi
}
AUDIT_STATS=""

for v in $VARIANTS; do run_variant "$v"; done
T_END=$EPOCHREALTIME
ELAPSED=$(((10#${T_END/./} - 10#${T_START/./}) / 1000000))

# --- report ------------------------------------------------------------------------------
META=$RUN/meta.env
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command=$COMMAND_LINE"
    echo "elapsed=$ELAPSED"
    echo "load=$LOAD_START before the run (1/5/15-minute load averages; outside noise), $(cut -d' ' -f1-3 /proc/loadavg) at the end (includes the benchmark's own threads)"
    echo "audit=${AUDIT_STATS:-not run}"
    echo "reps=$REPS"
    echo "scale=$SCALE"
    echo "nproc=$(nproc)"
    echo "memory=$(awk '/^MemTotal:/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "relocfs=$("$RELOCFS" --version) (git $REV)"
    echo "bindfs=$(bindfs --version 2>&1 | head -n1)"
    echo "mergerfs=$(mergerfs --version 2>&1 | head -n1)"
    echo "fuse3=$(dpkg-query -W -f='${Version}' fuse3 2>/dev/null) ($(fusermount3 --version 2>&1 | head -n1))"
    echo "git=$(git --version)"
    echo "fs=$(findmnt -no SOURCE,FSTYPE -T "$REAL" | head -n1)"
    echo "real=$REAL"
    echo "tree_files=$TREE_FILES"
    echo "mem_entries=$MEM_ENTRIES"
    for s in "${SETUPS[@]}"; do echo "how_$s=${HOW[$s]}"; done
} >"$META"
python3 "$BENCH_SRC/report.py" "$RESULTS" "$MEMORY" "$META" "$OUT"
log "report written to $OUT (total ${ELAPSED}s)"
