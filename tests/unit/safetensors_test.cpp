// SafetensorsSource and parse_safetensors: single and sharded files written here,
// each dtype, the tiny fixtures, and broken files that must fail with a message.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "common/error.h"

namespace flint {
namespace {

namespace fs = std::filesystem;

using Bytes = std::vector<uint8_t>;

// A directory under the temp directory, removed with its contents by the destructor.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("flint_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, const Bytes& bytes) const {
    const fs::path p = path_ / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p.string();
  }
  std::string write(const std::string& name, const std::string& text) const {
    return write(name, Bytes(text.begin(), text.end()));
  }

 private:
  fs::path path_;
};

// 8-byte little-endian header length, the header text, then the data.
Bytes file_bytes(const std::string& header, const Bytes& data, std::optional<uint64_t> header_len = std::nullopt) {
  Bytes out(8 + header.size() + data.size());
  uint64_t n = header_len.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  Bytes data;
};

// A well-formed file holding `entries` back to back, with a __metadata__ block.
Bytes make_file(const std::vector<Entry>& entries) {
  std::ostringstream h;
  h << R"({"__metadata__":{"format":"pt"})";
  Bytes data;
  for (const Entry& e : entries) {
    h << ",\"" << e.name << "\":{\"dtype\":\"" << e.dtype << "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) h << (i ? "," : "") << e.shape[i];
    h << "],\"data_offsets\":[" << data.size() << "," << data.size() + e.data.size() << "]}";
    data.resize(data.size() + e.data.size());
    if (!e.data.empty()) std::memcpy(data.data() + data.size() - e.data.size(), e.data.data(), e.data.size());
  }
  h << "}";
  std::string header = h.str();
  while (header.size() % 8 != 0) header += ' ';  // the padding the format allows
  return file_bytes(header, data);
}

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 7);
  return b;
}

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

using test::expect_error;

void expect_parse_error(const Bytes& file, std::initializer_list<std::string> parts) {
  expect_error([&] { parse_safetensors(file.data(), file.size(), "test.safetensors"); }, parts);
}

TEST(SafetensorsTest, ReadsEachDtypeInDataOrder) {
  TempDir dir;
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f};
  const std::string path = dir.write("model.safetensors", make_file({
      {"a.weight", "F32", {2, 3}, f32_bytes(w)},
      {"b.half", "F16", {4}, {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00, 0xff, 0x7b}},  // 1, -2, 0, 65504
      {"c.bf16", "BF16", {2, 2}, {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf}},
      {"d.scalar", "F32", {}, f32_bytes({42.0f})},
      {"e.empty", "F16", {0, 5}, {}},
  }));
  SafetensorsSource src(path);
  EXPECT_EQ(src.num_shards(), 1u);
  ASSERT_EQ(src.tensors().size(), 5u);
  EXPECT_EQ(src.tensors()[0].name, "a.weight");
  EXPECT_EQ(src.tensors()[1].name, "b.half");
  EXPECT_EQ(src.find("__metadata__"), nullptr);
  EXPECT_EQ(src.find("missing"), nullptr);

  const Tensor& a = src.get("a.weight");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.rows(), 2);
  EXPECT_EQ(a.cols(), 3);
  std::vector<float> back(6);
  std::memcpy(back.data(), a.data, 24);
  EXPECT_EQ(back, w);

  const Tensor& b = src.get("b.half");
  EXPECT_EQ(b.dtype, DType::F16);
  EXPECT_EQ(b.nbytes, 8u);
  EXPECT_EQ(b.data[1], 0x3c);
  const Tensor& c = src.get("c.bf16");
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(c.data[7], 0xbf);
  EXPECT_EQ(src.get("d.scalar").numel(), 1);
  EXPECT_EQ(src.get("e.empty").nbytes, 0u);

  // Data order, not name order.
  TempDir dir2;
  Bytes data = pattern(12, 1);
  const std::string swapped = dir2.write(
      "x.safetensors",
      file_bytes(R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data));
  SafetensorsSource s2(swapped);
  EXPECT_EQ(s2.tensors()[0].name, "z");
  EXPECT_EQ(s2.tensors()[1].name, "a");
  EXPECT_EQ(s2.get("a").data[0], data[4]);
}

TEST(SafetensorsTest, OpensADirectoryHoldingModelSafetensors) {
  TempDir dir;
  dir.write("model.safetensors", make_file({{"t", "BF16", {3}, pattern(6, 3)}}));
  SafetensorsSource src(dir.path().string());
  EXPECT_EQ(src.get("t").shape, (std::vector<int64_t>{3}));
}

TEST(SafetensorsTest, ReadsShardedModelThroughItsIndex) {
  TempDir dir;
  dir.write("model-00001-of-00002.safetensors",
            make_file({{"embed", "F32", {4, 2}, pattern(32, 1)}, {"norm", "F16", {2}, pattern(4, 2)}}));
  dir.write("model-00002-of-00002.safetensors", make_file({{"head", "BF16", {4, 2}, pattern(16, 3)}}));
  dir.write("model.safetensors.index.json", std::string(R"({"metadata":{"total_size":52},"weight_map":{
      "embed":"model-00001-of-00002.safetensors","norm":"model-00001-of-00002.safetensors",
      "head":"model-00002-of-00002.safetensors"}})"));
  for (const std::string& path :
       {dir.path().string(), (dir.path() / "model.safetensors.index.json").string()}) {
    SafetensorsSource src(path);
    EXPECT_EQ(src.num_shards(), 2u);
    ASSERT_EQ(src.tensors().size(), 3u);
    EXPECT_EQ(src.tensors()[2].name, "head");
    EXPECT_EQ(src.get("embed").dtype, DType::F32);
    EXPECT_EQ(src.get("norm").dtype, DType::F16);
    EXPECT_EQ(src.get("head").dtype, DType::BF16);
    EXPECT_EQ(src.get("head").data[0], pattern(16, 3)[0]);
  }
}

TEST(SafetensorsTest, ReadsTheTinyFixtures) {
  SafetensorsSource qwen3(FLINT_TEST_DATA_DIR "/tiny-qwen3");
  EXPECT_EQ(qwen3.num_shards(), 4u);
  EXPECT_EQ(qwen3.get("model.layers.1.self_attn.q_proj.weight").shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(qwen3.get("lm_head.weight").dtype, DType::F32);
  SafetensorsSource qwen2(FLINT_TEST_DATA_DIR "/tiny-qwen2/model.safetensors");
  EXPECT_EQ(qwen2.get("model.embed_tokens.weight").dtype, DType::BF16);
  EXPECT_EQ(qwen2.get("model.layers.0.self_attn.q_proj.bias").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(qwen2.find("lm_head.weight"), nullptr);  // tied
}

TEST(SafetensorsTest, RefusesFilesTooShortForTheHeaderLength) {
  expect_parse_error(Bytes{1, 0, 0}, {"test.safetensors", "too short"});
  expect_parse_error(Bytes{}, {"too short"});
}

TEST(SafetensorsTest, RefusesHeaderLengthPastEndOfFile) {
  expect_parse_error(file_bytes("{}", {}, 1000), {"header length 1000", "past the end", "10 bytes"});
  expect_parse_error(file_bytes("{}", {}, ~uint64_t{0}), {"header length 18446744073709551615"});
  expect_parse_error(file_bytes("{}", {}, ~uint64_t{0} - 3), {"past the end"});
}

TEST(SafetensorsTest, RefusesHeaderThatIsNotAJsonObject) {
  expect_parse_error(file_bytes("{\"a\": [1, 2", {}), {"not valid JSON"});
  expect_parse_error(file_bytes("[1, 2]", {}), {"not a JSON object"});
  expect_parse_error(file_bytes("", {}), {"not valid JSON"});
  expect_parse_error(file_bytes(R"({"t": 5})", {}), {"tensor t", "not an object"});
}

TEST(SafetensorsTest, RefusesOffsetsPastTheData) {
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", pattern(12, 0)),
                     {"tensor w", "data_offsets [0, 16]", "past the end of the data (12 bytes)"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,)"
                                R"(18446744073709551615]}})", pattern(12, 0)),
                     {"tensor w", "past the end"});
}

TEST(SafetensorsTest, RefusesOffsetsThatDisagreeWithTheShape) {
  expect_parse_error(file_bytes(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]}})", pattern(16, 0)),
                     {"tensor w", "hold 16 bytes", "shape [2, 3] of BF16 needs 12"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,4]}})", pattern(16, 0)),
                     {"tensor w", "reversed"});
  expect_parse_error(
      file_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", pattern(4, 0)),
      {"tensor w", "too many elements"});
  expect_parse_error(
      file_bytes(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", pattern(4, 0)),
      {"tensor w", "overflows"});
}

TEST(SafetensorsTest, RefusesUnsupportedDtypesNamingTheTensor) {
  expect_parse_error(file_bytes(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", pattern(8, 0)),
                     {"tensor ids", "dtype I64 is not supported", "F32, F16, BF16"});
  expect_parse_error(file_bytes(R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", pattern(4, 0)),
                     {"tensor q", "F8_E4M3"});
  expect_parse_error(file_bytes(R"({"q":{"dtype":"WHAT","shape":[4],"data_offsets":[0,4]}})", pattern(4, 0)),
                     {"tensor q", "WHAT"});
}

TEST(SafetensorsTest, RefusesMalformedEntries) {
  expect_parse_error(file_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", pattern(4, 0)), {"tensor w", "dtype"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", pattern(4, 0)),
                     {"tensor w", "non-negative"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", pattern(4, 0)),
                     {"tensor w", "non-negative integers"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", pattern(4, 0)),
                     {"tensor w", "shape"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", pattern(4, 0)),
                     {"tensor w", "data_offsets"});
  expect_parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1]}})", pattern(4, 0)), {"tensor w", "data_offsets"});
}

TEST(SafetensorsTest, RefusesOverlappingTensorsNamingBoth) {
  expect_parse_error(file_bytes(R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                pattern(12, 0)),
                     {"tensor second", "overlaps tensor first"});
  // A tensor inside a longer one, after a short one ends.
  expect_parse_error(file_bytes(R"({"long":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                R"("short":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                R"("inner":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                pattern(16, 0)),
                     {"overlaps tensor long"});
  // Empty tensors overlap nothing.
  Bytes ok = file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                        pattern(8, 0));
  EXPECT_EQ(parse_safetensors(ok.data(), ok.size(), "ok").size(), 2u);
}

TEST(SafetensorsTest, RefusesAMissingShard) {
  TempDir dir;
  dir.write("model-00001-of-00002.safetensors", make_file({{"embed", "F32", {2}, pattern(8, 1)}}));
  dir.write("model.safetensors.index.json",
            std::string(R"({"weight_map":{"embed":"model-00001-of-00002.safetensors",)"
                        R"("head":"model-00002-of-00002.safetensors"}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); },
               {"model.safetensors.index.json", "shard model-00002-of-00002.safetensors is missing"});
}

TEST(SafetensorsTest, RefusesATensorAbsentFromTheShardItsIndexNames) {
  TempDir dir;
  dir.write("a.safetensors", make_file({{"x", "F32", {2}, pattern(8, 1)}}));
  dir.write("b.safetensors", make_file({{"y", "F32", {2}, pattern(8, 2)}}));
  dir.write("model.safetensors.index.json",
            std::string(R"({"weight_map":{"x":"b.safetensors","y":"b.safetensors","z":"a.safetensors"}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"tensor x", "places it in b.safetensors"});
}

TEST(SafetensorsTest, RefusesATensorInTwoShards) {
  TempDir dir;
  dir.write("a.safetensors", make_file({{"x", "F32", {2}, pattern(8, 1)}}));
  dir.write("b.safetensors", make_file({{"x", "F32", {2}, pattern(8, 2)}}));
  dir.write("model.safetensors.index.json", std::string(R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"b.safetensors", "tensor x", "earlier shard"});
}

TEST(SafetensorsTest, RefusesBrokenIndexes) {
  TempDir dir;
  dir.write("model.safetensors.index.json", std::string("{\"weight_map\": "));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"index.json", "not a JSON object"});
  dir.write("model.safetensors.index.json", std::string(R"({"weight_map":{}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"weight_map"});
  dir.write("model.safetensors.index.json", std::string(R"({"weight_map":{"x":"../outside.safetensors"}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"tensor x", "not a path inside"});
  dir.write("model.safetensors.index.json", std::string(R"({"weight_map":{"x":"/etc/passwd"}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"tensor x", "not a path inside"});
  dir.write("model.safetensors.index.json", std::string(R"({"weight_map":{"x":7}})"));
  expect_error([&] { SafetensorsSource src(dir.path().string()); }, {"tensor x", "not a string"});
}

TEST(SafetensorsTest, RefusesMissingFilesAndEmptyDirectories) {
  TempDir dir;
  expect_error([&] { SafetensorsSource src(dir.path().string()); },
               {"neither model.safetensors nor model.safetensors.index.json"});
  expect_error([&] { SafetensorsSource src((dir.path() / "nope.safetensors").string()); }, {"nope.safetensors"});
}

// Every truncation and many random byte edits of a valid file either parse or
// throw flint::Error; nothing else escapes and nothing reads out of bounds
// (run under FLINT_SANITIZE to check the latter).
TEST(SafetensorsTest, SurvivesTruncationAndRandomCorruption) {
  const Bytes good = make_file({{"a", "F32", {2, 3}, pattern(24, 1)},
                                {"b", "BF16", {5}, pattern(10, 2)},
                                {"c", "F16", {1, 1, 3}, pattern(6, 3)}});
  ASSERT_EQ(parse_safetensors(good.data(), good.size(), "good").size(), 3u);
  auto try_parse = [](const Bytes& b) {
    try {
      std::vector<Tensor> ts = parse_safetensors(b.data(), b.size(), "fuzz");
      for (const Tensor& t : ts) {
        ASSERT_GE(t.data, b.data());
        ASSERT_LE(t.data + t.nbytes, b.data() + b.size());
      }
    } catch (const Error&) {
    }
  };
  for (size_t n = 0; n < good.size(); ++n) try_parse(Bytes(good.begin(), good.begin() + std::ptrdiff_t(n)));
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 3000; ++iter) {
    Bytes b = good;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % b.size();
      // Bias edits towards digits and JSON punctuation inside the header.
      static const char kChars[] = "0123456789[]{}\",:-e.FBI ";
      b[pos] = rng() % 2 ? uint8_t(kChars[rng() % (sizeof(kChars) - 1)]) : uint8_t(rng());
    }
    try_parse(b);
  }
}

}  // namespace
}  // namespace flint
