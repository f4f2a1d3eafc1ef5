// The served models the request fuzzers prepare against: fixture tokenizers with
// each chat template, a small max_sequence_tokens so fit_prompt's limits are hit.
#pragma once
#include <cstddef>
#include <vector>

#include "engine/request.h"
#include "fuzz/fuzz_common.h"
#include "server/request_prep.h"

namespace flint::fuzz {

inline const std::vector<server::ServedModel>& served_models() {
  static const ChatTemplate chatml = ChatTemplate::by_name("chatml"), qwen3 = ChatTemplate::by_name("qwen3"),
                            llama3 = ChatTemplate::by_name("llama3"), deepseek = ChatTemplate::by_name("deepseek-r1");
  static const std::vector<server::ServedModel> all = [] {
    const Tokenizer& llama3_tok = *tokenizers()[0];
    const Tokenizer& qwen2_tok = *tokenizers()[1];
    auto served = [](const Tokenizer& t, const ChatTemplate& c) {
      return server::ServedModel{.tokenizer = &t, .chat_template = &c, .vocab_size = t.vocab_size(),
                                 .max_sequence_tokens = 256};
    };
    return std::vector<server::ServedModel>{served(qwen2_tok, chatml), served(qwen2_tok, qwen3),
                                            served(llama3_tok, llama3), served(qwen2_tok, deepseek)};
  }();
  return all;
}

// What an accepted request must hold whatever its bytes: the engine's own
// validate() agrees (Engine::submit runs it next), so a front end never hands the
// engine a request it refuses.
inline void check_prepared(const server::PreparedRequest& p, const server::ServedModel& model) {
  if (p.request.prompt_token_ids.empty()) invariant_failed("accepted request with an empty prompt");
  const Status s = validate(p.request, model.vocab_size, model.max_sequence_tokens);
  if (!s.ok()) invariant_failed("prepare_* accepted a request the engine refuses", s.message);
}

}  // namespace flint::fuzz
