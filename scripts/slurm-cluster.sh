#!/usr/bin/env bash
# slurm-cluster.sh — a throw-away single-node Slurm cluster on 127.0.0.1 for kiln's tests and for
# trying `--executor slurm` on one machine. Debian 12 (Slurm 22.05); needs root (slurmd switches users),
# no systemd. Every file (config, munge key and socket, spool, logs) lives under one state directory.
#
#   scripts/slurm-cluster.sh start    install the packages if missing, write the config, start munged,
#                                     slurmctld and slurmd, wait until the node takes jobs
#   scripts/slurm-cluster.sh stop     cancel every job, stop the daemons, delete the state directory
#   scripts/slurm-cluster.sh status   daemons, sinfo, squeue; exit 0 when usable, 3 when not
#   scripts/slurm-cluster.sh env      print the line clients need: export SLURM_CONF=…
#
# Environment: KILN_SLURM_DIR (state directory; default $TMPDIR/kiln-slurm), KILN_SLURM_CTLD_PORT (6817),
# KILN_SLURM_SLURMD_PORT (6818), KILN_SLURM_TIMEOUT (seconds to wait for readiness; 60).
#
# Exit codes: 0 ok, 1 a daemon failed (see the logs it names), 2 usage, 3 the cluster cannot be set up on
# this machine (not root, packages missing and not installable: no network / no apt).
#
# Settings that matter (measured on Debian 12 VMs):
# - the node is called `localhost` (slurmd -N) so NodeName matches on any host name;
# - `cred_expire=5` in AuthInfo: a resubmitted/requeued job may start after ~6 s instead of ~121 s;
# - `batch_sched_delay=0,sched_interval=2,bf_interval=1`: array tasks start within ~1 s of a free slot;
# - `EnforcePartLimits=ALL`: an impossible request (more CPUs than the node has) is refused by sbatch
#   at submit time instead of pending forever;
# - no slurmdbd, hence no `sacct`: finished jobs stay visible to squeue/scontrol for MinJobAge (1 h) and
#   are appended to jobcomp.log;
# - `squeue --json` ignores its filters in 22.05: use the text formats (-o) instead.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR="${KILN_SLURM_DIR:-${TMPDIR:-/tmp}/kiln-slurm}"
CTLD_PORT="${KILN_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${KILN_SLURM_SLURMD_PORT:-6818}"
TIMEOUT="${KILN_SLURM_TIMEOUT:-60}"
NODE=localhost

ETC="$DIR/etc" RUN="$DIR/run" LOG="$DIR/log"
CONF="$ETC/slurm.conf"
MUNGE_KEY="$ETC/munge.key" MUNGE_SOCK="$RUN/munge.sock" MUNGE_PID="$RUN/munged.pid"
CTLD_PID="$RUN/slurmctld.pid" SLURMD_PID="$RUN/slurmd.pid"
export SLURM_CONF="$CONF"

say() { printf '[slurm-cluster] %s\n' "$*" >&2; }
fail() { say "ERROR: $*"; exit 1; }
unavailable() { say "UNAVAILABLE: $*"; exit 3; }

# alive PIDFILE NAME: the pid in PIDFILE runs and is NAME (not a recycled pid, not a zombie)
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# halt PIDFILE NAME: SIGTERM, up to 15 s, then SIGKILL — by pid only
halt() {
  local pid
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(tr -dc '0-9' <"$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do alive "$1" "$2" || break; sleep 0.1; done
  if alive "$1" "$2"; then say "$2 ($pid) ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"
}

listening() { # listening PORT: something listens on it (IPv4 or IPv6)
  local hex; hex=$(printf '%04X' "$1")
  awk -v h=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==h {f=1} END{exit !f}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

wait_until() { # wait_until SECONDS WHAT CMD...
  local end=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { say "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || unavailable "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]} (apt-get, --no-install-recommends) …"
  local t0=$SECONDS
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>"$DIR/apt.log" ||
    unavailable "apt-get update failed (no network?); see $DIR/apt.log"
  # --no-install-recommends: 8 packages / 13 MB instead of 34 / 40 MB (no slurm-wlm-plugins needed).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >>"$DIR/apt.log" 2>&1 ||
    unavailable "apt-get install slurmctld slurmd slurm-client munge failed; see $DIR/apt.log"
  say "installed in $((SECONDS - t0)) s"
}

write_config() {
  local hw field
  hw=$(slurmd -C | head -1) # NodeName=… CPUs=… Boards=… SocketsPerBoard=… … RealMemory=…
  declare -A v
  for field in CPUs Boards SocketsPerBoard CoresPerSocket ThreadsPerCore RealMemory; do
    v[$field]=$(sed -n "s/.*[[:space:]]$field=\([0-9]*\).*/\1/p" <<<" $hw")
    [ -n "${v[$field]}" ] || fail "cannot read $field from 'slurmd -C': $hw"
  done
  cat >"$CONF.tmp" <<EOF
# written by kiln's scripts/slurm-cluster.sh: one node on 127.0.0.1, no cgroups, no slurmdbd
ClusterName=kiln
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=5
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
MinJobAge=3600
KillWait=5
MailProg=/bin/true
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=${v[CPUs]} Boards=${v[Boards]} SocketsPerBoard=${v[SocketsPerBoard]} CoresPerSocket=${v[CoresPerSocket]} ThreadsPerCore=${v[ThreadsPerCore]} RealMemory=${v[RealMemory]} State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  chmod 644 "$CONF"
}

node_ready() { case "$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)" in idle | mixed | allocated | completing) ;; *) return 1 ;; esac; }

start() {
  [ "$(id -u)" = 0 ] || unavailable "must run as root (slurmd switches to the job's user)"
  [ ${#MUNGE_SOCK} -lt 100 ] || unavailable "state directory path too long for a unix socket: $DIR"
  mkdir -p "$DIR"
  install_packages
  if ! alive "$CTLD_PID" slurmctld && listening "$CTLD_PORT"; then
    fail "port $CTLD_PORT is taken (set KILN_SLURM_CTLD_PORT)"
  fi
  if ! alive "$SLURMD_PID" slurmd && listening "$SLURMD_PORT"; then
    fail "port $SLURMD_PORT is taken (set KILN_SLURM_SLURMD_PORT)"
  fi
  mkdir -p "$ETC" "$RUN" "$LOG" "$DIR/ctld" "$DIR/spool" "$DIR/munge"
  chmod 755 "$DIR" "$ETC" "$RUN" "$LOG" "$DIR/spool"
  chmod 700 "$DIR/ctld" "$DIR/munge"

  if ! alive "$MUNGE_PID" munged; then
    [ -s "$MUNGE_KEY" ] || mungekey -c -k "$MUNGE_KEY" 2>/dev/null ||
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    chmod 600 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_PID" \
      --log-file="$LOG/munged.log" --seed-file="$DIR/munge/munged.seed" </dev/null >>"$LOG/munged.out" 2>&1 ||
      fail "munged did not start; see $LOG/munged.log"
  fi
  wait_until 10 munge bash -c "munge -S '$MUNGE_SOCK' -n | unmunge -S '$MUNGE_SOCK'" ||
    fail "munge round trip failed; see $LOG/munged.log"

  if ! alive "$CTLD_PID" slurmctld; then
    write_config
    slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.out" 2>&1 || fail "slurmctld did not start; see $LOG/slurmctld.log"
  fi
  wait_until "$TIMEOUT" slurmctld bash -c "scontrol ping | grep -q 'is UP'" ||
    fail "slurmctld does not answer; see $LOG/slurmctld.log"

  if ! alive "$SLURMD_PID" slurmd; then
    slurmd -N "$NODE" -f "$CONF" </dev/null >>"$LOG/slurmd.out" 2>&1 || fail "slurmd did not start; see $LOG/slurmd.log"
  fi
  if ! wait_until "$TIMEOUT" "node $NODE" node_ready; then
    # DOWN/DRAIN left over from an unclean stop
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    wait_until 10 "node $NODE" node_ready || fail "node $NODE is not taking jobs; see $LOG/slurmd.log"
  fi
  say "up: state in $DIR, logs in $LOG; clients need: export SLURM_CONF=$CONF"
}

stop() {
  if alive "$CTLD_PID" slurmctld; then
    local jobs ctld
    jobs=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ') || true
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      # shellcheck disable=SC2016
      wait_until 20 "jobs to end" bash -c '[ -z "$(squeue -h 2>/dev/null)" ]' || true
    fi
    ctld=$(tr -dc '0-9' <"$CTLD_PID")
    scontrol shutdown >/dev/null 2>&1 || true # stops slurmctld and slurmd
    wait_until 15 "slurmctld to exit" bash -c "! [ -d /proc/$ctld ]" || true
  fi
  halt "$SLURMD_PID" slurmd
  halt "$CTLD_PID" slurmctld
  halt "$MUNGE_PID" munged
  rm -rf "$DIR"
  say "stopped; removed $DIR"
}

status() {
  local rc=0 entry
  for entry in munged:$MUNGE_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    if alive "${entry#*:}" "${entry%%:*}"; then
      printf '%-10s running (pid %s)\n' "${entry%%:*}" "$(tr -dc '0-9' <"${entry#*:}")"
    else
      printf '%-10s not running\n' "${entry%%:*}"
      rc=3
    fi
  done
  if [ $rc = 0 ]; then
    sinfo
    squeue
    node_ready || rc=3
  fi
  return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
  echo "usage: [KILN_SLURM_DIR=dir] $0 start|stop|status|env" >&2
  exit 2
  ;;
esac
