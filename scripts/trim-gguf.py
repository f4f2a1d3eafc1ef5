#!/usr/bin/env python3
"""Writes a copy of a GGUF model that keeps only its first N transformer layers.

    scripts/trim-gguf.py IN.gguf OUT.gguf --layers N

Everything else stays as it is: the tokenizer, the chat template, the embeddings, the final norm and the LM head,
every tensor's bytes. Only `<arch>.block_count` changes and the tensors of blocks N and above (`blk.<i>.*`) are
dropped. The result is a small model with the original's vocabulary and template: scripts/gpu-check.sh carries a
2-layer SmolLM2-135M (about 24 MB, where the whole model is 90 MB and too big to carry) to run the daemon's
end-to-end suite on the GPU machine. Its answers are not the full model's.

Standard library only. Reads GGUF versions 2 and 3 (little-endian); exits 1 with a message naming the problem on
a file it cannot read.
"""
import argparse
import re
import struct
import sys

MAGIC = b"GGUF"
# Fixed-size value types: struct format by GGUF type id (8 string and 9 array are variable-sized).
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
BLOCK = re.compile(rb"^blk\.(\d+)\.")
# ggml tensor types: (values per block, bytes per block). Those Flint reads, and the other k-quants and legacy quants.
TENSOR_TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
                10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}


class GgufError(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.data):
            raise GgufError(f"truncated at byte {self.pos}: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt, what):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what):
        return self.take(self.unpack("Q", what + " length"), what)

    def skip_value(self, vtype, what, depth=0):
        """Moves past one value of GGUF type vtype; returns it when it is a scalar or a string."""
        if vtype in SCALARS:
            return self.unpack(SCALARS[vtype], what)
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY and depth == 0:
            itype, n = self.unpack("I", what + " item type"), self.unpack("Q", what + " count")
            if itype in SCALARS:
                self.take(n * struct.calcsize("<" + SCALARS[itype]), what)
            else:
                for _ in range(n):
                    self.skip_value(itype, what, depth + 1)
            return None
        raise GgufError(f"{what}: unknown value type {vtype}")


def trim(data, layers):
    r = Reader(data)
    if r.take(4, "the magic") != MAGIC:
        raise GgufError("not a GGUF file (the magic is not 'GGUF')")
    version = r.unpack("I", "the version")
    if version not in (2, 3):
        raise GgufError(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = r.unpack("Q", "the tensor count"), r.unpack("Q", "the key count")
    kvs = []  # (key, type, start, end of the whole entry, value)
    for i in range(n_kv):
        start = r.pos
        key = r.string(f"key {i}")
        vtype = r.unpack("I", f"{key!r}'s type")
        value = r.skip_value(vtype, repr(key))
        kvs.append((key, vtype, start, r.pos, value))
    meta = {k: (t, v) for k, t, _, _, v in kvs}
    arch = meta.get(b"general.architecture", (None, None))[1]
    if not isinstance(arch, bytes):
        raise GgufError("no general.architecture string")
    count_key = arch + b".block_count"
    if count_key not in meta or meta[count_key][0] not in SCALARS:
        raise GgufError(f"no {count_key.decode()} number")
    count_type, block_count = meta[count_key]
    if not 1 <= layers <= block_count:
        raise GgufError(f"--layers {layers}: the model has {block_count} layers (1 .. {block_count})")
    alignment = meta.get(b"general.alignment", (4, 32))[1]
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise GgufError(f"general.alignment {alignment} is not a power of two")

    tensors = []  # (name, info bytes without the offset, offset, data bytes)
    for i in range(n_tensors):
        start = r.pos
        name = r.string(f"tensor {i}'s name")
        n_dims = r.unpack("I", f"{name!r}'s dims")
        if not 1 <= n_dims <= 4:
            raise GgufError(f"tensor {name!r} has {n_dims} dims (1 .. 4)")
        dims = [r.unpack("Q", f"{name!r}'s shape") for _ in range(n_dims)]
        ttype = r.unpack("I", f"{name!r}'s type")
        if ttype not in TENSOR_TYPES:
            raise GgufError(f"tensor {name!r}: unknown tensor type {ttype}")
        per_block, block_bytes = TENSOR_TYPES[ttype]
        count = 1
        for d in dims:
            count *= d
        if dims[0] % per_block:
            raise GgufError(f"tensor {name!r}: a row of {dims[0]} values is not whole blocks of {per_block}")
        info = data[start:r.pos]
        tensors.append((name, info, r.unpack("Q", f"{name!r}'s offset"), count // per_block * block_bytes))
    data_start = -(-r.pos // alignment) * alignment
    if data_start > len(data):
        raise GgufError("truncated before the tensor data")
    for name, _, off, size in tensors:
        if off % alignment:
            raise GgufError(f"tensor {name!r}: offset {off} is not a multiple of the alignment {alignment}")
        if data_start + off + size > len(data):
            raise GgufError(f"truncated: tensor {name!r}'s data [{data_start + off}, {data_start + off + size}) is "
                            f"past the end of the file ({len(data)} bytes)")

    def kept(name):
        m = BLOCK.match(name)
        return not m or int(m.group(1)) < layers

    keep = [t for t in tensors if kept(t[0])]
    out = bytearray(MAGIC + struct.pack("<IQQ", version, len(keep), n_kv))
    for key, vtype, start, end, _ in kvs:
        if key == count_key:
            out += struct.pack("<Q", len(key)) + key + struct.pack("<I" + SCALARS[count_type], count_type, layers)
        else:
            out += data[start:end]
    offset = 0
    for _, info, _, size in keep:
        out += info + struct.pack("<Q", offset)
        offset += -(-size // alignment) * alignment
    out += bytes(-len(out) % alignment)
    for _, _, off, size in keep:
        out += data[data_start + off:data_start + off + size]
        out += bytes(-len(out) % alignment)
    return bytes(out), block_count, len(tensors), len(keep)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--layers", type=int, required=True, help="how many of the first layers to keep")
    a = ap.parse_args()
    try:
        with open(a.input, "rb") as f:
            data = f.read()
        out, was, n_all, n_kept = trim(data, a.layers)
    except (OSError, GgufError) as e:
        print(f"trim-gguf: {a.input}: {e}", file=sys.stderr)
        return 1
    try:
        with open(a.output, "wb") as f:
            f.write(out)
    except OSError as e:
        print(f"trim-gguf: {a.output}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"trim-gguf: {a.output}: {a.layers} of {was} layers, {n_kept} of {n_all} tensors, "
          f"{len(out) / 1e6:.1f} MB (was {len(data) / 1e6:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
