#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (munged, slurmctld, slurmd), for trying the HPC
# recipes and for the tests (tests/workflows/test_slurm.py). Needs Debian's slurm-wlm and
# munge (scripts/setup.sh installs them as root) and root, as slurmd does.
#
#   scripts/slurm_cluster.sh start DIR    # config, state and logs under DIR; prints SLURM_CONF=...
#   export SLURM_CONF=DIR/slurm.conf      # then sbatch, squeue, sinfo talk to this cluster
#   scripts/slurm_cluster.sh stop DIR
#
# Everything lives under DIR: its own munge key and socket, its own ports (SLURM_PORT, default
# 16817 and the next one), so the machine's own munge or SLURM, if any, are left alone.
set -euo pipefail
action=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=${2:?usage: slurm_cluster.sh start|stop DIR}
port=${SLURM_PORT:-16817}

stop() {
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    sleep 1
    rm -f "$dir"/*.pid
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi
[ "$action" = start ] || { echo "slurm_cluster.sh: unknown action $action" >&2; exit 64; }
for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || {
        echo "slurm_cluster.sh: $tool not found (apt-get install slurm-wlm munge)" >&2
        exit 69
    }
done
[ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh: slurmd must run as root" >&2; exit 77; }

mkdir -p "$dir"/{munge,run,state,spool,logs}
dir=$(cd "$dir" && pwd)
chmod 0700 "$dir/munge"
chmod 0755 "$dir" "$dir/run"  # munged wants its socket reachable by every user
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)

# munge: a key of our own, a socket of our own
if [ ! -s "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
fi
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/run/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/logs/munged.log" \
    --seed-file="$dir/munge/munge.seed"

cat >"$dir/slurm.conf" <<EOF
ClusterName=bidsvem
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/run/munge.socket
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/logs/slurmctld.log
SlurmdLogFile=$dir/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

export SLURM_CONF=$dir/slurm.conf
slurmctld -c -f "$SLURM_CONF"   # -c: a clean start, no jobs carried over
slurmd -f "$SLURM_CONF"

# ready when the node takes jobs
for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm_cluster.sh: the node did not come up; see $dir/logs" >&2
tail -n 5 "$dir/logs/slurmctld.log" "$dir/logs/slurmd.log" >&2 2>/dev/null || true
stop
exit 69
