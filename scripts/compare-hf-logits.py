#!/usr/bin/env python3
"""compare-hf-logits: Flint's logits against transformers' on random-initialised models of real shapes.

  /work/pyenv/bin/python scripts/compare-hf-logits.py [--shapes A,B,...] [--layers N] [--device cpu|cuda]
      [--flint-run PATH] [--tokens T] [--seed S] [--dtype bf16|f32] [--atol A] [--rtol R] [--min-top1 F]
      [--work DIR] [--json PATH] [--skip-without-torch]

For each shape: scripts/hf-random-model.py writes a random model (N layers, 0 for all) to WORK/SHAPE; transformers
runs that model's forward pass (still in memory, upcast to float32: the stored values; eager attention) on T
fixed token ids; `flint-run -m WORK/SHAPE --prompt-ids ...
--dump-logits F -n 0 --device D` runs Flint's on the same ids. Both read the same stored (bf16) weights and
compute in fp32 on the CPU backend, so they differ only by summation order.

Reported per shape: max |flint - hf| over every logit of every position; that over max |hf| (relative); the share
of logits outside atol + rtol * |hf|; top-1 agreement (positions whose argmax is the same). A shape passes when no
logit is outside the tolerance and top-1 agreement is at least --min-top1. Default tolerances: cpu atol 1e-3,
rtol 1e-3, min-top1 1.0 (fp32 against fp32); cuda atol 0.25, rtol 0.05, min-top1 0.9 (a bf16 backend;
provisional until the CUDA backend has been measured). Also checks that Flint reads the saved config.json as
the shape of model/model_shapes.cpp (its `flint-run --list-shapes` line, layers aside), so the two tables
cannot drift. Exits 0 when every shape passes, 1 when one does not, 2 on a usage or setup error. The last lines
are a "## summary" block (scripts/gpu-check.sh repeats it).
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOL = {"cpu": (1e-3, 1e-3, 1.0), "cuda": (0.25, 0.05, 0.9)}


def load_hf_random_model():
    spec = importlib.util.spec_from_file_location("hf_random_model", os.path.join(HERE, "hf-random-model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token_ids(vocab, n, seed):
    """n fixed ids spread over the whole vocabulary (the high ids test the end of the embedding)."""
    import torch
    gen = torch.Generator().manual_seed(seed + 7)
    ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
    ids[-1] = vocab - 1
    return ids


def hf_logits(model, ids):
    """transformers' logits in float32 from the stored values (the model as saved, upcast), eager attention."""
    import torch
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(torch.float32)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def flint_logits(flint_run, model_dir, ids, device, threads, work):
    import numpy as np
    path = os.path.join(work, "flint_logits.npy")
    cmd = [flint_run, "-m", model_dir, "--prompt-ids", ",".join(map(str, ids)), "-n", "0", "--dump-logits", path,
           "--device", device]
    if threads:
        cmd += ["-t", str(threads)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"flint-run failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    described = re.search(r"^\[flint-run\] (.*?) \| ", proc.stderr, re.M)
    return np.load(path), (described.group(1) if described else ""), seconds


def table_line(flint_run, shape, layers):
    """Flint's own description of `shape` from --list-shapes, with the layer count set to `layers`."""
    out = subprocess.run([flint_run, "--list-shapes"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 2)
        if parts and parts[0] == shape:
            return re.sub(r": \d+ layers,", f": {layers} layers,", parts[2], count=1)
    return None


def compare(flint, ref, atol, rtol):
    import numpy as np
    diff = np.abs(flint.astype(np.float64) - ref.astype(np.float64))
    outside = diff > atol + rtol * np.abs(ref)
    return {
        "max_abs_err": float(diff.max()),
        "max_rel_err": float(diff.max() / max(np.abs(ref).max(), 1e-30)),
        "mean_abs_err": float(diff.mean()),
        "outside_tolerance": float(outside.mean()),
        "top1_agreement": float((flint.argmax(-1) == ref.argmax(-1)).mean()),
        "ref_logit_std": float(ref.std()),
        "finite": bool(np.isfinite(flint).all()),
    }


def check_shape(args, hfr, shape, model_dir, work, tolerance):
    """Builds the model, runs both sides and returns the result dict ("pass" says whether it passed)."""
    atol, rtol, min_top1 = tolerance
    t0 = time.time()
    model = hfr.build(shape, model_dir, args.layers, args.seed, args.dtype)
    config = model.config
    build_s = time.time() - t0
    ids = token_ids(config.vocab_size, args.tokens, args.seed)
    t0 = time.time()
    ref = hf_logits(model, ids)
    del model
    r = {"layers": config.num_hidden_layers, "tokens": len(ids), "device": args.device, "atol": atol, "rtol": rtol,
         "min_top1": min_top1, "build_s": round(build_s, 2), "hf_s": round(time.time() - t0, 2), "pass": False}
    try:
        out, described, flint_s = flint_logits(args.flint_run, model_dir, ids, args.device, args.threads, work)
    except RuntimeError as e:
        r["error"] = str(e)
        return r
    r["flint_s"] = round(flint_s, 2)
    expected = table_line(args.flint_run, shape, config.num_hidden_layers)
    r["config_matches_table"] = described == expected
    if not r["config_matches_table"]:
        print(f"{shape}: config mismatch\n  flint reads  {described}\n  table says   {expected}")
    if out.shape != ref.shape:
        r["error"] = f"Flint's logits have shape {out.shape}, transformers' {ref.shape}"
        return r
    r.update(compare(out, ref, atol, rtol))
    r["pass"] = (r["config_matches_table"] and r["finite"] and r["outside_tolerance"] == 0.0
                 and r["top1_agreement"] >= min_top1)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="llama-3.2-1b,qwen2.5-1.5b,qwen3-0.6b")
    ap.add_argument("--layers", type=int, default=2, help="layers per model, 0 for the shape's own (default 2)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Flint's device (default cpu)")
    ap.add_argument("--flint-run", default=os.path.join(HERE, "..", "build", "server", "flint-run"))
    ap.add_argument("--tokens", type=int, default=16, help="prompt length (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="stored weights (default bf16)")
    ap.add_argument("--atol", type=float)
    ap.add_argument("--rtol", type=float)
    ap.add_argument("--min-top1", type=float)
    ap.add_argument("--threads", type=int, default=0, help="Flint's CPU threads (default all)")
    ap.add_argument("--work", help="where the models go (default a temporary directory, removed)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-without-torch", action="store_true",
                    help="exit 77 (CTest's skip) when torch or transformers cannot be imported")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"compare-hf-logits: needs torch and transformers ({e})", file=sys.stderr)
        return 77 if args.skip_without_torch else 2
    atol, rtol, min_top1 = DEFAULT_TOL[args.device]
    atol = atol if args.atol is None else args.atol
    rtol = rtol if args.rtol is None else args.rtol
    min_top1 = min_top1 if args.min_top1 is None else args.min_top1
    if not os.access(args.flint_run, os.X_OK):
        print(f"compare-hf-logits: {args.flint_run} is not an executable flint-run (--flint-run PATH)", file=sys.stderr)
        return 2
    if args.tokens < 1:
        ap.error("--tokens must be at least 1")

    # A quick run first, so that a flint-run that cannot use the device fails before any model is built.
    pre = subprocess.run([args.flint_run, "--random-weights", "smollm2-135m:layers=1", "--prompt-ids", "1", "-n", "1",
                          "--device", args.device], capture_output=True, text=True)
    if pre.returncode != 0:
        print(f"compare-hf-logits: flint-run cannot run on {args.device}: {pre.stderr.strip()[-400:]}")
        print(f"## summary: Flint vs transformers logits ({args.device}): not run, flint-run cannot use the device")
        return 1

    import torch
    torch.manual_seed(args.seed)
    hfr = load_hf_random_model()
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in hfr.SHAPES:
            print(f"compare-hf-logits: unknown shape {s!r}; known: {', '.join(hfr.SHAPES)}", file=sys.stderr)
            return 2
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="flint-hf-")
    work = args.work or tmp.name
    results = {}
    for shape in shapes:
        model_dir = os.path.join(work, shape)
        try:
            results[shape] = check_shape(args, hfr, shape, model_dir, work, (atol, rtol, min_top1))
        finally:
            if tmp is not None:
                shutil.rmtree(model_dir, ignore_errors=True)
        print(f"{shape}: {json.dumps(results[shape])}", flush=True)
    failed = [shape for shape, r in results.items() if not r["pass"]]
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shapes": results, "failed": failed}, f, indent=1)

    print("## summary: Flint vs transformers logits "
          f"({args.device}, {args.dtype} weights, {args.layers or 'all'} layers, {args.tokens} tokens; "
          f"pass: every logit within {atol:g} + {rtol:g}*|ref|, top-1 agreement >= {min_top1:g})")
    print(f"{'shape':14} {'layers':>6} {'max abs':>10} {'max rel':>10} {'outside':>8} {'top1':>6} "
          f"{'flint s':>8}  result")
    for shape, r in results.items():
        if "max_abs_err" in r:
            print(f"{shape:14} {r['layers']:>6} {r['max_abs_err']:>10.3g} {r['max_rel_err']:>10.3g} "
                  f"{r['outside_tolerance']:>8.2%} {r['top1_agreement']:>6.2f} {r['flint_s']:>8.2f}  "
                  f"{'PASS' if r['pass'] else 'FAIL'}{'' if r['config_matches_table'] else ' (config differs)'}")
        else:
            print(f"{shape:14} {r['layers']:>6}  FAIL: {r['error'][:160]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
