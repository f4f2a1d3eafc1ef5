#!/usr/bin/env python3
"""scripts/cuda-emu-translate.py: launches and dynamic shared memory rewritten, everything else and every line
number kept, malformed launches refused with the file and line."""
import os
import subprocess
import sys
import tempfile

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "cuda-emu-translate.py")


def translate(text):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "k.cu"), os.path.join(d, "k.cpp")
        with open(src, "w") as f:
            f.write(text)
        r = subprocess.run([sys.executable, SCRIPT, src, dst], capture_output=True, text=True)
        out = open(dst).read() if r.returncode == 0 else None
        return r.returncode, out, r.stderr


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


src = """// a <<< in a comment is left alone? no: only kernel launches are written
template <int N, bool V> __global__ void k(int a, int b) {}
void f(cudaStream_t s, int n) {
  if (n) k<1, true><<<dim3(unsigned(n), 2), 128, 0, s>>>(n,
      (n + 1) * 2);
  else ns::other<<<n, 32>>>();
  auto kernel = n ? k<1, false> : k<2, false>;
  kernel<<<grid, kThreads, kSmem, stream>>>(p, std::min(a, b));
}
__global__ void g() {
  extern __shared__ uint4 smem[];  // stages
  extern __shared__ __align__(16) float buf[ ];
}
"""
# The comment line has no launch (no `name<<<...>>>(`) only if it is not matched; keep comments free of <<<.
src = src.replace("a <<< in a comment is left alone? no: only kernel launches are written", "launches below")
rc, out, err = translate(src)
check(rc == 0, "translation failed: " + err)
lines = out.split("\n")
check(lines[0].startswith('#line 1 "'), "a #line directive naming the source first")
check(len(lines) - 1 == len(src.split("\n")), "the line count is kept (line numbers point at the .cu)")
check('::cuda_emu::launch(::cuda_emu::config(dim3(unsigned(n), 2), 128, 0, s), "k<1, true>", k<1, true>, n,' in out,
      "a template kernel with a nested-paren config:\n" + out)
check("(n + 1) * 2);" in out, "arguments across lines kept")
check('::cuda_emu::launch(::cuda_emu::config(n, 32), "ns::other", ns::other)' in out, "a qualified kernel, no arguments")
check('::cuda_emu::launch(::cuda_emu::config(grid, kThreads, kSmem, stream), "kernel", kernel, p, std::min(a, b))' in out,
      "a kernel through a variable")
check("uint4* const smem = ::cuda_emu::dynamic_shared<uint4>();  // stages" in out, "extern __shared__ rewritten")
check("float* const buf = ::cuda_emu::dynamic_shared<float>();" in out, "__align__ dropped")
check("<<<" not in out, "no launch left")

for bad, why in [("void f() { <<<1, 2>>>(); }", "no kernel name"), ("void f() { k<<<1, 2>>>; }", "expected '('"),
                 ("void f() {\n\n k<<<1, 2(); }", "without >>>"), ("void f() { k<<<1, 2>>>(a, (b); }", "unbalanced")]:
    rc, out, err = translate(bad)
    check(rc != 0 and why in err and "k.cu:" in err, f"{bad!r} refused naming {why!r} and the file: {err!r}")
rc, out, err = translate("void f() {\n\n k<<<1, 2(); }")
check("k.cu:3:" in err, "the error names the line: " + err)
print("translate_test: ok")
