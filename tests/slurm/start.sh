#!/bin/sh
# Starts a single-node Slurm cluster (munged, slurmctld, slurmd) for the tests,
# without systemd, installing Debian's slurm-wlm and munge first if missing.
# Run as root. Everything lives in $DIR (default /run/groklab-slurm); the
# clients find the cluster with SLURM_CONF=$DIR/slurm.conf. stop.sh stops
# exactly the daemons started here, by the PIDs recorded in $DIR.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${GROKLAB_SLURM_DIR:-/run/groklab-slurm}
export SLURM_CONF="$DIR/slurm.conf"
die() { echo "slurm fixture: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons); run the other tests with: ctest -LE slurm"

alive() { [ -s "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }
if alive slurmctld && alive slurmd && scontrol ping 2>/dev/null | grep -q UP; then
  echo "slurm fixture: already running ($DIR)"; exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
  # apt's post-install scripts would start munged through init.d; a
  # temporary policy-rc.d stops that (ours is started below).
  added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; added=1; fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends slurm-wlm munge; } \
    >"${TMPDIR:-/tmp}/groklab-slurm-apt.log" 2>&1 || { [ -n "$added" ] && rm -f /usr/sbin/policy-rc.d
      tail -20 "${TMPDIR:-/tmp}/groklab-slurm-apt.log" >&2; die "installing slurm-wlm and munge failed"; }
  [ -n "$added" ] && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$DIR/state" "$DIR/spool"
HOST=$(hostname -s); CPUS=$(nproc)
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" -e "s|@DIR@|$DIR|g" \
  "$HERE/slurm.conf.in" >"$SLURM_CONF"

# munge: reuse a running munged (a machine's own) or start one.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  cp /run/munge/munged.pid "$DIR/munged.pid"
  munge -n | unmunge >/dev/null || die "munged does not answer"
fi

wait_for() {  # wait_for WHAT CMD…: up to 30 s
  what=$1; shift; i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -le 60 ] || { tail -20 "$DIR"/*.log >&2; die "$what did not come up"; }; sleep 0.5
  done
}
# -D: stay in the foreground, so $! is the daemon; -c: a cold start.
setsid slurmctld -D -c >"$DIR/slurmctld.out" 2>&1 </dev/null &
echo $! >"$DIR/slurmctld.pid"
wait_for slurmctld sh -c 'scontrol ping | grep -q UP'
setsid slurmd -D >"$DIR/slurmd.out" 2>&1 </dev/null &
echo $! >"$DIR/slurmd.pid"
wait_for "node $HOST" sh -c "sinfo -h -n '$HOST' -o %T | grep -qx idle"
echo "slurm fixture: up ($DIR, node $HOST, $CPUS CPUs)"
