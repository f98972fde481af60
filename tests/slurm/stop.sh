#!/bin/sh
# Stops the daemons start.sh started, by their recorded PIDs only.
DIR=${GROKLAB_SLURM_DIR:-/run/groklab-slurm}
for d in slurmd slurmctld munged; do
  f="$DIR/$d.pid"; [ -s "$f" ] || continue; pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 40 ]; do sleep 0.25; i=$((i+1)); done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$f"
done
echo "slurm fixture: stopped"
