"""Chat-like lengths (and uniform c=32) for the ~110M random Llama: in-flight vs static at c=32."""
import json, os, sys, time
sys.path.insert(0, '/work/main')
import torch
from dataclasses import replace
from services.bench import engine_bench as eb
from services.bench.drivers import run_mode, warm_up
from services.bench.workload import mixed_workload, static_batching_ceiling
torch.set_num_threads(2); torch.set_grad_enabled(False)
load0 = os.getloadavg()
model = eb.random_model(eb.LARGE_ARGS)
prof = replace(eb.QUICK_LARGE, chat_lengths_rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
warm_up(model, mixed_workload(4, model.args.vocab_size, 99, prof.prompt_len, (4, 4)))
out = {"loadavg_start": load0, "rounds": prof.chat_lengths_rounds}
t = time.time()
out["chat_lengths"] = eb.bench_chat_lengths(model, prof)
specs = mixed_workload(prof.rounds * 32, model.args.vocab_size, 32, prof.prompt_len, prof.output_len)
uni = {m: run_mode(model, m, specs, 32)[0] for m in ("static", "inflight")}
out["uniform_c32"] = {"static_tok_s": uni["static"]["output_tokens_per_s"], "inflight_tok_s": uni["inflight"]["output_tokens_per_s"],
                      "ratio": round(uni["inflight"]["output_tokens_per_s"] / uni["static"]["output_tokens_per_s"], 3),
                      "ceiling": round(static_batching_ceiling(specs, 32), 2), "requests": len(specs)}
out["loadavg_end"] = os.getloadavg(); out["elapsed_s"] = round(time.time() - t, 1)
print(json.dumps({k: v for k, v in out.items() if k != "chat_lengths"}, indent=1))
c = out["chat_lengths"]; print({k: v for k, v in c.items() if k != "throughput"})
os.makedirs("/tmp/eng110", exist_ok=True); json.dump(out, open("/tmp/eng110/chat_lengths_110m.json", "w"), indent=1)
