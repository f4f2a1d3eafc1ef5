// ChatTemplate: the ChatML (SmolLM2, Qwen2.5), Qwen3, Llama-3 and DeepSeek-R1 prompt
// formats rendered in C++, byte-identical to the models' own jinja templates, and detection.
#include "model/chat_template.h"

#include <array>

#include "common/error.h"

namespace flint {

namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kThinkStart = "<think>";
constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kLlamaHeaderStart = "<|start_header_id|>";
constexpr std::string_view kLlamaHeaderEnd = "<|end_header_id|>";
constexpr std::string_view kLlamaEot = "<|eot_id|>";
constexpr std::string_view kDeepSeekUser = "<｜User｜>";
constexpr std::string_view kDeepSeekAssistant = "<｜Assistant｜>";
constexpr std::string_view kDeepSeekEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kNames = "chatml, qwen3, llama3, deepseek-r1";

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// ---- Python str operations the templates use, on UTF-8 bytes. Separators are ASCII
// or whole UTF-8 sequences, so byte-wise search gives the same result as code points.

// s.split(sep)[-1]: the text after the last sep, or all of s.
std::string_view after_last(std::string_view s, std::string_view sep) {
  size_t at = s.rfind(sep);
  return at == std::string_view::npos ? s : s.substr(at + sep.size());
}

// s.split(sep)[0]: the text before the first sep, or all of s.
std::string_view before_first(std::string_view s, std::string_view sep) {
  return s.substr(0, s.find(sep));
}

std::string_view lstrip_newlines(std::string_view s) {  // s.lstrip('\n')
  size_t begin = s.find_first_not_of('\n');
  return begin == std::string_view::npos ? std::string_view{} : s.substr(begin);
}

std::string_view rstrip_newlines(std::string_view s) {  // s.rstrip('\n')
  size_t last = s.find_last_not_of('\n');
  return last == std::string_view::npos ? std::string_view{} : s.substr(0, last + 1);
}

std::string_view strip_newlines(std::string_view s) { return rstrip_newlines(lstrip_newlines(s)); }

// Python's str.isspace(), the set jinja's |trim (str.strip()) removes.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

// The code point whose UTF-8 encoding starts at s[at]; its byte length, 0 when malformed.
size_t decode_utf8(std::string_view s, size_t at, char32_t& cp) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char lead = byte(at);
  size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || at + len > s.size()) return 0;
  cp = len == 1 ? lead : lead & (0x7f >> len);
  for (size_t i = 1; i < len; ++i) {
    if ((byte(at + i) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(at + i) & 0x3f);
  }
  return len;
}

// s|trim in jinja (Python str.strip()): Unicode whitespace off both ends. Malformed
// UTF-8 counts as text, so it is never stripped.
std::string_view python_strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    char32_t cp = 0;
    size_t len = decode_utf8(s, begin, cp);
    if (len == 0 || !is_python_space(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back up to the lead byte of the last code point
    while (start > begin && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    char32_t cp = 0;
    if (decode_utf8(s, start, cp) != end - start || !is_python_space(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

void append(std::string& out, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts) out.append(p);
}

// ---- the families. Each follows its template's branches for role/content messages;
// the comments quote the jinja they implement.

// SmolLM2 and Qwen2.5: the default system turn when the first message is not a system one,
// then '<|im_start|>' + role + '\n' + content + '<|im_end|>\n' per message.
std::string render_chatml(std::span<const ChatMessage> messages, const ChatOptions& options,
                          std::string_view default_system) {
  std::string out;
  if (messages.front().role != "system" && !default_system.empty())
    append(out, {kImStart, "system\n", default_system, kImEnd, "\n"});
  for (const ChatMessage& m : messages) append(out, {kImStart, m.role, "\n", m.content, kImEnd, "\n"});
  if (options.add_generation_prompt) append(out, {kImStart, "assistant\n"});
  return out;
}

// Qwen3: ChatML without a default system turn. An assistant turn after the last real user
// query keeps its reasoning, re-wrapped as '<think>\n' + reasoning + '\n</think>\n\n'; every
// earlier one keeps only the text after its last '</think>'.
std::string render_qwen3(std::span<const ChatMessage> messages, const ChatOptions& options) {
  const size_t n = messages.size();
  std::string out;
  if (messages.front().role == "system")
    append(out, {kImStart, "system\n", messages.front().content, kImEnd, "\n"});
  // ns.last_query_index: the last user message that is not a '<tool_response>' wrapper.
  size_t last_query = n - 1;
  for (size_t i = n; i-- > 0;) {
    std::string_view c = messages[i].content;
    bool tool_response = c.starts_with("<tool_response>") && c.ends_with("</tool_response>");
    if (messages[i].role == "user" && !tool_response) {
      last_query = i;
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      append(out, {kImStart, m.role, "\n", m.content, kImEnd, "\n"});
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      if (contains(content, kThinkEnd)) {
        // content.split('</think>')[-1].lstrip('\n') and
        // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
        reasoning = lstrip_newlines(after_last(rstrip_newlines(before_first(m.content, kThinkEnd)), kThinkStart));
        content = lstrip_newlines(after_last(m.content, kThinkEnd));
      }
      if (i > last_query && (i == n - 1 || !reasoning.empty())) {
        append(out, {kImStart, m.role, "\n", kThinkStart, "\n", strip_newlines(reasoning), "\n", kThinkEnd, "\n\n",
                     lstrip_newlines(content)});
      } else {
        append(out, {kImStart, m.role, "\n", content});
      }
      append(out, {kImEnd, "\n"});
    }
  }
  if (options.add_generation_prompt) {
    append(out, {kImStart, "assistant\n"});
    if (!options.enable_thinking) append(out, {kThinkStart, "\n\n", kThinkEnd, "\n\n"});
  }
  return out;
}

// Llama-3.2: BOS, a system header carrying the knowledge cutoff, the date and the first
// message when it is a system one, then a header per message; every content |trim-med.
std::string render_llama3(std::span<const ChatMessage> messages, const ChatOptions& options,
                          std::string_view bos) {
  std::string out(bos);
  append(out, {kLlamaHeaderStart, "system", kLlamaHeaderEnd, "\n\n", "Cutting Knowledge Date: December 2023\n",
               "Today Date: ", options.date_string, "\n\n"});
  size_t first = 0;
  if (messages.front().role == "system") {
    out.append(python_strip(messages.front().content));
    first = 1;
  }
  out.append(kLlamaEot);
  for (const ChatMessage& m : messages.subspan(first))
    append(out, {kLlamaHeaderStart, m.role, kLlamaHeaderEnd, "\n\n", python_strip(m.content), kLlamaEot});
  if (options.add_generation_prompt) append(out, {kLlamaHeaderStart, "assistant", kLlamaHeaderEnd, "\n\n"});
  return out;
}

// DeepSeek-R1: BOS + the last system message's text, then '<｜User｜>' + content and
// '<｜Assistant｜>' + content.split('</think>')[-1] + '<｜end▁of▁sentence｜>'.
std::string render_deepseek_r1(std::span<const ChatMessage> messages, const ChatOptions& options,
                               std::string_view bos, bool think_after_generation_prompt) {
  std::string_view system_prompt;
  for (const ChatMessage& m : messages)
    if (m.role == "system") system_prompt = m.content;
  std::string out(bos);
  out.append(system_prompt);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") append(out, {kDeepSeekUser, m.content});
    if (m.role == "assistant") append(out, {kDeepSeekAssistant, after_last(m.content, kThinkEnd), kDeepSeekEos});
  }
  if (options.add_generation_prompt) {
    out.append(kDeepSeekAssistant);
    if (think_after_generation_prompt) append(out, {kThinkStart, "\n"});
  }
  return out;
}

// Undoes the escapes of a jinja string literal (\n, \t, \r, \\, \', \").
std::string unescape_jinja_literal(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out.push_back(s[i]);
      continue;
    }
    char e = s[++i];
    switch (e) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case '\\': case '\'': case '"': out.push_back(e); break;
      default: out.push_back('\\'); out.push_back(e);
    }
  }
  return out;
}

// The system prompt a ChatML template writes when the conversation has none: the literal
// text of a '<|im_start|>system\n...<|im_end|>' string that holds no expression. Templates
// store the newline either escaped ("\\n", as HF JSON usually has it) or raw (SmolLM2's GGUF).
std::string default_system_prompt_of(std::string_view source) {
  const std::string marker = std::string(kImStart) + "system";
  for (size_t at = source.find(marker); at != std::string_view::npos; at = source.find(marker, at + 1)) {
    std::string_view rest = source.substr(at + marker.size());
    if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else {
      continue;
    }
    size_t end = rest.find(kImEnd);
    if (end == std::string_view::npos) continue;
    std::string_view text = rest.substr(0, end);
    if (text.empty() || text.find_first_of("'\"{}") != std::string_view::npos) continue;  // an expression
    return unescape_jinja_literal(text);
  }
  return {};
}

std::string_view arch_label(Arch arch) {
  switch (arch) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "unknown";
}

void check_roles(std::span<const ChatMessage> messages, std::string_view template_name) {
  if (messages.empty()) fail("chat template ", template_name, ": the conversation has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      fail("chat template ", template_name, ": message ", i, " has role '", role,
           "'; supported roles: system, user, assistant");
  }
}

}  // namespace

// Builds each family's fixed description; detect() adds what it reads from the source.
struct ChatTemplateBuilder {
  static ChatTemplate make(TemplateKind kind) {
    ChatTemplate t;
    t.kind_ = kind;
    switch (kind) {
      case TemplateKind::ChatML:
        t.stop_tokens_ = {"<|im_end|>", "<|endoftext|>"};
        break;
      case TemplateKind::Qwen3:
        t.think_start_ = kThinkStart;
        t.think_end_ = kThinkEnd;
        t.stop_tokens_ = {"<|im_end|>", "<|endoftext|>"};
        break;
      case TemplateKind::Llama3:
        t.bos_ = "<|begin_of_text|>";
        t.stop_tokens_ = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"};
        break;
      case TemplateKind::DeepSeekR1:
        t.think_start_ = kThinkStart;
        t.think_end_ = kThinkEnd;
        t.bos_ = "<｜begin▁of▁sentence｜>";
        t.stop_tokens_ = {std::string(kDeepSeekEos)};
        t.think_after_generation_prompt_ = true;
        break;
    }
    return t;
  }
  static void set_default_system_prompt(ChatTemplate& t, std::string prompt) {
    t.default_system_prompt_ = std::move(prompt);
  }
  static void set_think_after_generation_prompt(ChatTemplate& t, bool on) { t.think_after_generation_prompt_ = on; }
};

ChatTemplate ChatTemplate::by_name(std::string_view name) {
  if (name == "chatml") return ChatTemplateBuilder::make(TemplateKind::ChatML);
  if (name == "qwen3") return ChatTemplateBuilder::make(TemplateKind::Qwen3);
  if (name == "llama3") return ChatTemplateBuilder::make(TemplateKind::Llama3);
  if (name == "deepseek-r1") return ChatTemplateBuilder::make(TemplateKind::DeepSeekR1);
  fail("unknown chat template '", name, "'; known: ", kNames);
}

ChatTemplate ChatTemplate::detect(std::string_view source, Arch arch) {
  if (source.empty()) {
    if (arch == Arch::Qwen3) return by_name("qwen3");
    fail("the model has no chat template and its architecture (", arch_label(arch),
         ") does not settle one; choose one by name: ", kNames);
  }
  if (contains(source, kDeepSeekUser) && contains(source, kDeepSeekAssistant)) {
    ChatTemplate t = by_name("deepseek-r1");
    // Newer R1 templates open the think block in the generation prompt; older ones do not.
    ChatTemplateBuilder::set_think_after_generation_prompt(t, contains(source, "<｜Assistant｜><think>"));
    return t;
  }
  if (contains(source, kLlamaHeaderStart) && contains(source, kLlamaEot)) return by_name("llama3");
  if (contains(source, kImStart)) {
    if (contains(source, "enable_thinking") && contains(source, kThinkStart)) return by_name("qwen3");
    if (contains(source, kThinkStart))
      fail("chat template not supported (architecture ", arch_label(arch),
           "): ChatML with <think> markers but no enable_thinking switch is neither plain ChatML nor "
           "Qwen3; choose one by name: ", kNames);
    ChatTemplate t = by_name("chatml");
    ChatTemplateBuilder::set_default_system_prompt(t, default_system_prompt_of(source));
    return t;
  }
  fail("chat template not recognised (architecture ", arch_label(arch),
       "): it has none of the markers of ChatML (<|im_start|>), Llama-3 (<|start_header_id|>) or "
       "DeepSeek-R1 (<｜User｜>); choose one by name: ", kNames);
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, const ChatOptions& options) const {
  check_roles(messages, name());
  switch (kind_) {
    case TemplateKind::ChatML: return render_chatml(messages, options, default_system_prompt_);
    case TemplateKind::Qwen3: return render_qwen3(messages, options);
    case TemplateKind::Llama3: return render_llama3(messages, options, bos_);
    case TemplateKind::DeepSeekR1:
      return render_deepseek_r1(messages, options, bos_, think_after_generation_prompt_);
  }
  fail("chat template: unhandled kind ", static_cast<int>(kind_));
}

bool ChatTemplate::prompt_opens_think(const ChatOptions& options) const {
  return kind_ == TemplateKind::DeepSeekR1 && think_after_generation_prompt_ && options.add_generation_prompt;
}

std::string_view ChatTemplate::name() const {
  switch (kind_) {
    case TemplateKind::ChatML: return "chatml";
    case TemplateKind::Qwen3: return "qwen3";
    case TemplateKind::Llama3: return "llama3";
    case TemplateKind::DeepSeekR1: return "deepseek-r1";
  }
  return "unknown";
}

std::string ChatTemplate::date_string(std::chrono::year_month_day day) {
  static constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (!day.ok()) fail("date_string: invalid date");
  unsigned d = static_cast<unsigned>(day.day());
  std::string out;
  out.push_back(static_cast<char>('0' + d / 10));
  out.push_back(static_cast<char>('0' + d % 10));
  out.push_back(' ');
  out.append(kMonths[static_cast<unsigned>(day.month()) - 1]);
  out.push_back(' ');
  out.append(std::to_string(static_cast<int>(day.year())));
  return out;
}

}  // namespace flint
