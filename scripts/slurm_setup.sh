#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests/sweep/test_slurm.py: `sudo bash scripts/slurm_setup.sh`.
#
# Debian's slurmctld + slurmd + munge, started as plain daemons (no systemd needed): one node (this host, with
# the CPUs and memory `slurmd -C` finds), one partition `debug` (the default), process tracking by
# /proc (proctrack/linuxproc), no task plugin and no cgroup.conf, so it runs inside a VM or container without
# cgroup delegation. Jobs may be requeued (`scontrol requeue`, preemption).
#
# Accounting: none. `sacct` only reports through slurmdbd, which needs a MariaDB server, too heavy for a test
# machine; `isoflop sweep status` reads `sacct` when it has data and otherwise `squeue` / `scontrol show job`
# (which keep a finished job for MinJobAge seconds) and the sweep folder itself.
#
# Idempotent: an already running, responsive cluster is left as it is (the config is rewritten only when it
# differs, and then the daemons restart). Exits nonzero with a one-line reason when it cannot.
set -euo pipefail

say() { echo "slurm_setup: $*"; }
die() { echo "slurm_setup: cannot set up Slurm: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get and the daemons)"
[ "$(uname -s)" = Linux ] || die "Linux only"

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
HOST=$(hostname -s)

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die "no apt-get (Debian/Ubuntu only) and Slurm is not installed"
  say "installing slurmctld, slurmd, slurm-client, munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
  say "making a munge key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- munged --force || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- slurm.conf
NODE_LINE=$(slurmd -C | head -n 1) || die "slurmd -C failed"
# slurmd -C reports this host's CPUs, sockets, cores, threads and RealMemory; keep a little memory back so
# the node is not drained when the kernel reports a few MB less after boot.
REAL_MEM=$(echo "$NODE_LINE" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[ -n "$REAL_MEM" ] || die "slurmd -C reported no RealMemory: $NODE_LINE"
NODE_LINE=$(echo "$NODE_LINE" | sed "s/RealMemory=[0-9]*/RealMemory=$((REAL_MEM * 95 / 100))/")
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
NEW_CONF=$(cat <<EOF
# written by isoflop scripts/slurm_setup.sh: a one-node test cluster
ClusterName=isoflop
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120): short for a test cluster
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
SlurmctldTimeout=60
SlurmdTimeout=60
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
  say "writing $CONF"
  echo "$NEW_CONF" > "$CONF"
  CHANGED=1
fi

# ---------------------------------------------------------------- daemons
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # the daemon whose pid file is $1 (only that pid: nothing else is signalled)
  if running "$1"; then kill "$(cat "$1")"; for _ in $(seq 20); do running "$1" || break; sleep 0.5; done; fi
}
if [ "$CHANGED" = 1 ]; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi
if ! running /run/slurmctld.pid; then
  say "starting slurmctld"
  slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
if ! running /run/slurmd.pid; then
  say "starting slurmd"
  slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

# ---------------------------------------------------------------- ready?
for _ in $(seq 60); do
  STATE=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1 || true)
  case "$STATE" in idle|mixed|allocated|completing) break ;; esac
  sleep 1
done
case "$STATE" in
  idle|mixed|allocated|completing) ;;
  drain*|down*)
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    sleep 2
    STATE=$(sinfo -h -n "$HOST" -o %T | head -n 1)
    case "$STATE" in idle|mixed|allocated|completing) ;; *) die "node $HOST is $STATE: $(sinfo -h -R)";; esac ;;
  *) die "node $HOST is ${STATE:-not reported} after 60 s (see $LOG_DIR/slurmd.log)" ;;
esac
say "up: node $HOST ($STATE), partition debug"
