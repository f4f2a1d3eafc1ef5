#!/usr/bin/env python3
"""Checks the launch rule of kernels/cuda/launch.cuh on every CUDA source under kernels/cuda/:
- every __global__ function's body starts with `pdl_begin();` (no global memory access may precede the
  griddepcontrol.wait of a kernel launched with programmatic dependent launch), or with
  `pdl_weights_first();` and calls `pdl_begin();` later (the weights-first form: only weights are read before it);
- no kernel is launched with <<<...>>> (every launch goes through launch_kernel, which sets the attribute).
Usage: check-kernels.py [DIR]   (default: the repository's kernels/cuda). Exit 1 with one line per violation."""
import pathlib
import re
import sys


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def function_body(text, brace):
    """The text of the function body whose opening brace is at `brace` (comments already stripped)."""
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace:i + 1]
    return text[brace:]


def violations(path):
    text = strip_comments(path.read_text())
    out = []
    line = lambda at: text.count("\n", 0, at) + 1
    for m in re.finditer(r"\b__global__\b", text):
        brace = text.find("{", m.end())
        semicolon = text.find(";", m.end())
        if brace < 0 or (0 <= semicolon < brace):
            continue  # a declaration
        head = text[m.end():brace]
        name = re.findall(r"(\w+)\s*\(", head)
        name = [n for n in name if n != "__launch_bounds__"]
        body = text[brace + 1:].lstrip()
        kernel = name[0] if name else "?"
        if body.startswith("pdl_weights_first();"):  # the weights-first form: it must still call pdl_begin
            if "pdl_begin();" not in function_body(text, brace):
                out.append(f"{path}:{line(m.start())}: kernel {kernel} starts with pdl_weights_first(); but never "
                           "calls pdl_begin();")
        elif not body.startswith("pdl_begin();"):
            out.append(f"{path}:{line(m.start())}: kernel {kernel} does not start with pdl_begin(); (or "
                       "pdl_weights_first(); ... pdl_begin();)")
    for m in re.finditer(r"<<<", text):
        out.append(f"{path}:{line(m.start())}: a <<<...>>> launch (use launch_kernel from launch.cuh)")
    return out


def main():
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent / "kernels" / "cuda"
    files = sorted(list(root.glob("*.cu")) + list(root.glob("*.cuh")))
    if not files:
        print(f"check-kernels: no CUDA sources under {root}")
        return 1
    bad = [v for f in files for v in violations(f)]
    for v in bad:
        print(v)
    kernels = sum(len(re.findall(r"\b__global__\b", strip_comments(f.read_text()))) for f in files)
    print(f"check-kernels: {len(files)} files, {kernels} __global__ functions, {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
