#!/usr/bin/env bash
# Bring up a throwaway one-node SLURM cluster on 127.0.0.1 (as root, Debian/Ubuntu).
#
# Usage: tests/cluster/slurm_up.sh [--cpus N] [--mem-mb M]
#
#   --cpus N     CPUs the node advertises (default: what `slurmd -C` reports)
#   --mem-mb M   RealMemory in MB the node advertises (default: `slurmd -C`)
#
# Advertising more than the hardware has turns on `SlurmdParameters=config_overrides`,
# so a workflow profile written for a real cluster (8 threads, 32 GB) can be
# submitted unchanged; the test jobs are tiny, so the overcommit is harmless.
#
# Environment:
#   BRAINLENS_SLURM_STATE  state dir for PID files, logs and spool (default /tmp/brainlens-slurm)
#
# The node has one fake GPU (GRES gpu:1 on /dev/null), so `--gpus=1` jobs schedule.
# Every daemon started here is recorded by PID file in the state dir;
# tests/cluster/slurm_down.sh stops exactly those.
# Prints `SLURM_UP_SECONDS=<s>` on success.
set -euo pipefail

STATE="${BRAINLENS_SLURM_STATE:-/tmp/brainlens-slurm}"
NODE="blnode1"
PARTITION="debug"
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by brainlens tests/cluster/slurm_up.sh"
CPUS=""
MEM_MB=""

die() { echo "slurm_up: ERROR: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpus) CPUS="$2"; shift 2 ;;
        --mem-mb) MEM_MB="$2"; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done

start_s=$(date +%s.%N)

[[ "$(uname -s)" == Linux ]] || die "needs Linux"
[[ "$(id -u)" == 0 ]] || die "needs root (installs packages, writes /etc/slurm, runs daemons)"

# 1. Packages, only if missing.
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [[ ${#need[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get to install them"
    echo "slurm_up: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# 2. Refuse to touch a SLURM that is not ours.
if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster config"
fi
for daemon in slurmctld slurmd; do
    if pgrep -x "$daemon" >/dev/null; then
        pidfile="$STATE/$daemon.pid"
        if [[ -f "$pidfile" ]] && pgrep -x "$daemon" | grep -qx "$(cat "$pidfile")"; then
            die "$daemon from an earlier run is still up (PID file $pidfile); run tests/cluster/slurm_down.sh first"
        fi
        die "a $daemon not started by this script is running; refusing to start a second one"
    fi
done

# 3. Node size.
read -r hw_cpus hw_mem < <(slurmd -C | awk '
    /^NodeName=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["CPUs"], v["RealMemory"] }')
[[ -n "$hw_cpus" && -n "$hw_mem" ]] || die "could not parse 'slurmd -C'"
CPUS="${CPUS:-$hw_cpus}"
MEM_MB="${MEM_MB:-$hw_mem}"
overrides=""
if (( CPUS > hw_cpus || MEM_MB > hw_mem )); then
    overrides="SlurmdParameters=config_overrides"
fi
def_mem=$(( MEM_MB / CPUS / 4 ))
(( def_mem >= 100 )) || def_mem=100

# 4. Config.
rm -rf "$STATE"
mkdir -p "$STATE/ctld" "$STATE/spool"
mkdir -p /etc/slurm
cat >"$CONF" <<EOF
$MARKER
# Throwaway one-node test cluster; state, logs and PID files under $STATE.
ClusterName=brainlenstest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=$def_mem
MinJobAge=300
ReturnToService=2
$overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$GRES_CONF" <<EOF
$MARKER
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF

# 5. munged (reused if already running, then not ours to stop).
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "slurm_up: reusing the running munged"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [[ -f /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing (reinstall munge)"
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/munged.pid"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer"
fi

# 6. slurmctld + slurmd (they write their PID files into $STATE).
slurmctld -c || die "slurmctld failed to start; see $STATE/slurmctld.log"
slurmd -N "$NODE" || die "slurmd failed to start; see $STATE/slurmd.log"

# 7. Wait until the node is idle.
state=""
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null || true)
    [[ "$state" == idle ]] && break
    sleep 0.5
done
if [[ "$state" != idle ]]; then
    echo "--- slurmctld.log" >&2; tail -n 20 "$STATE/slurmctld.log" >&2 || true
    echo "--- slurmd.log" >&2; tail -n 20 "$STATE/slurmd.log" >&2 || true
    die "node $NODE not idle after 60 s (state: '${state:-none}'); run tests/cluster/slurm_down.sh"
fi

end_s=$(date +%s.%N)
echo "slurm_up: node $NODE idle (CPUs=$CPUS RealMemory=$MEM_MB gpu:1) in partition $PARTITION"
awk -v a="$start_s" -v b="$end_s" 'BEGIN { printf "SLURM_UP_SECONDS=%.1f\n", b - a }'
