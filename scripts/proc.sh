# Process helpers for the scripts that start servers (sourced, not run). Written for machines
# without procps: everything is read from /proc.

# Whether $1 is the PID of a live (not zombie) process named $2. Lock and pid files left by a
# killed server may name a PID that an unrelated process has since been given (common in
# containers, where PIDs restart low), so the name is checked too.
live_process() {
    local state
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Runs "$@" with only stdin, stdout and stderr open. A server it starts must not inherit the
# caller's other descriptors: a `$(script)` pipe would never see EOF, a lock would never be freed.
without_extra_fds() {
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        "$@"
    )
}
