#!/usr/bin/env python3
"""Turns a CUDA source file into C++ the CUDA emulator (tests/cuda_emu) compiles with the host compiler.

Two rewrites, nothing else:
  KERNEL<<<CONFIG>>>(ARGS)          ->  ::cuda_emu::launch(::cuda_emu::config(CONFIG), "KERNEL", KERNEL, ARGS)
  extern __shared__ T name[];       ->  T* const name = ::cuda_emu::dynamic_shared<T>();
Newlines are kept and a #line directive names the original file, so compiler errors and sanitizer reports point
at the .cu file's own lines.

usage: cuda-emu-translate.py IN.cu OUT.cpp
"""
import re
import sys

EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+)\s+(\w+)\s*\[\s*\]\s*;")


def fail(path, text, pos, why):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: cuda-emu-translate: {why}")


def match_forward(text, pos, open_ch, close_ch):
    """Index just past the bracket that closes the one at text[pos]."""
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def kernel_start(text, end):
    """Start of the kernel expression that ends just before `end` (an identifier path, optionally with template
    arguments: `ns::kernel<1, kVec>`)."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if i > 0 and text[i - 1] == ">":
        depth = 0
        while i > 0:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
        if depth != 0:
            return -1
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def translate(path, text):
    out, pos = [], 0
    while True:
        at = text.find("<<<", pos)
        if at < 0:
            out.append(text[pos:])
            break
        start = kernel_start(text, at)
        if start < 0 or not text[start:at].strip():
            fail(path, text, at, "no kernel name before <<<")
        close = text.find(">>>", at)
        if close < 0:
            fail(path, text, at, "<<< without >>>")
        config = text[at + 3:close]
        paren = close + 3
        while paren < len(text) and text[paren].isspace():
            paren += 1
        if paren >= len(text) or text[paren] != "(":
            fail(path, text, close, "expected '(' after >>>")
        args_end = match_forward(text, paren, "(", ")")
        if args_end < 0:
            fail(path, text, paren, "unbalanced kernel arguments")
        args = text[paren + 1:args_end - 1]
        kernel = text[start:at].strip()
        out.append(text[pos:start])
        name = " ".join(kernel.split()).replace('"', "")
        out.append(f'::cuda_emu::launch(::cuda_emu::config({config}), "{name}", {kernel}')
        out.append(f", {args})" if args.strip() else ")")
        pos = args_end
    text = "".join(out)
    return EXTERN_SHARED.sub(lambda m: f"{m.group(1)}* const {m.group(2)} = ::cuda_emu::dynamic_shared<{m.group(1)}>();",
                             text)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    body = translate(src, text)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{src}"\n{body}')


if __name__ == "__main__":
    main()
