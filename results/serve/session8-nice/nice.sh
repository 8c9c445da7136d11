#!/bin/bash
cd /work/main && . /tmp/stackenv2.sh
.venv/bin/sluice up --detach > /dev/null 2>&1; sleep 3
pids() { python3 -c "
import json;p=json.load(open('/tmp/lead-stack/stack.json'))['processes']
print(' '.join(str(p[k]) for k in ('orchestrator','safety','envoy','telemetry','retrieval')))"; }
setnice() { for p in $(pids); do for t in $(ls /proc/$p/task); do renice -n $1 -p $t >/dev/null; done; for c in $(pgrep -P $p); do renice -n $1 -p $c > /dev/null; done; done; }
for i in 4; do for n in 5 0; do
  setnice $n
  echo "== nice $n load $(cat /proc/loadavg)"
  .venv/bin/sluice bench serve --overhead --concurrency 1,4,16 --output-len 128 --prompt-len 143 --rounds 2 --sessions 32 --results /tmp/nice-$n-$i > /tmp/nice-$n-$i.log 2>&1
  tail -4 /tmp/nice-$n-$i.log
done; done
setnice 0
echo done
