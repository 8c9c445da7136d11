#!/bin/bash
cd /work/main && . /tmp/stackenv2.sh
SLUICE_PLATFORM_NICE=0 .venv/bin/sluice up --detach > /dev/null 2>&1; sleep 3
pids() { python3 -c "
import json;p=json.load(open('/tmp/lead-stack/stack.json'))['processes']
print(' '.join(str(p[k]) for k in ('orchestrator','safety','envoy','telemetry','retrieval')))"; }
setnice() { for p in $(pids); do for t in $(ls /proc/$p/task); do renice -n $1 -p $t >/dev/null; done; for c in $(pgrep -P $p); do renice -n $1 -p $c > /dev/null; done; done; }
for n in 0 2 5 0 2 5; do
  setnice $n
  echo "== nice $n $(date -u +%H:%M:%S) load $(cat /proc/loadavg)"
  .venv/bin/sluice bench serve --overhead --concurrency 16,64 --output-len 128 --prompt-len 143 --rounds 1 --sessions 128 --results /tmp/n4-$n-$RANDOM > /dev/null 2>&1
done
.venv/bin/sluice down > /dev/null 2>&1
echo done
