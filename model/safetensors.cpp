// Reads safetensors files (single or sharded) into Tensors that point into the
// mapped files; the header is untrusted input, so every size is checked.
#include "model/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/checked.h"
#include "common/error.h"

namespace flint {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The safetensors reference implementation refuses headers over 100 MB.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

std::optional<DType> dtype_from_name(std::string_view s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  return std::nullopt;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// One header entry {"dtype": ..., "shape": [...], "data_offsets": [b, e]} -> Tensor,
// with data_offsets checked against the data section [base, base + data_size).
Tensor parse_entry(const std::string& name, const json& info, const uint8_t* base, uint64_t data_size,
                   std::string_view label, uint64_t& begin_out) {
  auto where = [&]() { return std::string(label) + ": tensor " + name; };
  if (!info.is_object()) fail(where(), ": header entry is not an object");

  auto dt = info.find("dtype");
  if (dt == info.end() || !dt->is_string()) fail(where(), ": missing string \"dtype\"");
  const std::string dtype_name = dt->get<std::string>();
  std::optional<DType> dtype = dtype_from_name(dtype_name);
  if (!dtype) fail(where(), ": dtype ", dtype_name, " is not supported (Flint reads F32, F16, BF16)");

  auto sh = info.find("shape");
  if (sh == info.end() || !sh->is_array()) fail(where(), ": missing array \"shape\"");
  Tensor t;
  t.name = name;
  t.dtype = *dtype;
  uint64_t numel = 1;
  for (const json& d : *sh) {
    if (!d.is_number_unsigned()) fail(where(), ": shape ", sh->dump(), " must hold non-negative integers");
    const uint64_t dim = d.get<uint64_t>();
    std::optional<uint64_t> n = checked_mul(numel, dim);
    if (dim > uint64_t(std::numeric_limits<int64_t>::max()) || !n ||
        *n > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(where(), ": shape ", sh->dump(), " has too many elements");
    numel = *n;
    t.shape.push_back(static_cast<int64_t>(dim));
  }
  std::optional<uint64_t> nbytes = dtype_bytes(t.dtype, numel);
  if (!nbytes) fail(where(), ": shape ", shape_string(t.shape), " of ", dtype_name, " overflows a byte count");

  auto off = info.find("data_offsets");
  if (off == info.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail(where(), ": \"data_offsets\" must be two non-negative integers");
  const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
  if (begin > end) fail(where(), ": data_offsets [", begin, ", ", end, "] are reversed");
  if (end > data_size)
    fail(where(), ": data_offsets [", begin, ", ", end, "] run past the end of the data (", data_size, " bytes)");
  if (end - begin != *nbytes)
    fail(where(), ": data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes but shape ",
         shape_string(t.shape), " of ", dtype_name, " needs ", *nbytes);
  t.data = base + begin;
  t.nbytes = *nbytes;
  begin_out = begin;
  return t;
}

// A shard name from an index must stay inside the model's directory.
bool is_safe_relative(const std::string& file) {
  fs::path p(file);
  if (file.empty() || p.is_absolute() || p.has_root_name()) return false;
  for (const fs::path& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

std::vector<Tensor> parse_safetensors(const uint8_t* data, size_t size, std::string_view label) {
  const uint64_t file_size = size;
  if (file_size < 8) fail(label, ": ", file_size, " bytes, too short for the 8-byte header length");
  const uint64_t header_len = read_le64(data);
  std::optional<uint64_t> header_end = checked_add(8, header_len);
  if (!header_end || *header_end > file_size)
    fail(label, ": header length ", header_len, " runs past the end of the file (", file_size, " bytes)");
  if (header_len > kMaxHeaderBytes) fail(label, ": header length ", header_len, " is over the 100 MB limit");

  const char* text = reinterpret_cast<const char*>(data + 8);
  json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(label, ": header is not valid JSON");
  if (!header.is_object()) fail(label, ": header is not a JSON object");

  const uint8_t* base = data + *header_end;
  const uint64_t data_size = file_size - *header_end;
  std::vector<Tensor> tensors;
  std::vector<uint64_t> begins;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    uint64_t begin = 0;
    tensors.push_back(parse_entry(name, info, base, data_size, label, begin));
    begins.push_back(begin);
  }

  // Data order; then no two non-empty ranges may share a byte.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return begins[a] < begins[b]; });
  std::vector<Tensor> sorted;
  sorted.reserve(tensors.size());
  const Tensor* last = nullptr;  // the non-empty tensor reaching furthest so far
  uint64_t last_end = 0;
  for (size_t i : order) {
    const Tensor& t = tensors[i];
    if (t.nbytes > 0) {
      if (last != nullptr && begins[i] < last_end)
        fail(label, ": tensor ", t.name, " (bytes [", begins[i], ", ", begins[i] + t.nbytes, ")) overlaps tensor ",
             last->name, " (ending at byte ", last_end, ")");
      if (begins[i] + t.nbytes > last_end) {
        last_end = begins[i] + t.nbytes;
        last = &t;
      }
    }
    sorted.push_back(t);
  }
  return sorted;
}

SafetensorsSource::SafetensorsSource(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json", ec))
      open_index((dir / "model.safetensors.index.json").string());
    else if (fs::exists(dir / "model.safetensors", ec))
      open_single((dir / "model.safetensors").string());
    else
      fail(path, ": holds neither model.safetensors nor model.safetensors.index.json");
  } else if (path.ends_with(".index.json")) {
    open_index(path);
  } else {
    open_single(path);
  }
}

const Tensor* SafetensorsSource::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsSource::open_single(const std::string& path) { add_shard(path); }

size_t SafetensorsSource::add_shard(const std::string& path) {
  shards_.push_back(std::make_unique<MappedFile>(path));
  const MappedFile& file = *shards_.back();
  const size_t first = tensors_.size();
  for (Tensor& t : parse_safetensors(file.data(), file.size(), path)) {
    if (index_.contains(t.name)) fail(path, ": tensor ", t.name, " also appears in an earlier shard");
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  return first;
}

void SafetensorsSource::open_index(const std::string& index_path) {
  json index;
  {
    MappedFile file(index_path);
    const char* text = reinterpret_cast<const char*>(file.data());
    index = json::parse(text, text + file.size(), nullptr, /*allow_exceptions=*/false);
  }
  if (index.is_discarded() || !index.is_object()) fail(index_path, ": not a JSON object");
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object() || map_it->empty())
    fail(index_path, ": missing or empty \"weight_map\" object");
  const json& weight_map = *map_it;

  std::set<std::string> files;
  for (const auto& [name, file] : weight_map.items()) {
    if (!file.is_string()) fail(index_path, ": tensor ", name, ": shard name is not a string");
    const std::string f = file.get<std::string>();
    if (!is_safe_relative(f)) fail(index_path, ": tensor ", name, ": shard ", f, " is not a path inside the model directory");
    files.insert(f);
  }

  const fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, std::pair<size_t, size_t>> shard_range;  // file -> [first, last) tensor
  for (const std::string& f : files) {
    const std::string shard_path = (dir / f).string();
    std::error_code ec;
    if (!fs::is_regular_file(shard_path, ec)) fail(index_path, ": shard ", f, " is missing (looked for ", shard_path, ")");
    const size_t first = add_shard(shard_path);
    shard_range[f] = {first, tensors_.size()};
  }

  for (const auto& [name, file] : weight_map.items()) {
    const std::string f = file.get<std::string>();
    auto it = index_.find(name);
    auto [first, last] = shard_range.at(f);
    if (it == index_.end() || it->second < first || it->second >= last)
      fail(index_path, ": tensor ", name, ": the index places it in ", f, ", which does not hold it");
  }
}

}  // namespace flint
