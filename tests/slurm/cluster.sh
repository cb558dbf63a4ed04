#!/usr/bin/env bash
# A real single-node SLURM cluster for tests, isolated in one folder (no system config touched).
#
#   tests/slurm/cluster.sh start DIR   install (apt) if needed, write DIR/slurm.conf and gres.conf,
#                                      start munged, slurmctld, slurmd; wait until `srun true` works;
#                                      print `export SLURM_CONF=DIR/slurm.conf`
#   tests/slurm/cluster.sh stop DIR    stop the daemons by their pid files
#
# Needs root and apt. Job steps (srun inside sbatch jobs) read the default config path, so
# /etc/slurm/slurm.conf and gres.conf are linked to DIR's files while the cluster runs (only when
# no other SLURM config is there; `stop` removes the links).
# The node advertises one fake GPU (gres.conf: File=/dev/null), so `--gpus=1`
# jobs are scheduled. It is in two partitions, `debug` (the default) and `gpu`, so a test can see
# where jobs went. JobRequeue=0, as at many sites: a job can be requeued (`scontrol requeue`,
# preemption) only when it was submitted with `sbatch --requeue`. No slurmdbd: use `squeue` as status command (MinJobAge keeps finished jobs
# visible for an hour).
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: cluster.sh start|stop DIR}" && cd "$2" && pwd)
export SLURM_CONF="$dir/slurm.conf"

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! munge -n >/dev/null 2>&1 </dev/null; then
        runuser -u munge -- /usr/sbin/munged --force
    fi
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 </dev/null && return; sleep 0.1; done
    echo "munged did not start" >&2; exit 1
}

write_config() {
    local host node memory
    host=$(hostname -s)
    mkdir -p "$dir/state" "$dir/spool"
    node=$(slurmd -C | head -n 1 | sed -E 's/ UpTime=.*//; s/RealMemory=[0-9]+//')
    memory=$(slurmd -C | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
    memory=$((memory * 9 / 10))
    cat >"$SLURM_CONF" <<CONF
ClusterName=gmptl-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=1000
SchedulerParameters=sched_interval=1
GresTypes=gpu
$node RealMemory=$memory Gres=gpu:1 NodeAddr=127.0.0.1 State=UNKNOWN
JobRequeue=0
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
    echo "Name=gpu File=/dev/null" >"$dir/gres.conf"
    mkdir -p /etc/slurm
    for name in slurm.conf gres.conf; do
        if [ ! -e "/etc/slurm/$name" ] || [ -L "/etc/slurm/$name" ]; then
            ln -sfn "$dir/$name" "/etc/slurm/$name"
        fi
    done
}

start() {
    install_packages
    start_munge
    stop_daemons
    write_config
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 120); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle && timeout 20 srun -t 1 true 2>/dev/null; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return
        fi
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    echo "the test cluster did not become ready; see $dir/slurmctld.log and $dir/slurmd.log" >&2
    exit 1
}

stop_daemons() {
    local pidfile pid
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    done
    for name in slurm.conf gres.conf; do
        [ "$(readlink "/etc/slurm/$name" 2>/dev/null)" = "$dir/$name" ] && rm -f "/etc/slurm/$name"
    done
    return 0
}

case "$cmd" in
    start) start ;;
    stop) stop_daemons ;;
    *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
