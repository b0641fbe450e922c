/* kernels.c's matrix products through ATen's public operator API: at::mm_out, the operator behind
 * torch.mm(a, b, out=c) — the call FusedTrainer's torch path makes, so both paths run the same BLAS
 * routine with the same operand orientations, threads and reproducibility mode, and give the same bits.
 * Tensors here are views of kernels.c's buffers (at::from_blob); in inference mode they carry no
 * autograd state. Exceptions stop here: kernels.c is C, and reads the message with native_last_error.
 */
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/core/InferenceMode.h>

#include <cstdint>
#include <cstdio>
#include <exception>

namespace {
thread_local char last_error[512] = "";

/* A rows × cols view of a row-major buffer `ld` floats per row, or of its transpose (`transposed`:
 * the buffer is cols × rows). */
at::Tensor view(const float *data, int64_t rows, int64_t cols, int64_t ld, bool transposed) {
    const int64_t row_stride = transposed ? 1 : ld, col_stride = transposed ? ld : 1;
    return at::from_blob(const_cast<float *>(data), {rows, cols}, {row_stride, col_stride},
                         at::TensorOptions().dtype(at::kFloat));
}
}  // namespace

extern "C" {

/* Row-major C[m×n] = op(A) op(B), as kernels.c's gemm describes; 0, or -1 with native_last_error set. */
int aten_gemm(int a_t, int b_t, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
              int ldc) noexcept {
    try {
        c10::InferenceMode inference;
        at::Tensor out = view(c, m, n, ldc, false);
        at::mm_out(out, view(a, m, k, lda, a_t), view(b, k, n, ldb, b_t));
        return 0;
    } catch (const std::exception &error) {
        std::snprintf(last_error, sizeof last_error, "at::mm_out(%d×%d, %d×%d): %s", m, k, k, n, error.what());
        return -1;
    }
}

/* Why this thread's last aten_gemm failed ("" when none has). */
const char *native_last_error(void) { return last_error; }
}
