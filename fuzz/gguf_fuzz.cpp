// GGUF bytes -> GgufFile (every count, string, array and tensor range checked), then
// what a model load reads from it: the config and the tokenizer.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A heap copy of exactly `size` bytes: ASan flags any read past the end.
  const std::vector<uint8_t> bytes(data, data + size);
  std::unique_ptr<flint::GgufFile> gguf;
  try {
    gguf = std::make_unique<flint::GgufFile>(bytes.data(), bytes.size(), "fuzz.gguf");
  } catch (const flint::Error&) {
    return 0;
  }
  // The parser's promise: every tensor's data lies inside the bytes.
  for (const flint::Tensor& t : gguf->tensors()) {
    if (t.data < bytes.data() || uint64_t(t.data - bytes.data()) > bytes.size() ||
        t.nbytes > bytes.size() - uint64_t(t.data - bytes.data()))
      flint::fuzz::invariant_failed("GGUF tensor data outside the file", t.name);
    if (gguf->find(t.name) != &t) flint::fuzz::invariant_failed("GGUF find() disagrees with tensors()", t.name);
  }
  try {
    (void)flint::config_from_gguf(*gguf);
  } catch (const flint::Error&) {
  }
  try {
    const flint::Tokenizer tok = flint::Tokenizer::from_gguf(*gguf);
    (void)tok.encode("Hello, world! 123 <|im_start|>", true, true);
  } catch (const flint::Error&) {
  }
  return 0;
}
