// Tests for model/gguf: metadata round trips of every type, tensor infos and
// layout, the real SmolLM2 file, and broken files that must give a clear error.
#include "model/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/quant.h"
#include "tests/unit/gguf_writer.h"

namespace flint {
namespace {

using test::GgufWriter;
using test::TempFile;

// The flint::Error message that opening `bytes` gives, or "" when it opens.
std::string open_error(const std::vector<uint8_t>& bytes) {
  TempFile f(bytes);
  try {
    GgufFile g(f.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
std::string open_error(const GgufWriter& w) { return open_error(w.build()); }

#define EXPECT_ERROR_HAS(msg, part) EXPECT_NE(std::string(msg).find(part), std::string::npos) << "message: " << (msg)

// A small valid file with metadata of several kinds and two tensors.
GgufWriter sample_writer(uint32_t version = 3) {
  GgufWriter w(version);
  w.add_string("general.architecture", "llama")
      .add_u32("llama.block_count", 2)
      .add_f32("llama.rope.freq_base", 10000.0f)
      .add_bool("tokenizer.ggml.add_bos_token", true)
      .add_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "hello", ""})
      .add_i32_array("tokenizer.ggml.token_type", {3, 3, 1, 1});
  w.add_tensor_f32("output_norm.weight", {4}, {1.0f, 2.0f, 3.0f, 4.0f});
  std::vector<uint8_t> q8(2 * 34, 0);  // two Q8_0 rows of 32: d = 1, qs = row index
  for (int r = 0; r < 2; ++r) {
    q8[r * 34 + 1] = 0x3C;
    for (int i = 0; i < 32; ++i) q8[r * 34 + 2 + i] = uint8_t(r + 1);
  }
  w.add_tensor("token_embd.weight", DType::Q8_0, {2, 32}, q8);
  return w;
}

// ---- well-formed files

TEST(GgufRead, RoundTripsEveryScalarType) {
  GgufWriter w;
  w.add_u8("u8", 255).add_i8("i8", -128).add_u16("u16", 65535).add_i16("i16", -32768);
  w.add_u32("u32", 4000000000u).add_i32("i32", -2000000000).add_u64("u64", 1ULL << 62);
  w.add_u64("u64max", std::numeric_limits<uint64_t>::max());
  w.add_i64("i64", std::numeric_limits<int64_t>::min()).add_f32("f32", 0.1f).add_f64("f64", 1e300);
  w.add_bool("yes", true).add_bool("no", false).add_string("s", std::string("a\0b", 3));
  w.add_string("empty", "");
  TempFile f = w.write_temp();
  GgufFile g(f.path());
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.metadata().size(), 15u);
  EXPECT_EQ(g.get_int("u8"), 255);
  EXPECT_EQ(g.get_int("i8"), -128);
  EXPECT_EQ(g.get_int("u16"), 65535);
  EXPECT_EQ(g.get_int("i16"), -32768);
  EXPECT_EQ(g.get_int("u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("i32"), -2000000000);
  EXPECT_EQ(g.get_int("u64"), int64_t(1) << 62);
  EXPECT_EQ(g.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(g.get_float("f32"), double(0.1f));
  EXPECT_EQ(g.get_float("f64"), 1e300);
  EXPECT_EQ(g.get_float("u32"), 4e9);  // integers read as floats too
  EXPECT_EQ(g.get_bool("yes"), true);
  EXPECT_EQ(g.get_bool("no"), false);
  EXPECT_EQ(g.get_string("s"), std::string("a\0b", 3));
  EXPECT_EQ(g.get_string("empty"), "");
  EXPECT_EQ(g.find_value("u16")->type, GgufType::UINT16);
  EXPECT_EQ(std::get<uint64_t>(g.find_value("u64max")->value), std::numeric_limits<uint64_t>::max());
  try {
    (void)g.get_int("u64max");
    ADD_FAILURE() << "uint64 max read as int64";
  } catch (const Error& e) {
    EXPECT_ERROR_HAS(e.what(), "key u64max: value 18446744073709551615 does not fit in int64");
  }
  EXPECT_EQ(g.get_int("absent"), std::nullopt);
  EXPECT_FALSE(g.has("absent"));
  EXPECT_TRUE(g.tensors().empty());
}

TEST(GgufRead, RoundTripsArraysOfEveryType) {
  GgufWriter w;
  w.add_array<int>("a.u8", GgufType::UINT8, {0, 255});
  w.add_array<int>("a.i8", GgufType::INT8, {-128, 127});
  w.add_array<int>("a.u16", GgufType::UINT16, {1, 65535});
  w.add_array<int>("a.i16", GgufType::INT16, {-5, 5});
  w.add_array<uint32_t>("a.u32", GgufType::UINT32, {7, 4000000000u});
  w.add_i32_array("a.i32", {-1, 0, 1});
  w.add_array<uint64_t>("a.u64", GgufType::UINT64, {1ULL << 40});
  w.add_array<int64_t>("a.i64", GgufType::INT64, {-(int64_t(1) << 40)});
  w.add_f32_array("a.f32", {0.5f, -1.25f});
  w.add_array<double>("a.f64", GgufType::FLOAT64, {3.5, 1e-300});
  w.add_array<bool>("a.bool", GgufType::BOOL, {true, false, true});
  w.add_string_array("a.str", {"x", "", "longer string", std::string("\xE2\x96\x81hi")});
  w.add_string_array("a.empty", {});
  TempFile f = w.write_temp();
  GgufFile g(f.path());
  EXPECT_EQ(g.get_int_array("a.u8"), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(g.get_int_array("a.i8"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(g.get_int_array("a.u16"), (std::vector<int64_t>{1, 65535}));
  EXPECT_EQ(g.get_int_array("a.i16"), (std::vector<int64_t>{-5, 5}));
  EXPECT_EQ(g.get_int_array("a.u32"), (std::vector<int64_t>{7, 4000000000LL}));
  EXPECT_EQ(g.get_int_array("a.i32"), (std::vector<int64_t>{-1, 0, 1}));
  EXPECT_EQ(g.get_int_array("a.u64"), (std::vector<int64_t>{int64_t(1) << 40}));
  EXPECT_EQ(g.get_int_array("a.i64"), (std::vector<int64_t>{-(int64_t(1) << 40)}));
  EXPECT_EQ(g.get_float_array("a.f32"), (std::vector<double>{0.5, -1.25}));
  EXPECT_EQ(g.get_float_array("a.f64"), (std::vector<double>{3.5, 1e-300}));
  EXPECT_EQ(g.get_float_array("a.i32"), (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(std::get<std::vector<bool>>(g.find_value("a.bool")->value), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(g.get_string_array("a.str"),
            (std::vector<std::string>{"x", "", "longer string", "\xE2\x96\x81hi"}));
  EXPECT_TRUE(g.get_string_array("a.empty").empty());
  EXPECT_EQ(g.find_value("a.empty")->array_type, GgufType::STRING);
  EXPECT_EQ(g.find_value("a.u16")->type, GgufType::ARRAY);
  EXPECT_EQ(g.find_value("a.u16")->array_type, GgufType::UINT16);
  EXPECT_TRUE(g.get_string_array("absent").empty());
}

class GgufVersion : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufVersion, ReadsMetadataAndTensors) {
  TempFile f = sample_writer(GetParam()).write_temp();
  GgufFile g(f.path());
  EXPECT_EQ(g.version(), GetParam());
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.require_string("general.architecture"), "llama");
  EXPECT_EQ(g.require_int("llama.block_count"), 2);
  EXPECT_EQ(g.get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_EQ(g.get_bool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"<s>", "</s>", "hello", ""}));
  EXPECT_EQ(g.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{3, 3, 1, 1}));

  ASSERT_EQ(g.tensors().size(), 2u);
  EXPECT_EQ(g.tensors()[0].name, "output_norm.weight");  // file order
  const Tensor& norm = g.get("output_norm.weight");
  EXPECT_EQ(norm.dtype, DType::F32);
  EXPECT_EQ(norm.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(norm.nbytes, 16u);
  float values[4];
  std::memcpy(values, norm.data, 16);
  EXPECT_EQ(values[3], 4.0f);

  const Tensor& embd = g.get("token_embd.weight");
  EXPECT_EQ(embd.dtype, DType::Q8_0);
  EXPECT_EQ(embd.shape, (std::vector<int64_t>{2, 32}));  // GGUF dims were {32, 2}
  EXPECT_EQ(embd.rows(), 2);
  EXPECT_EQ(embd.row_bytes(), 34u);
  float row[32];
  cpu::dequantize_row(embd.dtype, embd.data + embd.row_bytes(), row, 32);
  EXPECT_EQ(row[0], 2.0f);
  EXPECT_EQ(g.find("missing"), nullptr);
  EXPECT_THROW(g.get("missing"), Error);
}

INSTANTIATE_TEST_SUITE_P(GgufV2AndV3, GgufVersion, ::testing::Values(2u, 3u));

TEST(GgufRead, ParsesCallerOwnedBytesLikeAFile) {
  const std::vector<uint8_t> bytes = sample_writer(3).build();
  GgufFile g(bytes.data(), bytes.size(), "in-memory.gguf");
  EXPECT_EQ(g.path(), "in-memory.gguf");
  EXPECT_EQ(g.require_string("general.architecture"), "llama");
  const Tensor& norm = g.get("output_norm.weight");
  EXPECT_GE(norm.data, bytes.data());  // tensor data points into the caller's bytes
  EXPECT_LE(norm.data + norm.nbytes, bytes.data() + bytes.size());
  float values[4];
  std::memcpy(values, norm.data, 16);
  EXPECT_EQ(values[3], 4.0f);
  try {
    GgufFile truncated(bytes.data(), bytes.size() - 1, "in-memory.gguf");
    ADD_FAILURE() << "a truncated buffer parsed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in-memory.gguf: tensor token_embd.weight"), std::string::npos) << e.what();
  }
}

TEST(GgufRead, HonoursCustomAlignment) {
  for (uint32_t align : {1u, 8u, 64u, 4096u}) {
    GgufWriter w;
    w.add_u32("general.alignment", align).add_string("pad", "xyz");
    w.add_tensor_f32("a", {3}, {1, 2, 3});  // 12 bytes: b must be padded to `align`
    w.add_tensor_f32("b", {2, 2}, {5, 6, 7, 8});
    TempFile f = w.write_temp();
    GgufFile g(f.path());
    EXPECT_EQ(g.alignment(), align);
    const Tensor& b = g.get("b");
    const auto b_off = uint64_t(b.data - g.get("a").data);
    EXPECT_EQ(b_off % align, 0u) << align;
    EXPECT_EQ(b_off, align >= 12 ? align : (12 + align - 1) / align * align);
    float v;
    std::memcpy(&v, b.data + 12, 4);
    EXPECT_EQ(v, 8.0f);
  }
}

TEST(GgufRead, MapsEveryReadableGgmlType) {
  const std::pair<uint32_t, DType> ids[] = {{0, DType::F32},   {1, DType::F16},   {2, DType::Q4_0},
                                            {3, DType::Q4_1},  {8, DType::Q8_0},  {12, DType::Q4_K},
                                            {14, DType::Q6_K}, {30, DType::BF16}};
  GgufWriter w;
  for (auto [id, t] : ids) {
    const DTypeInfo info = dtype_info(t);
    w.add_tensor_raw(std::string(info.name), id, {uint64_t(info.block_size), 2},
                     std::vector<uint8_t>(2 * size_t(info.block_bytes), 0));
    EXPECT_EQ(dtype_from_ggml_type(id), t);
    EXPECT_EQ(ggml_type_of(t), id);
  }
  TempFile f = w.write_temp();
  GgufFile g(f.path());
  for (auto [id, t] : ids) {
    const Tensor& tensor = g.get(dtype_info(t).name);
    EXPECT_EQ(tensor.dtype, t);
    EXPECT_EQ(tensor.nbytes, 2u * uint64_t(dtype_info(t).block_bytes));
    EXPECT_EQ(tensor.shape, (std::vector<int64_t>{2, dtype_info(t).block_size}));
  }
}

// ---- the real model

TEST(GgufRead, OpensSmolLM2) {
  const std::string path = std::string(FLINT_MODELS_DIR) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (scripts/ fetches it)";
  GgufFile g(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.require_string("general.architecture"), "llama");
  EXPECT_EQ(g.require_int("llama.block_count"), 30);
  EXPECT_EQ(g.require_int("llama.embedding_length"), 576);
  EXPECT_EQ(g.require_int("llama.attention.head_count_kv"), 3);
  EXPECT_NEAR(*g.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.merges").size(), 48900u);
  EXPECT_EQ(g.get_bool("tokenizer.ggml.add_bos_token"), false);

  ASSERT_EQ(g.tensors().size(), 272u);
  std::map<DType, int> counts;
  for (const Tensor& t : g.tensors()) ++counts[t.dtype];
  EXPECT_EQ(counts[DType::Q4_1], 210);
  EXPECT_EQ(counts[DType::F32], 61);
  EXPECT_EQ(counts[DType::Q8_0], 1);

  const Tensor& embd = g.get("token_embd.weight");
  EXPECT_EQ(embd.dtype, DType::Q8_0);
  EXPECT_EQ(embd.shape, (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(g.get("blk.0.ffn_down.weight").shape, (std::vector<int64_t>{576, 1536}));
  EXPECT_EQ(g.get("blk.0.ffn_gate.weight").shape, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(g.get("blk.29.attn_k.weight").shape, (std::vector<int64_t>{192, 576}));
  EXPECT_EQ(g.get("blk.0.attn_k.weight").dtype, DType::Q4_1);
  EXPECT_EQ(g.get("output_norm.weight").shape, (std::vector<int64_t>{576}));

  // Every tensor's last row dequantizes to finite values and dot_row agrees.
  std::vector<float> row, x(1536, 0.01f);
  for (const Tensor& t : g.tensors()) {
    row.resize(size_t(t.cols()));
    const uint8_t* last = t.data + uint64_t(t.rows() - 1) * t.row_bytes();
    cpu::dequantize_row(t.dtype, last, row.data(), t.cols());
    double ref = 0, abs_sum = 0;
    for (int64_t i = 0; i < t.cols(); ++i) {
      ASSERT_TRUE(std::isfinite(row[size_t(i)])) << t.name;
      ref += double(row[size_t(i)]) * 0.01;
      abs_sum += std::fabs(double(row[size_t(i)]) * 0.01);
    }
    EXPECT_NEAR(cpu::dot_row(t.dtype, last, x.data(), t.cols()), ref, 1e-5 * abs_sum + 1e-30) << t.name;
  }
}

// ---- broken files: each gives a flint::Error with a useful message, never a crash

TEST(GgufErrors, TruncatedAtEveryCutPoint) {
  const std::vector<uint8_t> full = sample_writer().build();
  ASSERT_EQ(open_error(full), "");
  for (size_t cut = 0; cut < full.size(); ++cut) {
    const std::vector<uint8_t> part(full.begin(), full.begin() + std::ptrdiff_t(cut));
    const std::string msg = open_error(part);
    ASSERT_NE(msg, "") << "cut at " << cut << " of " << full.size() << " opened";
    const bool explained = msg.find("truncated") != std::string::npos || msg.find("past end") != std::string::npos ||
                           msg.find("cannot fit") != std::string::npos || msg.find("not a GGUF") != std::string::npos;
    EXPECT_TRUE(explained) << "cut " << cut << ": " << msg;
  }
  // A cut inside the data names the tensor.
  const std::vector<uint8_t> part(full.begin(), full.end() - 1);
  EXPECT_ERROR_HAS(open_error(part), "tensor token_embd.weight: data [");
}

TEST(GgufErrors, TensorDataPastEndOfFile) {
  GgufWriter w;
  w.add_tensor_raw("blk.3.attn_q.weight", 0, {4}, std::vector<uint8_t>(16, 0), /*offset=*/4096);
  const std::string msg = open_error(w);
  EXPECT_ERROR_HAS(msg, "tensor blk.3.attn_q.weight: data [");
  EXPECT_ERROR_HAS(msg, "past end of file (size ");
}

TEST(GgufErrors, TensorOffsetOverflows) {
  GgufWriter w;
  w.add_tensor_raw("w", 0, {4}, std::vector<uint8_t>(16, 0), std::numeric_limits<uint64_t>::max() - 31);
  EXPECT_ERROR_HAS(open_error(w), "tensor w: data offset 18446744073709551584 + size 16 overflows");
}

TEST(GgufErrors, AbsurdTensorCount) {
  GgufWriter w = sample_writer();
  w.override_tensor_count(uint64_t(1) << 60);
  EXPECT_ERROR_HAS(open_error(w), "tensor count 1152921504606846976 cannot fit");
  // Plausible against the whole file, absurd after the metadata.
  GgufWriter w2;
  w2.add_string("general.name", std::string(400, 'x')).override_tensor_count(10);
  EXPECT_ERROR_HAS(open_error(w2), "tensor count 10 cannot fit in the 0 bytes after the metadata");
}

TEST(GgufErrors, AbsurdMetadataCount) {
  GgufWriter w = sample_writer();
  w.override_kv_count(std::numeric_limits<uint64_t>::max());
  EXPECT_ERROR_HAS(open_error(w), "metadata count 18446744073709551615 cannot fit");
}

TEST(GgufErrors, AbsurdStringLength) {
  std::vector<uint8_t> value;
  GgufWriter::put<uint64_t>(value, uint64_t(1) << 62);
  value.insert(value.end(), {'a', 'b'});
  GgufWriter w;
  w.add_raw("general.name", uint32_t(GgufType::STRING), value);
  EXPECT_ERROR_HAS(open_error(w), "key general.name: string length 4611686018427387904");
  // The same inside an array names the element.
  std::vector<uint8_t> arr;
  GgufWriter::put<uint32_t>(arr, uint32_t(GgufType::STRING));
  GgufWriter::put<uint64_t>(arr, 2);
  GgufWriter::put_string(arr, "ok");
  GgufWriter::put<uint64_t>(arr, 1000);
  GgufWriter w2;
  w2.add_raw("tokenizer.ggml.tokens", uint32_t(GgufType::ARRAY), arr);
  EXPECT_ERROR_HAS(open_error(w2), "key tokenizer.ggml.tokens: element 1: string length 1000");
  // And a huge key length.
  std::vector<uint8_t> bytes = sample_writer().build();
  const uint64_t huge = uint64_t(1) << 50;
  std::memcpy(bytes.data() + 24, &huge, 8);  // the first key's length, right after the header
  EXPECT_ERROR_HAS(open_error(bytes), "metadata key #0: string length 1125899906842624");
}

TEST(GgufErrors, AbsurdArrayLength) {
  std::vector<uint8_t> arr;
  GgufWriter::put<uint32_t>(arr, uint32_t(GgufType::UINT32));
  GgufWriter::put<uint64_t>(arr, uint64_t(1) << 61);
  GgufWriter w;
  w.add_raw("a", uint32_t(GgufType::ARRAY), arr);
  EXPECT_ERROR_HAS(open_error(w), "key a: array of 2305843009213693952 uint32 elements cannot fit");
}

TEST(GgufErrors, UnknownAndUnsupportedDtype) {
  GgufWriter w;
  w.add_tensor_raw("blk.0.ffn_up.weight", 99, {32}, std::vector<uint8_t>(32, 0));
  EXPECT_ERROR_HAS(open_error(w), "tensor blk.0.ffn_up.weight: unknown ggml type id 99");
  GgufWriter w2;
  w2.add_tensor_raw("t", 4, {32}, std::vector<uint8_t>(32, 0));  // a removed id
  EXPECT_ERROR_HAS(open_error(w2), "tensor t: unknown ggml type id 4");
  GgufWriter w3;
  w3.add_tensor_raw("t", 13, {256}, std::vector<uint8_t>(176, 0));
  EXPECT_ERROR_HAS(open_error(w3), "tensor t: unsupported dtype Q5_K (ggml type 13)");
  EXPECT_EQ(ggml_type_name(39), "MXFP4");
  EXPECT_EQ(ggml_type_name(1000), "");
}

TEST(GgufErrors, MissingKeyViaRequire) {
  TempFile f = sample_writer().write_temp();
  GgufFile g(f.path());
  try {
    (void)g.require_int("llama.context_length");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_ERROR_HAS(e.what(), "key llama.context_length: missing from ");
  }
  try {
    (void)g.require_string("general.name");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_ERROR_HAS(e.what(), "key general.name: missing from ");
  }
}

TEST(GgufErrors, WrongTypeViaGet) {
  TempFile f = sample_writer().write_temp();
  GgufFile g(f.path());
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_ERROR_HAS(message([&] { (void)g.get_int("general.architecture"); }),
                   "key general.architecture: expected an integer, found string");
  EXPECT_ERROR_HAS(message([&] { (void)g.require_int("tokenizer.ggml.add_bos_token"); }),
                   "key tokenizer.ggml.add_bos_token: expected an integer, found bool");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_string("llama.block_count"); }),
                   "key llama.block_count: expected a string, found uint32");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_bool("llama.rope.freq_base"); }),
                   "key llama.rope.freq_base: expected a bool, found float32");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_float("general.architecture"); }),
                   "key general.architecture: expected a number, found string");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_string_array("tokenizer.ggml.token_type"); }),
                   "key tokenizer.ggml.token_type: expected an array of string, found array of int32");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_int_array("tokenizer.ggml.tokens"); }),
                   "expected an array of integers, found array of string");
  EXPECT_ERROR_HAS(message([&] { (void)g.get_float_array("general.architecture"); }),
                   "expected an array of numbers, found string");
}

TEST(GgufErrors, BadAlignment) {
  for (uint32_t bad : {0u, 3u, 48u}) {
    GgufWriter w;
    w.add_u32("general.alignment", bad);
    EXPECT_ERROR_HAS(open_error(w), "key general.alignment: " + std::to_string(bad) + " is not a power of two");
  }
  GgufWriter w;
  w.add_i32("general.alignment", -32);
  EXPECT_ERROR_HAS(open_error(w), "key general.alignment: -32 is not a power of two");
  GgufWriter w2;
  w2.add_string("general.alignment", "32");
  EXPECT_ERROR_HAS(open_error(w2), "key general.alignment: expected an integer, found string");
}

TEST(GgufErrors, BadMagic) {
  std::vector<uint8_t> bytes = sample_writer().build();
  bytes[0] = 'X';
  EXPECT_ERROR_HAS(open_error(bytes), "not a GGUF file: bad magic");
  EXPECT_ERROR_HAS(open_error(std::vector<uint8_t>{}), "not a GGUF file: only 0 bytes");
  EXPECT_ERROR_HAS(open_error(std::vector<uint8_t>{'G', 'G'}), "not a GGUF file: only 2 bytes");
}

TEST(GgufErrors, UnsupportedVersions) {
  EXPECT_ERROR_HAS(open_error(sample_writer(1)), "GGUF version 1 is not supported");
  EXPECT_ERROR_HAS(open_error(sample_writer(4)), "unsupported GGUF version 4 (supported: 2, 3)");
  EXPECT_ERROR_HAS(open_error(sample_writer(0x03000000)), "big-endian GGUF is not supported");
}

TEST(GgufErrors, DuplicateKeyAndTensorName) {
  GgufWriter w;
  w.add_u32("llama.block_count", 1).add_u32("llama.block_count", 2);
  EXPECT_ERROR_HAS(open_error(w), "key llama.block_count: duplicate key");
  GgufWriter w2;
  w2.add_tensor_f32("w", {1}, {1}).add_tensor_f32("w", {1}, {2});
  EXPECT_ERROR_HAS(open_error(w2), "tensor w: duplicate name");
}

TEST(GgufErrors, BadDims) {
  GgufWriter w;
  w.add_tensor_raw("scalar", 0, {}, {});
  EXPECT_ERROR_HAS(open_error(w), "tensor scalar: n_dims 0 out of range [1, 4]");
  GgufWriter w2;
  w2.add_tensor_raw("t5", 0, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4, 0));
  EXPECT_ERROR_HAS(open_error(w2), "tensor t5: n_dims 5 out of range [1, 4]");
  GgufWriter w3;
  w3.add_tensor_raw("z", 0, {4, 0}, {});
  EXPECT_ERROR_HAS(open_error(w3), "tensor z: dim 1 is 0");
  GgufWriter w4;
  w4.add_tensor_raw("big", 0, {uint64_t(1) << 32, uint64_t(1) << 32}, {});
  EXPECT_ERROR_HAS(open_error(w4), "tensor big: element count overflows");
  GgufWriter w5;  // element count fits, byte size does not
  w5.add_tensor_raw("huge", 0, {uint64_t(1) << 31, uint64_t(1) << 31}, {});
  EXPECT_ERROR_HAS(open_error(w5), "tensor huge: byte size of 4611686018427387904 F32 values overflows");
}

TEST(GgufErrors, RowNotWholeBlocks) {
  GgufWriter w;
  w.add_tensor_raw("blk.0.attn_q.weight", 3, {48, 2}, std::vector<uint8_t>(60, 0));
  EXPECT_ERROR_HAS(open_error(w),
                   "tensor blk.0.attn_q.weight: row of 48 values is not a whole number of Q4_1 blocks (32 values each)");
}

TEST(GgufErrors, UnalignedTensorOffset) {
  GgufWriter w;
  w.add_tensor_raw("w", 0, {4}, std::vector<uint8_t>(16, 0), /*offset=*/4);
  EXPECT_ERROR_HAS(open_error(w), "tensor w: data offset 4 is not a multiple of the alignment 32");
}

TEST(GgufErrors, BadValueTypes) {
  GgufWriter w;
  w.add_raw("k", 13, {0, 0, 0, 0});
  EXPECT_ERROR_HAS(open_error(w), "key k: unknown value type 13");
  std::vector<uint8_t> nested;
  GgufWriter::put<uint32_t>(nested, uint32_t(GgufType::ARRAY));
  GgufWriter::put<uint64_t>(nested, 1);
  GgufWriter w2;
  w2.add_raw("k", uint32_t(GgufType::ARRAY), nested);
  EXPECT_ERROR_HAS(open_error(w2), "key k: nested arrays are not supported");
  std::vector<uint8_t> unknown_elem;
  GgufWriter::put<uint32_t>(unknown_elem, 77);
  GgufWriter::put<uint64_t>(unknown_elem, 0);
  GgufWriter w3;
  w3.add_raw("k", uint32_t(GgufType::ARRAY), unknown_elem);
  EXPECT_ERROR_HAS(open_error(w3), "key k: unknown array element type 77");
  GgufWriter w4;
  w4.add_raw("flag", uint32_t(GgufType::BOOL), {2});
  EXPECT_ERROR_HAS(open_error(w4), "key flag: invalid bool value 2");
  GgufWriter w5;
  w5.add_string("", "v");
  EXPECT_ERROR_HAS(open_error(w5), "metadata key #0: empty key");
}

TEST(GgufErrors, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> full = sample_writer().build();
  std::mt19937 rng(2024);
  int rejected = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<uint8_t> bytes = full;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = uint8_t(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    // Either it opens and every tensor lies inside the file, or it throws flint::Error.
    TempFile f(bytes);
    try {
      GgufFile g(f.path());
      for (const Tensor& t : g.tensors()) {  // touching both ends must not fault
        ASSERT_GT(t.nbytes, 0u);
        volatile uint8_t ends = uint8_t(t.data[0] + t.data[t.nbytes - 1]);
        (void)ends;
      }
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace flint
