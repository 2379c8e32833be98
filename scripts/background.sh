# A test server started in the background on a free loopback port, shared by the scripts that
# start one (Azurite, fake-gcs-server, moto); source it, do not run it.
#
#   . scripts/background.sh
#   port=$(free_port)
#   setsid SERVER --port "$port" >"$logfile" 2>&1 </dev/null &
#   await_port NAME $! "$port" "$logfile"    # prints http://127.0.0.1:PORT, then the PID
#
# The caller defines log() and die() (one line on stderr each) before sourcing this file.

# A TCP port nothing listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (30 s at most) until process PID answers on PORT, then prints its URL and PID; dies with
# its log if it exits first.
await_port() {
    local name=$1 pid=$2 port=$3 logfile=$4
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "$name $pid on http://127.0.0.1:$port (log $logfile)"
            printf 'http://127.0.0.1:%s\n%s\n' "$port" "$pid"
            return
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited: $(cat "$logfile")"
        sleep 0.1
    done
    die "$name does not answer on port $port"
}
