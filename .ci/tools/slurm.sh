#!/usr/bin/env bash
# A single-node SLURM cluster (Debian's slurmctld + slurmd + munge) for the tests that submit real sweeps.
# Usage: bash .ci/tools/slurm.sh DEST. Installs the packages if missing, writes DEST/slurm.conf (this host as its
# one node, every CPU, free ports), starts its own munged, slurmctld and slurmd with every socket, spool, state
# and log under DEST (two clusters on one machine do not collide), waits until the node is idle, and writes
# DEST/stop (ends them) and DEST/env (SLURM_CONF for clients: `. DEST/env && sinfo`). Idempotent: a DEST whose
# cluster answers is left as it is. Runs as root (as CI does): SlurmUser, SlurmdUser and the munged are root.
set -euo pipefail
dest=$(realpath -m "${1:?usage: slurm.sh DEST}")
mkdir -p "$dest"
if [ -f "$dest/env" ] && (. "$dest/env" && timeout 10 sinfo -h -o %T 2>/dev/null | grep -qx idle); then
  echo "slurm: the cluster in $dest is up"; exit 0
fi
if [ -f "$dest/stop" ]; then bash "$dest/stop" || true; fi
t0=$(date +%s)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
echo "slurm: packages ready in $(( $(date +%s) - t0 )) s ($(slurmctld -V))"

mkdir -p "$dest"/{munge,spool/ctld,spool/d,log}
chmod 700 "$dest/munge"
# munge: its own key, socket and files (a root munged needs --force; the key file must be private to its owner)
[ -f "$dest/munge/munge.key" ] || dd if=/dev/urandom of="$dest/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dest/munge/munge.key"
sock="$dest/munge/munge.socket"
munged --force --socket="$sock" --key-file="$dest/munge/munge.key" --pid-file="$dest/munge/munged.pid" \
  --log-file="$dest/log/munged.log" --seed-file="$dest/munge/munged.seed"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)
cat >"$dest/slurm.conf" <<CONF
ClusterName=elfs-ci
SlurmctldHost=$node
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
StateSaveLocation=$dest/spool/ctld
SlurmdSpoolDir=$dest/spool/d
SlurmctldPidFile=$dest/slurmctld.pid
SlurmdPidFile=$dest/slurmd.pid
SlurmctldLogFile=$dest/log/slurmctld.log
SlurmdLogFile=$dest/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
printf 'export SLURM_CONF=%q\n' "$dest/slurm.conf" >"$dest/env"
cat >"$dest/stop" <<STOP
#!/usr/bin/env bash
# Ends the cluster of $dest: slurmd, slurmctld, munged (each by its pid file).
for f in "$dest/slurmd.pid" "$dest/slurmctld.pid" "$dest/munge/munged.pid"; do
  if [ -f "\$f" ]; then kill "\$(cat "\$f")" 2>/dev/null || true; rm -f "\$f"; fi
done
STOP
export SLURM_CONF="$dest/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  state=$(timeout 10 sinfo -h -o %T 2>/dev/null || true)
  if [ "$state" = idle ]; then
    echo "slurm: node $node ($cpus CPUs) idle after $(( $(date +%s) - t0 )) s; clients: . $dest/env"
    exit 0
  fi
  sleep 1
done
echo "slurm: the node did not become idle (state: ${state:-none}); logs in $dest/log" >&2
tail -n 20 "$dest"/log/*.log >&2 || true
exit 1
