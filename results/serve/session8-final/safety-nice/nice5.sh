#!/bin/bash
cd /work/main && . /tmp/stackenv2.sh
.venv/bin/sluice down > /dev/null 2>&1; .venv/bin/sluice up --detach > /dev/null 2>&1; sleep 3
sp=$(python3 -c "import json;print(json.load(open('/tmp/lead-stack/stack.json'))['processes']['safety'])")
setsafety() { for t in $(ls /proc/$sp/task); do renice -n $1 -p $t >/dev/null; done; }
for i in 1 2; do for n in 0 5; do
  setsafety $n
  echo "== safety nice $n (others 5) $(date -u +%H:%M:%S) load $(cat /proc/loadavg)"
  .venv/bin/sluice bench serve --overhead --concurrency 1,4,16 --output-len 128 --prompt-len 143 --rounds 2 --sessions 32 --results /tmp/n5-$n-$i > /dev/null 2>&1
done; done
.venv/bin/sluice down > /dev/null 2>&1
echo done
