#!/usr/bin/env bash
# Stop the daemons tests/cluster/slurm_up.sh started, by their PID files only.
#
# Environment:
#   BRAINLENS_SLURM_STATE  state dir used by slurm_up.sh (default /tmp/brainlens-slurm)
#
# Cancels still-queued jobs first, then stops slurmd, slurmctld and (only if
# slurm_up.sh started it) munged. Safe to run twice. Exits non-zero if a
# daemon survives SIGKILL.
set -uo pipefail

STATE="${BRAINLENS_SLURM_STATE:-/tmp/brainlens-slurm}"
rc=0

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

stop_pidfile() {
    local name="$1" pidfile="$2" pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            echo "slurm_down: $name ($pid) ignored SIGTERM, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        if alive "$pid"; then
            echo "slurm_down: ERROR: $name ($pid) still running" >&2
            rc=1
            return
        fi
        echo "slurm_down: stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

if [[ -f "$STATE/slurmctld.pid" ]] && alive "$(tr -dc '0-9' <"$STATE/slurmctld.pid")"; then
    scancel --quiet --partition=debug 2>/dev/null || true
fi
stop_pidfile slurmd "$STATE/slurmd.pid"
stop_pidfile slurmctld "$STATE/slurmctld.pid"
stop_pidfile munged "$STATE/munged.pid"
exit "$rc"
