#!/usr/bin/env python3
"""The engine benchmark end to end on the CPU: engine_bench on a 2-layer SmolLM2-shaped random model (--quick, a few
seconds), its JSON checked field by field (every figure present, finite and positive, the window as asked), then
bench/engine_vs_hf.py joining it with a hand-made torch_baselines-style JSON (a ratio where the depths match, a
refusal where they differ, a torch-only row). Bad input must fail with a clear message.

    engine_bench_test.py ENGINE_BENCH ENGINE_VS_HF_PY
"""
import json
import math
import os
import subprocess
import sys
import tempfile

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def main():
    bench, joiner = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "engine.json")
        cmd = [bench, "--device", "cpu", "--models", "smollm2-135m", "--layers", "2", "--quick", "--batches", "1,3",
               "--decode-steps", "6", "--prefill", "40", "--json", out]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        print(p.stdout)
        check(p.returncode == 0, f"engine_bench exited {p.returncode}: {p.stderr.strip()}")
        check("## summary engine_bench" in p.stdout, "no summary block in engine_bench's output")
        with open(out) as f:
            e = json.load(f)
        check(e.get("device") == "cpu" and e.get("decode_method") == "engine", f"device/method: {e.get('device')}")
        check(positive(e.get("bandwidth_gbps")), f"bandwidth_gbps {e.get('bandwidth_gbps')}")
        check(e.get("cuda_init_s") == 0, f"cuda_init_s {e.get('cuda_init_s')} on the CPU")
        check(e.get("decode_steps") == 6, f"decode_steps {e.get('decode_steps')}")
        check(e.get("sampling") == "greedy", f"sampling {e.get('sampling')}")
        models = e.get("models", [])
        check(len(models) == 1, f"{len(models)} models, want 1")
        m = models[0]
        check(m.get("model") == "smollm2-135m" and m.get("layers") == 2 and m.get("shape_layers") == 30,
              f"model {m.get('model')} layers {m.get('layers')}/{m.get('shape_layers')}")
        # 2 layers of SmolLM2: q, k, v, o, gate, up, down + norms, and the tied 49152 x 576 LM head, bf16.
        want_weights = 2 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576 + 49152 * 576
        check(m.get("weight_bytes") == 2 * want_weights,
              f"weight_bytes {m.get('weight_bytes')}, want {2 * want_weights}")
        check(m.get("kv_bytes_per_token") == 2 * 3 * 64 * 2 * 4, f"kv_bytes_per_token {m.get('kv_bytes_per_token')}")
        for k in ("random_weights_s", "backend_build_s", "ready_s"):
            check(positive(m.get(k)), f"{k} {m.get(k)}")
        check(m.get("graph_capture_s") == 0, "graph_capture_s is not 0 on the CPU")
        check(m.get("ready_s", 0) >= m.get("backend_build_s", 1), "ready_s below backend_build_s")
        decode = m.get("decode", [])
        check([d.get("batch") for d in decode] == [1, 3], f"decode batches {[d.get('batch') for d in decode]}")
        for d in decode:
            for k in ("seconds", "tok_s", "step_ms", "forward_ms", "roofline_tok_s", "pct_roofline",
                      "pct_roofline_forward", "kv_bytes_per_step", "mean_kv_len"):
                check(positive(d.get(k)), f"batch {d.get('batch')}: {k} {d.get(k)}")
            check(d.get("steps") == 6, f"batch {d.get('batch')}: steps {d.get('steps')}")
            if positive(d.get("tok_s")) and positive(d.get("seconds")):
                check(abs(d["tok_s"] - d["batch"] * 6 / d["seconds"]) < 1e-6 * d["tok_s"], "tok_s != B*N/seconds")
            # The forward is part of each step; the context is the prompt (32) plus the tokens made so far.
            check(d.get("forward_ms", 1) <= d.get("step_ms", 0), f"forward_ms above step_ms at batch {d.get('batch')}")
            check(32 + 4 <= d.get("mean_kv_len", 0) <= 32 + 4 + 6 + 8, f"mean_kv_len {d.get('mean_kv_len')}")
        prefill = m.get("prefill", [])
        check([q.get("tokens") for q in prefill] == [40], f"prefill lengths {[q.get('tokens') for q in prefill]}")
        for q in prefill:
            check(positive(q.get("tok_s")) and positive(q.get("seconds")), f"prefill figures {q}")

        # The joiner: smollm2 batch 1 at the same depth (compared), batch 3 at the full depth (not compared), and a
        # llama row engine_bench did not run.
        torch_json = os.path.join(tmp, "torch.json")
        with open(torch_json, "w") as f:
            json.dump({"info": {"transformers": "test", "name": "hand-made"}, "copy": {"gbps": 10.0},
                       "generate": [
                           {"model": "SmolLM2-135M", "batch": 1, "layers": 2, "decode_tok_s": 50.0, "pct_roofline": 5.0,
                            "cache": "static"},
                           {"model": "SmolLM2-135M", "batch": 3, "decode_tok_s": 90.0, "pct_roofline": 4.0},
                           {"model": "Llama-3.2-1B", "batch": 8, "layers": 16, "decode_tok_s": 7.0}]}, f)
        joined = os.path.join(tmp, "joined.json")
        p = subprocess.run([sys.executable, joiner, out, torch_json, "--json", joined], capture_output=True,
                           text=True, timeout=60)
        print(p.stdout)
        check(p.returncode == 0, f"engine_vs_hf exited {p.returncode}: {p.stderr.strip()}")
        check("## summary engine_vs_hf" in p.stdout, "no summary block in engine_vs_hf's output")
        with open(joined) as f:
            rows = {(r["model"], r["batch"]): r for r in json.load(f)["rows"]}
        check(set(rows) == {("smollm2-135m", 1), ("smollm2-135m", 3), ("llama-3.2-1b", 8)}, f"rows {sorted(rows)}")
        r1 = rows.get(("smollm2-135m", 1), {})
        if positive(r1.get("flint_tok_s")):
            check(abs(r1.get("ratio", 0) - r1["flint_tok_s"] / 50.0) < 1e-9, f"ratio {r1.get('ratio')}")
        r3 = rows.get(("smollm2-135m", 3), {})
        check("ratio" not in r3 and "not compared" in r3.get("note", ""), f"depth mismatch compared: {r3}")
        rl = rows.get(("llama-3.2-1b", 8), {})
        check(rl.get("flint_tok_s") is None and rl.get("hf_tok_s") == 7.0, f"torch-only row {rl}")

        # Bad input: an unknown shape, a missing joiner input.
        p = subprocess.run([bench, "--device", "cpu", "--models", "nosuch"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "unknown model shape" in p.stderr and "smollm2-135m" in p.stderr,
              f"unknown shape: rc {p.returncode}, {p.stderr.strip()}")
        # A model that cannot run is recorded with its error, the others still run, the JSON is written, exit 1.
        err_json = os.path.join(tmp, "err.json")
        p = subprocess.run([bench, "--device", "cpu", "--models", "smollm2-135m", "--layers", "1", "--quick",
                            "--max-context", "40", "--json", err_json], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "FAILED" in p.stdout, f"too short a context: rc {p.returncode}")
        with open(err_json) as f:
            err = json.load(f)
        check("too short" in err["models"][0].get("error", ""), f"model error not recorded: {err['models']}")
        p = subprocess.run([bench, "--batches", "0"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "--batches" in p.stderr, f"--batches 0: rc {p.returncode}, {p.stderr.strip()}")
        # --sampling chat: sampled decoding runs and is recorded; an unknown mode is refused.
        chat_json = os.path.join(tmp, "chat.json")
        p = subprocess.run([bench, "--device", "cpu", "--models", "smollm2-135m", "--layers", "1", "--quick",
                            "--batches", "2", "--decode-steps", "4", "--prefill", "16", "--sampling", "chat",
                            "--json", chat_json], capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"--sampling chat: rc {p.returncode}, {p.stderr.strip()}")
        with open(chat_json) as f:
            chat = json.load(f)
        check(chat.get("sampling") == "chat" and positive(chat["models"][0]["decode"][0].get("tok_s")),
              f"--sampling chat JSON: {chat.get('sampling')}, {chat['models'][0].get('decode')}")
        p = subprocess.run([bench, "--sampling", "nucleus"], capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "--sampling" in p.stderr, f"--sampling nucleus: rc {p.returncode}, {p.stderr.strip()}")
        # The op profiler is the CUDA backend's: on the CPU, --profile is refused before anything runs.
        p = subprocess.run([bench, "--device", "cpu", "--models", "smollm2-135m", "--quick", "--profile"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "--profile" in p.stderr and "CUDA" in p.stderr,
              f"--profile on the CPU: rc {p.returncode}, {p.stderr.strip()}")
        p = subprocess.run([sys.executable, joiner, os.path.join(tmp, "missing.json"), torch_json],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and "cannot read engine_bench JSON" in p.stdout, f"missing input: rc {p.returncode}")
    print(f"engine_bench_test: {len(FAILURES)} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
