#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine, for development and the tests (run as root):
# Debian's slurm-wlm and munge, one slurmctld and two slurmd (nodes n1 and n2) on loopback ports,
# each node with two fake GPUs (character devices made with mknod c 195 N, declared in gres.conf,
# so Slurm sets CUDA_VISIBLE_DEVICES for a job that asks for them).
#   bash scripts/slurm-cluster.sh start DIR     write DIR/slurm.conf, start munged and the daemons,
#                                               wait until both nodes are idle; prints SLURM_CONF
#   bash scripts/slurm-cluster.sh stop DIR      stop what start started
#   bash scripts/slurm-cluster.sh node-down DIR n2 / node-up DIR n2   stop or start one slurmd
# Every Slurm command then needs SLURM_CONF=DIR/slurm.conf in its environment.
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,11p' "$0"; exit 2; }
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
export SLURM_CONF="$dir/slurm.conf"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_munge() {
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
  fi
}
slurmd_node() { slurmd -N "$1" -f "$SLURM_CONF"; }
case "$cmd" in
  start)
    command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
    mkdir -p "$dir/state" "$dir/spool" "$dir/dev" "$dir/log"
    for i in 0 1 2 3; do [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 195 "$i"; done
    host="$(hostname -s)"
    ctld="$(free_port)"; p1="$(free_port)"; p2="$(free_port)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 / 4)}' /proc/meminfo)"
    cat > "$SLURM_CONF" <<CONF
ClusterName=runnertest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdTimeout=10
SlurmctldTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=600
MessageTimeout=5
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p1 CPUs=4 RealMemory=$mem Gres=gpu:2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$p2 CPUs=4 RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
    cat > "$dir/gres.conf" <<CONF
NodeName=n1 Name=gpu File=$dir/dev/nvidia[0-1]
NodeName=n2 Name=gpu File=$dir/dev/nvidia[2-3]
CONF
    start_munge
    slurmctld -f "$SLURM_CONF"
    slurmd_node n1; slurmd_node n2
    for _ in $(seq 1 120); do
      if [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle')" = 2 ]; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
      sleep 0.5
    done
    echo "the cluster did not come up; see $dir/log" >&2; sinfo -N >&2 || true; exit 1 ;;
  stop)
    for f in "$dir"/slurmd-*.pid "$dir/slurmctld.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 1
    for f in "$dir"/slurmd-*.pid "$dir/slurmctld.pid"; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done ;;
  node-down)  # the node dies: its slurmd, and the processes of the jobs running on it
    node="${3:?node}"; ids="$(squeue -h -w "$node" -t running -o %i 2>/dev/null || true)"
    kill -9 "$(cat "$dir/slurmd-$node.pid")" 2>/dev/null || true
    for id in $ids; do
      pkill -9 -f "slurmstepd: \[$id\." || true
      for env in /proc/[0-9]*/environ; do
        if tr '\0' '\n' < "$env" 2>/dev/null | grep -qx "SLURM_JOB_ID=$id"; then pid="${env#/proc/}"; kill -9 "${pid%/environ}" 2>/dev/null || true; fi
      done
    done ;;
  node-up) slurmd_node "${3:?node}" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
