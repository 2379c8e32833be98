#!/usr/bin/env python3
"""Runs a command and reports the CPU time of each of its threads.

    thread_cpu.py OUT.json -- COMMAND [ARGS...]

Polls /proc/PID/task/*/stat every 10 ms while COMMAND runs and keeps, per thread, the last user+sys
time seen; at the end the process's own total comes from wait4's rusage, so what the polling missed
(a thread's last 10 ms before it ended) shows as `unseen` instead of vanishing. It also finds the
PostgreSQL backends serving COMMAND's TCP connections (a backend's title names its client's
address and port) and keeps their CPU the same way, so the server's share is this command's alone
even while other clients use the server. Writes JSON: {"exit": code, "total": s, "threads": [{"tid",
"name", "cpu"}...] (busiest first), "unseen": s, "backends": s, "backend_count": n}.
The exit status is COMMAND's. The benchmark reads it to say how much of the tool's CPU one thread
carries: the thread that drives the renders bounds how many database cores one process can keep busy.
"""
import json
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def sample(pid, seen):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime and stime are the 14th and 15th fields of stat(5); fields[0] is the 3rd.
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        seen[int(tid)] = (name, cpu)


def local_ports(pid):
    """The local TCP ports of PID's sockets."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def backends_of(ports, known):
    """PostgreSQL backends (not yet in `known`) whose client is one of `ports`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
        except OSError:
            continue
        if not title.startswith("postgres:"):
            continue
        for port in ports:
            if f"({port})" in title:
                found[int(entry)] = port
    return found


def process_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out, command = sys.argv[1], sys.argv[3:]
    child = subprocess.Popen(command)
    seen = {}
    # A new connection's backend may not have set its title yet: its port is looked for again
    # for a second, then given up (a socket to something other than PostgreSQL).
    ports, unmatched, backends = set(), {}, {}
    while True:
        sample(child.pid, seen)
        now = time.monotonic()
        for port in local_ports(child.pid) - ports:
            ports.add(port)
            unmatched[port] = now + 1.0
        if unmatched:
            found = backends_of(set(unmatched), backends)
            backends.update({pid: 0.0 for pid in found})
            for port in set(found.values()):
                del unmatched[port]
            unmatched = {port: until for port, until in unmatched.items() if until > now}
        for backend in backends:
            cpu = process_cpu(backend)
            if cpu is not None:
                backends[backend] = cpu
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    total = usage.ru_utime + usage.ru_stime
    threads = sorted(
        ({"tid": tid, "name": name, "cpu": cpu} for tid, (name, cpu) in seen.items()),
        key=lambda t: -t["cpu"],
    )
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump(
            {
                "exit": code,
                "total": total,
                "threads": threads,
                "unseen": max(0.0, total - sum(t["cpu"] for t in threads)),
                "backends": sum(backends.values()),
                "backend_count": len(backends),
            },
            f,
        )
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
