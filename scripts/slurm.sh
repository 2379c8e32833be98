#!/usr/bin/env bash
# A real batch engine for the shard tests: Debian's SLURM (slurm-wlm) as a one-node cluster on this
# machine, a controller (slurmctld) and a node daemon (slurmd) on free loopback ports, authenticated
# by MUNGE as SLURM requires, with its state, spool and logs in a folder of its own.
#
#   scripts/slurm.sh install          # apt-get install slurm-wlm (and munge), if missing
#   conf=$(scripts/slurm.sh start DIR) # the cluster, configured and logging under DIR; prints the
#                                      # config file to give sbatch and squeue as SLURM_CONF
#   scripts/slurm.sh stop DIR          # stops both daemons (munged stays: other users may need it)
#
# The node is named `oartest` whatever the host is called, with the machine's cores. Process
# tracking is SLURM's plain Linux one (no cgroups, which a container may not delegate), and there
# is no accounting daemon: a test reads its tasks' own output files. munged is started once per
# machine with a key made for it, when none runs. Job credentials live 10 s (`cred_expire`, 120 by
# default): SLURM holds a requeued job back that long and a second more, so slurmd never takes its
# new start for the start it revoked, and the requeue tests wait 11 s, not 2 minutes.
#
# Environment:
#   SLURM_WAIT_SECS   how long `start` waits for the node to be idle (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'slurm: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

readonly WAIT_SECS=${SLURM_WAIT_SECS:-60}
PATH=$PATH:/usr/sbin

install() {
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
        apt_install slurm-wlm munge
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

munge_up() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
    munge_up && return
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        (umask 077 && head -c 1024 /dev/urandom >/etc/munge/munge.key)
    fi
    chmod 400 /etc/munge/munge.key
    # As root, and with the folders above root's: --force accepts that.
    munged --force >/dev/null 2>&1 || die "munged did not start"
    local waited=0
    until munge_up; do
        ((waited < 50)) || die "munged does not answer"
        sleep 0.1
        waited=$((waited + 1))
    done
}

start() {
    local dir=$1
    [[ -n $dir ]] || die "start needs a folder"
    install
    start_munge
    command -v python3 >/dev/null 2>&1 || apt_install python3
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    dir=$(cd "$dir" && pwd)
    local cpus ctld_port node_port host
    cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
    # slurmctld runs only on the host its config names, by the name the system gives it.
    host=$(uname -n)
    ctld_port=$(free_port)
    node_port=$(free_port)
    cat >"$dir/slurm.conf" <<CONF
ClusterName=oartiles
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$node_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
NodeName=oartest NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
    # slurmd 22.05 initialises its cgroup plugin even when nothing uses it (it cannot be disabled
    # before 23.02) and fails where no cgroup file system is mounted, as in a chroot. There it gets
    # the least it accepts: a cgroup v1 layout holding only the named `systemd` hierarchy (cgroup2
    # would make a hybrid, which it refuses where the kernel's controllers are on v1). A machine or
    # container that has cgroups mounted is left as it is.
    if ! awk '$2 == "/sys/fs/cgroup" { found = 1 } END { exit !found }' /proc/self/mounts; then
        { mount -t tmpfs -o mode=755,size=1m cgroup /sys/fs/cgroup \
            && mkdir -p /sys/fs/cgroup/systemd \
            && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; } \
            || die "slurmd needs a cgroup file system at /sys/fs/cgroup, and none could be mounted there"
    fi
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 \
        || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
    slurmd -f "$SLURM_CONF" -N oartest >"$dir/log/slurmd.out" 2>&1 \
        || die "slurmd did not start: $(tail -5 "$dir/log/slurmd.log" 2>/dev/null)"
    local waited=0
    until [[ $(sinfo -h -n oartest -o %T 2>/dev/null) == idle* ]]; do
        ((waited < WAIT_SECS * 10)) || die "the node is not idle after $WAIT_SECS s: $(sinfo 2>&1 | tail -2)"
        sleep 0.1
        waited=$((waited + 1))
    done
    log "a one-node cluster on 127.0.0.1:$ctld_port ($cpus CPUs); SLURM_CONF=$SLURM_CONF"
    echo "$SLURM_CONF"
}

# Waits for the daemons to exit: slurmctld saves its state as it goes, and a caller removing DIR
# right after would race it (`rm: Directory not empty`).
stop() {
    local dir=$1 pid pids=()
    for daemon in slurmd slurmctld; do
        pid=$(cat "$dir/$daemon.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill "$pid" 2>/dev/null; then pids+=("$pid"); fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

case ${1:-} in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:?stop needs the folder given to start}" ;;
    *) die "usage: scripts/slurm.sh install | start DIR | stop DIR" ;;
esac
