#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for hydra/launcher=submitit_slurm (and tests/test_slurm.py):
#
#   sudo scripts/slurm.sh start [DIR]    # installs slurm-wlm and munge with apt where missing, starts the cluster
#   export SLURM_CONF=DIR/slurm.conf     # (start prints it) so that sbatch, squeue, sinfo find this cluster
#   sudo scripts/slurm.sh stop [DIR]
#   sudo scripts/slurm.sh install        # only the packages (.ci/run)
#
# Everything lives in DIR (default /tmp/seqlab-slurm): slurm.conf, its own munge key and munged socket, state,
# spool, logs and pid files; /etc/slurm and a system munged are left alone. No accounting (no slurmdbd, so no
# sacct), no cgroups (proctrack/linuxproc, task/none): it runs in containers. Every command is idempotent: start
# reuses a cluster already running from DIR. Tested on Debian bookworm (slurm-wlm 22.05).
set -euo pipefail

command=${1:-start}
dir=$(mkdir -p "${2:-${TMPDIR:-/tmp}/seqlab-slurm}" && cd "${2:-${TMPDIR:-/tmp}/seqlab-slurm}" && pwd)
export SLURM_CONF=$dir/slurm.conf

stop_pid() {  # stop_pid FILE: TERM the daemon whose pid FILE holds, if it still runs, and wait for it
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$1"
}

running() { kill -0 "$(cat "$dir/$1.pid" 2>/dev/null)" 2>/dev/null; }

install() {  # slurm-wlm and munge from apt where missing (about 15 s; no recommends: no GUI, no docs)
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "slurm: slurm-wlm and munge are not installed, and installing them needs root: sudo $0 $command $dir" >&2
        exit 1
    fi
    echo "slurm: installing slurm-wlm and munge with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$dir/apt.log" 2>&1 \
        || { apt-get update -q >>"$dir/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$dir/apt.log" 2>&1; } \
        || { echo "slurm: apt-get install slurm-wlm munge failed, see $dir/apt.log:" >&2; tail -n 5 "$dir/apt.log" >&2; exit 1; }
}

case $command in
    install) install; exit 0 ;;
    stop) stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"; exit 0 ;;
    start) ;;
    *) echo "usage: $0 start|stop|install [DIR]" >&2; exit 2 ;;
esac

if running slurmctld && running slurmd && sinfo -h -o %t 2>/dev/null | grep -qx idle; then  # already up
    echo "slurm: already running; export SLURM_CONF=$SLURM_CONF"
    exit 0
fi
install
if [ "$(id -u)" != 0 ]; then
    echo "slurm: starting a cluster needs root (slurmd runs jobs as their users); run: sudo $0 start $dir" >&2
    exit 1
fi

# Stale daemons of an earlier start (e.g. killed tests) would hold the ports.
stop_pid "$dir/slurmd.pid"
stop_pid "$dir/slurmctld.pid"
stop_pid "$dir/munged.pid"

# munge: a key of this cluster only, and a munged on a socket in DIR (the socket's folder must be world-executable).
chmod 755 "$dir"
mkdir -p "$dir/state" "$dir/spool"
if [ ! -s "$dir/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none)
fi
munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"

# slurm.conf: this host as controller and only node, with its real CPUs and memory (slurmd -C); one partition.
host=$(hostname -s)
node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm.sh: a single-node cluster without accounting.
ClusterName=seqlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$host"

# Ready when the node is idle (a few seconds). The daemons write their pid files after forking, so a missing
# one means failure (e.g. another Slurm holds the ports 6817-6818) only after a few seconds.
for i in $(seq 120); do
    if [ "$i" -gt 10 ] && ! { running slurmctld && running slurmd; }; then break; fi
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        echo "slurm: started; export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm: the cluster in $dir did not start (node: $(sinfo -h -o '%t %E' 2>&1)); its logs end:" >&2
tail -n 3 "$dir/slurmctld.log" "$dir/slurmd.log" >&2
stop_pid "$dir/slurmd.pid"; stop_pid "$dir/slurmctld.pid"; stop_pid "$dir/munged.pid"
exit 1
