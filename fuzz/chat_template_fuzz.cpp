// Chat templates: detect() on arbitrary template source (GGUF tokenizer.chat_template
// and tokenizer_config.json are untrusted), then render() of arbitrary messages
// and options with each template. A conversation of known roles must render.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "model/chat_template.h"

namespace {

constexpr flint::Arch kArchs[] = {flint::Arch::Llama, flint::Arch::Qwen2, flint::Arch::Qwen3};
const char* const kRoles[] = {"system", "user", "assistant"};
const char* const kNames[] = {"chatml", "qwen3", "llama3", "deepseek-r1"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  flint::ChatTemplate tmpl = flint::ChatTemplate::by_name("chatml");
  if (in.ConsumeBool()) {
    const flint::Arch arch = in.PickValueInArray(kArchs);
    const std::string source = in.ConsumeRandomLengthString(4096);
    try {
      tmpl = flint::ChatTemplate::detect(source, arch);
    } catch (const flint::Error&) {
      return 0;
    }
  } else {
    tmpl = flint::ChatTemplate::by_name(in.PickValueInArray(kNames));
  }
  flint::ChatOptions options;
  options.add_generation_prompt = in.ConsumeBool();
  options.enable_thinking = in.ConsumeBool();
  if (in.ConsumeBool()) options.date_string = in.ConsumeRandomLengthString(32);
  std::vector<flint::ChatMessage> messages;
  bool known_roles = true;
  const int n = in.ConsumeIntegralInRange(0, 8);
  for (int i = 0; i < n; ++i) {
    flint::ChatMessage m;
    if (in.ConsumeIntegralInRange(0, 15) == 0) {
      m.role = in.ConsumeRandomLengthString(16);
      known_roles = known_roles && (m.role == "system" || m.role == "user" || m.role == "assistant");
    } else {
      m.role = in.PickValueInArray(kRoles);
    }
    m.content = in.ConsumeRandomLengthString(512);
    messages.push_back(std::move(m));
  }
  try {
    const std::string prompt = tmpl.render(messages, options);
    if (prompt.empty()) flint::fuzz::invariant_failed("render gave an empty prompt");
    (void)tmpl.prompt_opens_think(options);
  } catch (const flint::Error& e) {
    if (!messages.empty() && known_roles) flint::fuzz::invariant_failed("render refused a valid conversation", e.what());
  }
  return 0;
}
