// safetensors bytes -> parse_safetensors: the 8-byte header length, the JSON
// header, every dtype, shape and data range.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "kernels/dtype.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);  // exactly `size` bytes for ASan
  std::vector<flint::Tensor> tensors;
  try {
    tensors = flint::parse_safetensors(bytes.data(), bytes.size(), "fuzz.safetensors");
  } catch (const flint::Error&) {
    return 0;
  }
  // The parser's promises: data inside the bytes, in data order, not overlapping,
  // and nbytes = elements x dtype size.
  const uint8_t* prev_end = nullptr;
  for (const flint::Tensor& t : tensors) {
    const uint64_t offset = uint64_t(t.data - bytes.data());
    if (t.data < bytes.data() || offset > bytes.size() || t.nbytes > bytes.size() - offset)
      flint::fuzz::invariant_failed("safetensors tensor data outside the file", t.name);
    if (prev_end != nullptr && t.data < prev_end)
      flint::fuzz::invariant_failed("safetensors tensors overlap or are out of data order", t.name);
    prev_end = t.data + t.nbytes;
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) flint::fuzz::invariant_failed("safetensors negative dim", t.name);
      numel *= uint64_t(d);
    }
    const std::optional<uint64_t> expect = flint::dtype_bytes(t.dtype, numel);
    if (!expect || *expect != t.nbytes) flint::fuzz::invariant_failed("safetensors nbytes != shape x dtype", t.name);
  }
  return 0;
}
