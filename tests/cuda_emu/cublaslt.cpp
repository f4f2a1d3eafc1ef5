// The CUDA emulator's cuBLASLt: the column-major D = alpha · op(A) · op(B) + beta · C that Flint's cuBLASLt path
// asks for (bf16 A and B, fp32 C and D, fp32 compute), as a reference loop summing in double. It runs as a one-thread
// "kernel" on the stream, so it is ordered and captured like any other launch.
#include <cublasLt.h>

#include <cstring>
#include <vector>

namespace cuda_emu {
struct LtHandle {};
struct LtDesc {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
struct LtLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
namespace {
int lt_tag;  // the "function" whose launch limits the matmul's launches use
double element(const void* base, const LtLayout& l, uint64_t r, uint64_t c) {
  const uint64_t i = r + c * uint64_t(l.ld);
  if (l.type == CUDA_R_32F) return static_cast<const float*>(base)[i];
  uint16_t h;
  std::memcpy(&h, static_cast<const unsigned char*>(base) + 2 * i, 2);
  return __uint_as_float(uint32_t(h) << 16);
}
}  // namespace
}  // namespace cuda_emu

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cuda_emu::LtHandle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cuda_emu::LtDesc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  if (!desc || bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
  cublasOperation_t op;
  std::memcpy(&op, buf, sizeof op);
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA) desc->trans_a = op;
  else if (attr == CUBLASLT_MATMUL_DESC_TRANSB) desc->trans_b = op;
  else return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if ((type != CUDA_R_32F && type != CUDA_R_16BF) || ld < int64_t(rows)) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cuda_emu::LtLayout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  if (!handle || !desc || !a || !b || !c || !d || d->type != CUDA_R_32F || c->type != CUDA_R_32F)
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
  const uint64_t m = ta ? a->cols : a->rows, k = ta ? a->rows : a->cols, n = tb ? b->rows : b->cols;
  if ((tb ? b->cols : b->rows) != k || d->rows != m || d->cols != n || c->rows != m || c->cols != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const cuda_emu::LtLayout la = *a, lb = *b, lc = *c, ld = *d;
  cuda_emu::launch_body(cuda_emu::config(1, 1, 0, stream), "cublasLtMatmul", &cuda_emu::lt_tag, [=] {
    // op(A) as m rows of k and op(B) as n columns of k, then each output one dot product.
    std::vector<double> ra(m * k), cb(n * k);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t p = 0; p < k; ++p) ra[i * k + p] = ta ? cuda_emu::element(A, la, p, i) : cuda_emu::element(A, la, i, p);
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t p = 0; p < k; ++p) cb[j * k + p] = tb ? cuda_emu::element(B, lb, j, p) : cuda_emu::element(B, lb, p, j);
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t i = 0; i < m; ++i) {
        double s = 0;
        for (uint64_t p = 0; p < k; ++p) s += ra[i * k + p] * cb[j * k + p];
        const double prev = be != 0.0f ? cuda_emu::element(C, lc, i, j) : 0.0;
        static_cast<float*>(D)[i + j * uint64_t(ld.ld)] = float(al * s + be * prev);
      }
  });
  return cudaGetLastError() == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
