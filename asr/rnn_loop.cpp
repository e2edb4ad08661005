// The recurrent layers' time loops (GRU, LSTM, tanh RNN), compiled: asr/native.py builds and loads them,
// asr/rnn/layers.py calls them. Their float32 product kernels also take one input's other products where asr.native
// chooses them: projections and the output layer (linear_f32), the front end's convolutions (front2d_f32,
// conv_frames_f32).
//
// asr.rnn computes everything that spans all time steps in Python (input projections, time reversal, the
// weights' gradients as one product each); what is left is the loop over steps, where each step is one small
// matrix product and the gate arithmetic. Here that loop runs without Python and without a per-step
// synchronisation: the work splits into units (a direction and a range of batch rows), each unit runs its own
// whole loop on its own thread (a recurrence never mixes rows), and each step's gates are one vectorised pass over
// the row (SLEEF's exp and tanh, ATen's own). The GRU, as torch.nn.GRU computes it:
//   r, z = sigmoid(Wi x + bi + Wh h + bh), n = tanh(Wi_n x + bi_n + r * (Wh_n h + bh_n)), h' = (1 - z) n + z h
// Past a sequence's end asr.rnn sets z's input to +inf, so z = 1, h' = h exactly and every gradient there is 0.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();

struct Unit {
  int64_t d, r0, r1;  // a direction and its rows [r0, r1)
};

// Enough units for every thread: one per direction, each direction's rows split further when threads are left.
std::vector<Unit> units(int64_t dirs, int64_t rows) {
  int64_t threads = at::get_num_threads();
  int64_t per = std::max<int64_t>(1, std::min<int64_t>(rows, (threads + dirs - 1) / dirs));
  std::vector<Unit> out;
  for (int64_t d = 0; d < dirs; ++d)
    for (int64_t c = 0; c < per; ++c) {
      int64_t r0 = rows * c / per, r1 = rows * (c + 1) / per;
      if (r1 > r0) out.push_back({d, r0, r1});
    }
  return out;
}

template <typename F>
void each_unit(const std::vector<Unit>& us, const F& f) {
  at::parallel_for(0, static_cast<int64_t>(us.size()), 1, [&](int64_t b, int64_t e) {
    at::NoGradGuard no_grad;  // a worker thread starts with autograd on; nothing here is recorded
    for (int64_t i = b; i < e; ++i) f(us[i]);
  });
}

inline Vec sigmoid(const Vec& x) { return (Vec(1.f) + x.neg().exp()).reciprocal(); }

inline Vec load(const float* p, int64_t n) { return n == W ? Vec::loadu(p) : Vec::loadu(p, n); }
inline void store(const Vec& v, float* p, int64_t n) { n == W ? v.store(p) : v.store(p, n); }

// The BLAS sgemm that torch's own CPU matrix products call (MKL's in the x86 wheels), found in the loaded
// libtorch_cpu: a step's product straight on the loop's pointers, without the four tensor views and the operator
// dispatch of at::mm_out (about 1.8 us a step, 45 % of a one-row step's product on a 2-core Xeon). Where torch was
// built without it, the loops fall back to at::mm_out / at::addmm_out (the same maths).
using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

Sgemm find_sgemm() {
  void* lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
  return lib ? reinterpret_cast<Sgemm>(dlsym(lib, "sgemm_")) : nullptr;
}

// MR rows of c (rows n apart) = the same rows of a (lda apart) @ b (k, n) + beta * c, on the columns [j, j + cols),
// cols <= R vectors: MR x R vectors of c held in registers while b's rows stream past, each b vector read once
// for all MR rows (Full: exactly R whole vectors, so that the compiler keeps every accumulator in a register).
// The accumulators start from bias where given (beta then unused).
template <int64_t MR, int64_t R, bool Full>
void rows_block(int64_t n, int64_t k, const float* a, const float* b, float beta, float* c, int64_t j,
                int64_t cols, const float* bias, int64_t ldb, int64_t lda) {
  const int64_t V = Full ? R : (cols + W - 1) / W;
  auto width = [&](int64_t r) { return Full ? W : std::min(W, cols - r * W); };
  Vec acc[MR][R];
  for (int64_t m = 0; m < MR; ++m)
    for (int64_t r = 0; r < V; ++r)
      acc[m][r] = bias ? load(bias + j + r * W, width(r))
                       : beta == 0.f ? Vec(0.f) : load(c + m * n + j + r * W, width(r)) * Vec(beta);
  for (int64_t i = 0; i < k; ++i) {
    const float* bi = b + i * ldb + j;
    Vec bv[R];
    for (int64_t r = 0; r < V; ++r) bv[r] = load(bi + r * W, width(r));
    for (int64_t m = 0; m < MR; ++m) {
      const Vec x(a[m * lda + i]);
      for (int64_t r = 0; r < V; ++r) acc[m][r] = at::vec::fmadd(x, bv[r], acc[m][r]);
    }
  }
  for (int64_t m = 0; m < MR; ++m)
    for (int64_t r = 0; r < V; ++r) store(acc[m][r], c + m * n + j + r * W, width(r));
}

// MR rows of c (n apart) = the same rows of a (lda apart; 0: k) @ b (k rows, ldb apart; 0: n) + beta * c, on c's
// first `width` columns (0: all n), R vectors at a time.
template <int64_t MR, int64_t R>
void rows_product(int64_t n, int64_t k, const float* a, const float* b, float beta, float* c, const float* bias,
                  int64_t ldb = 0, int64_t width = 0, int64_t lda = 0) {
  ldb = ldb ? ldb : n, width = width ? width : n, lda = lda ? lda : k;
  int64_t j = 0;
  for (; j + R * W <= width; j += R * W) rows_block<MR, R, true>(n, k, a, b, beta, c, j, R * W, bias, ldb, lda);
  if (j < width) rows_block<MR, R, false>(n, k, a, b, beta, c, j, width - j, bias, ldb, lda);
}

// small_gemm's rows: four at a time, then two, then one, on b's first `width` columns (rows ldb apart).
void small_rows(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float beta, float* c, int64_t ldb,
                int64_t width) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) rows_product<4, 2>(n, k, a + i * k, b, beta, c + i * n, nullptr, ldb, width);
  for (; i + 2 <= m; i += 2) rows_product<2, 4>(n, k, a + i * k, b, beta, c + i * n, nullptr, ldb, width);
  for (; i < m; ++i) rows_product<1, 10>(n, k, a + i * k, b, beta, c + i * n, nullptr, ldb, width);
}

// A product of a few rows, c (m, n) = a (m, k) @ b (k, n) + beta * c, four rows at a time, a last single row
// 10 vectors wide (a stream's, a file's steps: a 300-step bidirectional 320 -> 160 GRU layer, one thread, the EPYC,
// 2.57-2.61 ms against 2.81-2.89 at 4 vectors; 15 the same, 30 spills): sgemm's path for so few
// rows runs at a fraction of the speed that reading b allows (1 x 160 @ 160 x 480: 5.4 us on a 2-core AMD EPYC),
// and few-row products are every step of a stream, of a file decoded alone (a server's request) and of a packed
// batch's last steps.
void small_gemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float beta, float* c) {
  small_rows(m, n, k, a, b, beta, c, n, n);
}

// The columns of a panel (`panels`): a lone row's block, 10 vectors.
constexpr int64_t kPanel = 10 * W;

// small_gemm's c (m, n) = a (m, k) @ b, b held in panels (`panels`): (ceil(n / kPanel), k, kPanel), panel p the
// columns [p kPanel, (p + 1) kPanel) of b (k, n), zero past n. A lone row's product then reads each panel front to
// back, one stream, where b's rows n apart gave the prefetcher kPanel-wide strided runs: 1 x 160 @ 160 x 480 in
// 1.65 against 2.39 us (one thread, the EPYC, b in L2), the float32 steps of a file decoded alone.
void panels_gemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  for (int64_t p = 0; p * kPanel < n; ++p) {
    small_rows(m, n, k, a, b + p * k * kPanel, 0.f, c + p * kPanel, kPanel, std::min(kPanel, n - p * kPanel));
  }
}

// Products of at most this many rows go through small_gemm: the bidirectional 2x160 stack, one thread, on the EPYC,
// against sgemm: 1.27-1.33x at 1-3 rows, 1.1-1.3x at 4-16, mixed at 24-64.
constexpr int64_t kSmallRows = 16;

// Whether every product goes through small_gemm, whatever its rows (`own_products`, set by asr.native where torch's
// BLAS runs AVX2 kernels on a CPU with AVX-512: MKL on AMD's CPUs). There, one thread, 160 x 480 weights, a 2-core
// AMD EPYC (2026-12-07): small_gemm 215-233 GFLOP/s at 4-96 rows against sgemm's 66-109.
std::atomic<bool> own_products{false};

// c (m, n) = a (m, k) @ b (k, n) + beta * c, every matrix row-major with rows of its own width; BLAS is
// column-major, so it computes c^T = b^T a^T. False where there is no sgemm (the caller runs ATen's).
bool gemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float beta, float* c) {
  if (m <= kSmallRows || own_products.load(std::memory_order_relaxed)) {
    small_gemm(m, n, k, a, b, beta, c);
    return true;
  }
  static const Sgemm sgemm = find_sgemm();
  if (!sgemm) return false;
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  const float one = 1.f;
  sgemm("N", "N", &N, &M, &K, &one, b, &N, a, &K, &beta, c, &N);
  return true;
}

// MKL's gemm_bf16bf16f32 (bfloat16 operands, float32 accumulation and result: AMX tiles or AVX-512 BF16 where the
// CPU has them), found in libtorch_cpu as sgemm is: the products of inference at precision "bf16" (asr.rnn.stack).
using GemmBf16 = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                          const at::BFloat16*, const int*, const at::BFloat16*, const int*, const float*, float*,
                          const int*);

GemmBf16 find_gemm_bf16() {  // looked up once: the checks of every layer call ask for it
  static const GemmBf16 f = [] {
    void* lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    return lib ? reinterpret_cast<GemmBf16>(dlsym(lib, "gemm_bf16bf16f32")) : nullptr;
  }();
  return f;
}

// gemm's bfloat16 twin: c (m, n) float = a (m, k) @ b (k, n) + beta * c, or a @ b^T for a (n, k) b where
// `b_rows_out`. The caller has checked that there is one.
void gemm(int64_t m, int64_t n, int64_t k, const at::BFloat16* a, const at::BFloat16* b, float beta, float* c,
          bool b_rows_out = false) {
  const GemmBf16 f = find_gemm_bf16();
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  const float one = 1.f;
  f(b_rows_out ? "T" : "N", "N", &N, &M, &K, &one, b, b_rows_out ? &K : &N, a, &K, &beta, c, &N);
}

// AVX-512 BF16's dot product of bfloat16 pairs (vdpbf16ps: 32 products a vector where an fma makes 16), for CPUs
// that have it but no AMX tiles, where MKL's bfloat16 product runs no faster than sgemm (a 2-core AMD EPYC:
// 1 x 160 @ 160 x 480 in 39.4 us against 5.4). b (kp, n) holds b's rows 2i and 2i + 1 interleaved, a pair per
// column (asr.rnn.stack packs them), a (m, kp) pairs of a row's columns; float32 accumulation and result.
bool cpu_has_bf16_pairs() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

constexpr int64_t kPairLanes = 16;  // float32 lanes of a 512-bit vector

// MR rows of c (n apart) = bias (zero where null) + the same rows of a (kp pairs apart) @ b's columns [j, j + cols),
// cols <= R vectors: MR x R accumulators in registers while b's pairs stream past (Full: exactly R whole vectors).
template <int64_t MR, int64_t R, bool Full>
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void pairs_block(int64_t n, int64_t kp, const uint32_t* a, const uint32_t* b, const float* bias, float* c, int64_t j,
                 int64_t cols) {
  __mmask16 mask[R];
  for (int64_t r = 0; r < R; ++r) {
    const int64_t w = Full ? kPairLanes : std::clamp<int64_t>(cols - r * kPairLanes, 0, kPairLanes);
    mask[r] = static_cast<__mmask16>((1u << w) - 1);
  }
  __m512 acc[MR][R];
  for (int64_t m = 0; m < MR; ++m)
    for (int64_t r = 0; r < R; ++r)
      acc[m][r] = bias ? _mm512_maskz_loadu_ps(mask[r], bias + j + r * kPairLanes) : _mm512_setzero_ps();
  for (int64_t i = 0; i < kp; ++i) {
    const uint32_t* bi = b + i * n + j;
    __m512bh bv[R];
#pragma GCC unroll 8
    for (int64_t r = 0; r < R; ++r)
      bv[r] = (__m512bh)(Full ? _mm512_loadu_si512(bi + r * kPairLanes)
                              : _mm512_maskz_loadu_epi32(mask[r], bi + r * kPairLanes));
#pragma GCC unroll 8
    for (int64_t m = 0; m < MR; ++m) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[m * kp + i]));
#pragma GCC unroll 8
      for (int64_t r = 0; r < R; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], x, bv[r]);
    }
  }
  for (int64_t m = 0; m < MR; ++m)
    for (int64_t r = 0; r < R; ++r) _mm512_mask_storeu_ps(c + m * n + j + r * kPairLanes, mask[r], acc[m][r]);
}

template <int64_t MR, int64_t R>
void pairs_rows(int64_t n, int64_t kp, const uint32_t* a, const uint32_t* b, const float* bias, float* c) {
  constexpr int64_t cols = R * kPairLanes;
  int64_t j = 0;
  for (; j + cols <= n; j += cols) pairs_block<MR, R, true>(n, kp, a, b, bias, c, j, cols);
  if (j < n) pairs_block<MR, R, false>(n, kp, a, b, bias, c, j, n - j);
}

// c (m, n) = a (m, kp pairs) @ b (kp pairs, n) + bias (n,) (none where null: the first product's write of c is
// its only one), eight rows by three vectors at a time (24 accumulators, each b vector read from L2 once for eight
// rows, 11 loads a 24 dot products: 3348 x 320 -> 480 at 457-491 GFLOP/s against 326-346 for four rows by four
// vectors, one thread, the EPYC), then four, two and single rows. The caller has checked cpu_has_bf16_pairs().
void gemm_pairs(int64_t m, int64_t n, int64_t kp, const at::BFloat16* a, const at::BFloat16* b, const float* bias,
                float* c) {
  const auto* ap = reinterpret_cast<const uint32_t*>(a);
  const auto* bp = reinterpret_cast<const uint32_t*>(b);
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) pairs_rows<8, 3>(n, kp, ap + i * kp, bp, bias, c + i * n);
  for (; i + 4 <= m; i += 4) pairs_rows<4, 4>(n, kp, ap + i * kp, bp, bias, c + i * n);
  for (; i + 2 <= m; i += 2) pairs_rows<2, 8>(n, kp, ap + i * kp, bp, bias, c + i * n);
  for (; i < m; ++i) pairs_rows<1, 8>(n, kp, ap + i * kp, bp, bias, c + i * n);
}

// (m, k) float32 rows (k apart) -> (m, 2 * kp) bfloat16 rows, the column past an odd k zero: gemm_pairs' a.
void to_pairs(const float* x, int64_t m, int64_t k, at::BFloat16* out, int64_t kp) {
  if (2 * kp == k) {
    at::vec::convert(x, out, m * k);
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    at::vec::convert(x + i * k, out + i * 2 * kp, k);
    out[i * 2 * kp + k] = at::BFloat16(0.f);
  }
}

void check(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == dim,
              "asr rnn_loop: ", name, " must be a contiguous float32 CPU tensor of ", dim, " dimensions");
}

// A forward loop's recurrent weights: float32 (D, H, G) or its panels (`panels`), or bfloat16 (inference at
// precision "bf16"): (D, H, G) for MKL's bfloat16 product (`blas_bf16`), or (D, kp, G, 2) pairs for gemm_pairs
// (`bf16_pairs`).
void check_weight(const at::Tensor& t, const char* name) {
  if (t.scalar_type() == at::kBFloat16) {
    const bool pairs = t.dim() == 4 && t.size(3) == 2;
    TORCH_CHECK((pairs ? cpu_has_bf16_pairs() : find_gemm_bf16() && t.dim() == 3) && t.device().is_cpu() &&
                t.is_contiguous(), "asr rnn_loop: bfloat16 ", name, " needs a contiguous CPU tensor, (D, kp, G, 2) "
                "pairs on a CPU with AVX-512 BF16, else (D, H, G) and MKL's gemm_bf16bf16f32");
    return;
  }
  check(t, name, t.dim() == 4 ? 4 : 3);
}

// Whether a forward loop's recurrent weights are H x G: (D, H, G), (D, ceil(H / 2), G, 2) bfloat16 pairs, or
// float32 panels (D, ceil(G / kPanel), H, kPanel) (`panels`).
bool fits(const at::Tensor& w_t, int64_t H, int64_t G) {
  if (w_t.dim() == 3) return w_t.size(1) == H && w_t.size(2) == G;
  if (w_t.scalar_type() == at::kBFloat16) return w_t.size(1) == (H + 1) / 2 && w_t.size(2) == G;
  return w_t.size(1) == (G + kPanel - 1) / kPanel && w_t.size(2) == H && w_t.size(3) == kPanel;
}

// `active` (T,) int64, or empty: rows sorted longest first, so that step s of every direction is real for the
// first active[s] rows only (asr.rnn sorts a batch of unequal lengths so). The loops then skip the rest: no product,
// no gates; the state passes through unchanged (forward) and so does its gradient, the gates' being zero (backward):
// what packed sequences compute for those rows, without computing it. A shrinking batch,
// as torch.nn's packed sequences are.
const int64_t* active_ptr(const at::Tensor& active, int64_t T) {
  if (active.numel() == 0) return nullptr;
  TORCH_CHECK(active.scalar_type() == at::kLong && active.is_contiguous() && active.numel() == T,
              "asr rnn_loop: active must be a contiguous (T,) int64 tensor");
  return active.data_ptr<int64_t>();
}

// How many of a unit's rows step s runs: those below active[s], else all of them.
inline int64_t live(const int64_t* active, int64_t s, const Unit& u) {
  return active ? std::clamp<int64_t>(active[s] - u.r0, 0, u.r1 - u.r0) : u.r1 - u.r0;
}

// A layer's loop forwards, shared by the cells: each unit runs every step of its direction over its rows; a step is
// one product of the live rows' states hs[d][s] (D, T + 1, N, H) by w_t[d] (H, G), then `cell(d, s, row, at_s, at_h,
// gh)` for each live row: at_s indexes (D, T, N, .) tensors, at_h (D, T + 1, N, .) ones, gh is the row's product
// (G,). A row past its length copies its `states` ((D, T + 1, N, H) each: h, and the LSTM's c) to the next step.
template <typename Cell>
void forward_loop(const at::Tensor& hs, const at::Tensor& w_t, int64_t G, const at::Tensor& active,
                  const std::vector<at::Tensor>& states, const Cell& cell) {
  const int64_t D = hs.size(0), T = hs.size(1) - 1, N = hs.size(2), H = hs.size(3);
  const int64_t* ap = active_ptr(active, T);
  std::vector<float*> sp;
  for (const auto& t : states) sp.push_back(t.data_ptr<float>());
  each_unit(units(D, N), [&](const Unit& u) {
    const int64_t rows = u.r1 - u.r0;
    auto gh = at::empty({rows, G}, hs.options());  // this step's product, this unit's rows
    auto w = w_t[u.d];
    float* ghp = gh.data_ptr<float>();
    const float* hp = hs.data_ptr<float>();
    const bool bf16 = w.scalar_type() == at::kBFloat16;  // the product on the states rounded to bfloat16
    const int64_t kp = bf16 && w.dim() == 3 ? w.size(0) : 0;  // w (kp, G, 2) pairs: gemm_pairs
    auto hb = at::empty({bf16 ? rows : 0, kp ? 2 * kp : H}, w.options());
    for (int64_t s = 0; s < T; ++s) {
      const int64_t a = live(ap, s, u);
      const float* h_s = hp + ((u.d * (T + 1) + s) * N + u.r0) * H;
      if (a > 0 && kp) {
        to_pairs(h_s, a, H, hb.data_ptr<at::BFloat16>(), kp);
        gemm_pairs(a, G, kp, hb.data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(), nullptr, ghp);
      } else if (a > 0 && bf16) {
        at::vec::convert(h_s, hb.data_ptr<at::BFloat16>(), a * H);
        gemm(a, G, H, hb.data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(), 0.f, ghp);
      } else if (a > 0 && w.dim() == 3) {                       // panels (inference where own_products)
        panels_gemm(a, G, H, h_s, w.data_ptr<float>(), ghp);
      } else if (a > 0 && !gemm(a, G, H, h_s, w.data_ptr<float>(), 0.f, ghp)) {
        auto out = gh.narrow(0, 0, a);
        at::mm_out(out, hs[u.d][s].narrow(0, u.r0, a), w);
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = u.r0 + i, at_s = (u.d * T + s) * N + row, at_h = (u.d * (T + 1) + s) * N + row;
        if (i < a) {
          cell(u.d, s, row, at_s, at_h, ghp + i * G);
        } else {
          for (float* p : sp) std::copy(p + at_h * H, p + (at_h + 1) * H, p + (at_h + N) * H);
        }
      }
    }
  });
}

// The loop backwards, shared by the cells: for each step from the last, `cell(d, s, row, at_s, at_h, carry)` writes
// a live row's gradients (into dg among them) and what of dh reaches h without the product (carry, (H,)), then
// dh0[d] (D, N, H), the running gradient of the state, becomes carry + dg[d][s] (D, T, N, G) @ w[d] (G, H) for the
// live rows. A row past its length keeps dh (and the LSTM's dc) and gets zeros in each of `zeroed` ((D, T, N, .)).
template <typename Cell>
void backward_loop(at::Tensor& dh0, const at::Tensor& dg, const at::Tensor& w, const at::Tensor& active,
                   const std::vector<at::Tensor>& zeroed, const Cell& cell) {
  const int64_t D = dg.size(0), T = dg.size(1), N = dg.size(2), H = dh0.size(2);
  const int64_t* ap = active_ptr(active, T);
  std::vector<std::pair<float*, int64_t>> zp;
  for (const auto& t : zeroed) zp.emplace_back(t.data_ptr<float>(), t.size(3));
  each_unit(units(D, N), [&](const Unit& u) {
    const int64_t rows = u.r1 - u.r0;
    auto carry = at::empty({rows, H}, dg.options());
    auto dh = dh0[u.d].narrow(0, u.r0, rows);
    float *kp = carry.data_ptr<float>(), *dhp = dh.data_ptr<float>();
    const float *dgp = dg.data_ptr<float>(), *wp = w[u.d].data_ptr<float>();
    const int64_t G = dg.size(3);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t a = live(ap, s, u);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = u.r0 + i, at_s = (u.d * T + s) * N + row;
        if (i < a) {
          cell(u.d, s, row, at_s, (u.d * (T + 1) + s) * N + row, kp + i * H);
        } else {
          for (auto [p, g] : zp) std::fill(p + at_s * g, p + (at_s + 1) * g, 0.f);
        }
      }
      if (a > 0) {
        std::memcpy(dhp, kp, a * H * sizeof(float));
        if (!gemm(a, H, G, dgp + ((u.d * T + s) * N + u.r0) * G, wp, 1.f, dhp)) {
          auto out = dh.narrow(0, 0, a);
          at::addmm_out(out, carry.narrow(0, 0, a), dg[u.d][s].narrow(0, u.r0, a), w[u.d]);
        }
      }
    }
  });
}

// Every tensor is direction-major, so that each direction's steps are one contiguous (T * N, .) matrix for the
// products asr.rnn does over all steps at once. g (D, T, N, 3H): input projections, r and z with both biases, n
// with b_ih; w_hh_t (D, H, 3H); b_hn (D, H); h0 (D, N, H) -> hs (D, T + 1, N, H) (hs[:, t]: the state before
// step t), ghn (D, T, N, H): Wh_n h + bh_n, rz (D, T, N, 2H) and n (D, T, N, H) after their nonlinearities; with
// `saved` false (inference: no backward pass) those three are empty and never written, a third of the loop's stores.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward(
    const at::Tensor& g, const at::Tensor& w_hh_t, const at::Tensor& b_hn, const at::Tensor& h0,
    const at::Tensor& active, bool saved) {
  check(g, "g", 4), check_weight(w_hh_t, "w_hh_t"), check(b_hn, "b_hn", 2), check(h0, "h0", 3);
  const int64_t D = g.size(0), T = g.size(1), N = g.size(2), H = h0.size(2);
  TORCH_CHECK(g.size(3) == 3 * H && fits(w_hh_t, H, 3 * H) && h0.size(0) == D &&
              h0.size(1) == N,
              "asr rnn_loop: gru_forward shapes disagree");
  auto hs = at::empty({D, T + 1, N, H}, g.options());
  const int64_t S = saved ? T : 0;
  auto ghn = at::empty({D, S, N, H}, g.options());
  auto rz = at::empty({D, S, N, 2 * H}, g.options());
  auto nn = at::empty({D, S, N, H}, g.options());
  hs.select(1, 0).copy_(h0);
  const float *gp = g.data_ptr<float>(), *bp = b_hn.data_ptr<float>();
  float *hp = hs.data_ptr<float>(), *ghnp = ghn.data_ptr<float>(), *rzp = rz.data_ptr<float>(),
        *np = nn.data_ptr<float>();
  forward_loop(hs, w_hh_t, 3 * H, active, {hs},
               [&](int64_t d, int64_t, int64_t, int64_t at_s, int64_t at_h, const float* hi) {
    const float *gi = gp + at_s * 3 * H, *hprev = hp + at_h * H;
    float* hnext = hp + (at_h + N) * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      Vec r = sigmoid(load(gi + j, c) + load(hi + j, c));
      Vec z = sigmoid(load(gi + H + j, c) + load(hi + H + j, c));
      Vec gn = load(hi + 2 * H + j, c) + load(bp + d * H + j, c);
      Vec n = (load(gi + 2 * H + j, c) + r * gn).tanh();
      store((Vec(1.f) - z) * n + z * load(hprev + j, c), hnext + j, c);
      if (saved) {
        store(r, rzp + at_s * 2 * H + j, c);
        store(z, rzp + at_s * 2 * H + H + j, c);
        store(gn, ghnp + at_s * H + j, c);
        store(n, np + at_s * H + j, c);
      }
    }
  });
  return {hs, ghn, rz, nn};
}

// The loop backwards. dys (D, T, N, H): the outputs' gradients in each direction's order; dh_n (D, N, H);
// w_hh (D, 3H, H); hs, ghn, rz, n from gru_forward -> dgi (D, T, N, 3H): gradients of the input projections;
// dgh (D, T, N, 3H): of Wh h + bh (r and z as dgi's, n's times r); dh0 (D, N, H).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_backward(
    const at::Tensor& dys, const at::Tensor& dh_n, const at::Tensor& w_hh, const at::Tensor& hs,
    const at::Tensor& ghn, const at::Tensor& rz, const at::Tensor& nn, const at::Tensor& active) {
  check(dys, "dys", 4), check(dh_n, "dh_n", 3), check(w_hh, "w_hh", 3), check(hs, "hs", 4);
  check(ghn, "ghn", 4), check(rz, "rz", 4), check(nn, "n", 4);
  const int64_t D = dys.size(0), T = dys.size(1), N = dys.size(2), H = dys.size(3);
  TORCH_CHECK(w_hh.size(1) == 3 * H && hs.size(1) == T + 1 && rz.size(3) == 2 * H,
              "asr rnn_loop: gru_backward shapes disagree");
  auto dgi = at::empty({D, T, N, 3 * H}, dys.options());
  auto dgh = at::empty({D, T, N, 3 * H}, dys.options());
  auto dh0 = dh_n.clone();  // the running gradient of the state, each unit its own rows
  const float *dyp = dys.data_ptr<float>(), *hp = hs.data_ptr<float>(), *ghnp = ghn.data_ptr<float>(),
              *rzp = rz.data_ptr<float>(), *np = nn.data_ptr<float>();
  float *dgip = dgi.data_ptr<float>(), *dghp = dgh.data_ptr<float>(), *dhp = dh0.data_ptr<float>();
  // the carry is dh' * z; the product runs on dgh
  backward_loop(dh0, dgh, w_hh, active, {dgi, dgh},
                [&](int64_t d, int64_t, int64_t row, int64_t at_s, int64_t at_h, float* carry) {
    const float *dhi = dhp + (d * N + row) * H, *dyi = dyp + at_s * H, *hprev = hp + at_h * H;
    const float *r_ = rzp + at_s * 2 * H, *z_ = r_ + H, *n_ = np + at_s * H, *gn_ = ghnp + at_s * H;
    float *gi = dgip + at_s * 3 * H, *gh = dghp + at_s * 3 * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      Vec one(1.f);
      Vec dhv = load(dhi + j, c) + load(dyi + j, c);
      Vec r = load(r_ + j, c), z = load(z_ + j, c), n = load(n_ + j, c);
      Vec dn = dhv * (one - z) * (one - n * n);
      Vec dr = dn * load(gn_ + j, c) * r * (one - r);
      Vec dz = dhv * (load(hprev + j, c) - n) * z * (one - z);
      store(dr, gi + j, c), store(dz, gi + H + j, c), store(dn, gi + 2 * H + j, c);
      store(dr, gh + j, c), store(dz, gh + H + j, c), store(dn * r, gh + 2 * H + j, c);
      store(dhv * z, carry + j, c);
    }
  });
  return {dgi, dgh, dh0};
}


// LSTM: g (D, T, N, 4H) input projections with both biases (i f g o); w_hh_t (D, H, 4H); h0, c0 (D, N, H) ->
// hs, cs (D, T + 1, N, H), q (D, T, N, 4H): the gates after their nonlinearities, tc (D, T, N, H): tanh(c'). With
// `saved` false (inference) q and tc are empty and never written.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& g, const at::Tensor& w_hh_t, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& active, bool saved) {
  check(g, "g", 4), check_weight(w_hh_t, "w_hh_t"), check(h0, "h0", 3), check(c0, "c0", 3);
  const int64_t D = g.size(0), T = g.size(1), N = g.size(2), H = h0.size(2);
  TORCH_CHECK(g.size(3) == 4 * H && fits(w_hh_t, H, 4 * H),
              "asr rnn_loop: lstm_forward shapes disagree");
  auto hs = at::empty({D, T + 1, N, H}, g.options()), cs = at::empty({D, T + 1, N, H}, g.options());
  const int64_t S = saved ? T : 0;
  auto q = at::empty({D, S, N, 4 * H}, g.options()), tc = at::empty({D, S, N, H}, g.options());
  hs.select(1, 0).copy_(h0), cs.select(1, 0).copy_(c0);
  const float* gp = g.data_ptr<float>();
  float *hp = hs.data_ptr<float>(), *cp = cs.data_ptr<float>(), *qp = q.data_ptr<float>(), *tp = tc.data_ptr<float>();
  forward_loop(hs, w_hh_t, 4 * H, active, {hs, cs},
               [&](int64_t, int64_t, int64_t, int64_t at_s, int64_t at_h, const float* hi) {
    const float *gi = gp + at_s * 4 * H, *cprev = cp + at_h * H;
    float *hnext = hp + (at_h + N) * H, *cnext = cp + (at_h + N) * H, *qo = qp + at_s * 4 * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      Vec ig = sigmoid(load(gi + j, c) + load(hi + j, c));
      Vec fg = sigmoid(load(gi + H + j, c) + load(hi + H + j, c));
      Vec gg = (load(gi + 2 * H + j, c) + load(hi + 2 * H + j, c)).tanh();
      Vec og = sigmoid(load(gi + 3 * H + j, c) + load(hi + 3 * H + j, c));
      Vec cn = fg * load(cprev + j, c) + ig * gg;
      Vec t = cn.tanh();
      if (saved) {
        store(ig, qo + j, c), store(fg, qo + H + j, c), store(gg, qo + 2 * H + j, c), store(og, qo + 3 * H + j, c);
        store(t, tp + at_s * H + j, c);
      }
      store(cn, cnext + j, c);
      store(og * t, hnext + j, c);
    }
  });
  return {hs, cs, q, tc};
}

// The LSTM's loop backwards: dys (D, T, N, H); dh_n, dc_n (D, N, H); w_hh (D, 4H, H); hs, cs, q, tc from
// lstm_forward -> dg (D, T, N, 4H): gradients of the gates' inputs (of the input projections and of
// Wh h + bh alike), dh0, dc0 (D, N, H).
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_backward(
    const at::Tensor& dys, const at::Tensor& dh_n, const at::Tensor& dc_n, const at::Tensor& w_hh,
    const at::Tensor& cs, const at::Tensor& q, const at::Tensor& tc, const at::Tensor& active) {
  check(dys, "dys", 4), check(dh_n, "dh_n", 3), check(dc_n, "dc_n", 3), check(w_hh, "w_hh", 3);
  check(cs, "cs", 4), check(q, "q", 4), check(tc, "tc", 4);
  const int64_t D = dys.size(0), T = dys.size(1), N = dys.size(2), H = dys.size(3);
  TORCH_CHECK(w_hh.size(1) == 4 * H && q.size(3) == 4 * H, "asr rnn_loop: lstm_backward shapes disagree");
  auto dg = at::empty({D, T, N, 4 * H}, dys.options());
  auto dh0 = dh_n.clone(), dc0 = dc_n.clone();
  const float *dyp = dys.data_ptr<float>(), *cp = cs.data_ptr<float>(), *qp = q.data_ptr<float>(),
              *tp = tc.data_ptr<float>();
  float *dgp = dg.data_ptr<float>(), *dhp = dh0.data_ptr<float>(), *dcp = dc0.data_ptr<float>();
  // no carry: rows past their length are not live (active), so dh reaches h only through the product
  backward_loop(dh0, dg, w_hh, active, {dg},
                [&](int64_t d, int64_t, int64_t row, int64_t at_s, int64_t at_h, float* carry) {
    float *dhi = dhp + (d * N + row) * H, *dci = dcp + (d * N + row) * H, *dgo = dgp + at_s * 4 * H;
    const float *dyi = dyp + at_s * H, *qi = qp + at_s * 4 * H, *ti = tp + at_s * H, *cprev = cp + at_h * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      Vec dhv = load(dhi + j, c) + load(dyi + j, c), zero(0.f), one(1.f);
      Vec ig = load(qi + j, c), fg = load(qi + H + j, c), gg = load(qi + 2 * H + j, c), og = load(qi + 3 * H + j, c);
      Vec t = load(ti + j, c);
      Vec dct = load(dci + j, c) + dhv * og * (one - t * t);  // the cell state's whole gradient
      store(dct * gg * ig * (one - ig), dgo + j, c);
      store(dct * load(cprev + j, c) * fg * (one - fg), dgo + H + j, c);
      store(dct * ig * (one - gg * gg), dgo + 2 * H + j, c);
      store(dhv * t * og * (one - og), dgo + 3 * H + j, c);
      store(dct * fg, dci + j, c);
      store(zero, carry + j, c);
    }
  });
  return {dg, dh0, dc0};
}

// The tanh RNN: g (D, T, N, H) input projections with both biases; w_hh_t (D, H, H); h0 (D, N, H) ->
// hs (D, T + 1, N, H): h' = tanh(g + Wh h).
at::Tensor rnn_forward(const at::Tensor& g, const at::Tensor& w_hh_t, const at::Tensor& h0, const at::Tensor& active) {
  check(g, "g", 4), check_weight(w_hh_t, "w_hh_t"), check(h0, "h0", 3);
  const int64_t D = g.size(0), T = g.size(1), N = g.size(2), H = h0.size(2);
  TORCH_CHECK(g.size(3) == H && fits(w_hh_t, H, H),
              "asr rnn_loop: rnn_forward shapes disagree");
  auto hs = at::empty({D, T + 1, N, H}, g.options());
  hs.select(1, 0).copy_(h0);
  const float* gp = g.data_ptr<float>();
  float* hp = hs.data_ptr<float>();
  forward_loop(hs, w_hh_t, H, active, {hs},
               [&](int64_t, int64_t, int64_t, int64_t at_s, int64_t at_h, const float* hi) {
    const float* gi = gp + at_s * H;
    float* hnext = hp + (at_h + N) * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      store((load(gi + j, c) + load(hi + j, c)).tanh(), hnext + j, c);
    }
  });
  return hs;
}

// The RNN's loop backwards: dys (D, T, N, H); dh_n (D, N, H); w_hh (D, H, H); hs from rnn_forward ->
// dg (D, T, N, H): gradients of the pre-activations, dh0 (D, N, H).
std::tuple<at::Tensor, at::Tensor> rnn_backward(const at::Tensor& dys, const at::Tensor& dh_n, const at::Tensor& w_hh,
                                                const at::Tensor& hs, const at::Tensor& active) {
  check(dys, "dys", 4), check(dh_n, "dh_n", 3), check(w_hh, "w_hh", 3), check(hs, "hs", 4);
  const int64_t D = dys.size(0), T = dys.size(1), N = dys.size(2), H = dys.size(3);
  TORCH_CHECK(w_hh.size(1) == H && hs.size(1) == T + 1, "asr rnn_loop: rnn_backward shapes disagree");
  auto dg = at::empty({D, T, N, H}, dys.options());
  auto dh0 = dh_n.clone();
  const float *dyp = dys.data_ptr<float>(), *hp = hs.data_ptr<float>();
  float *dgp = dg.data_ptr<float>(), *dhp = dh0.data_ptr<float>();
  backward_loop(dh0, dg, w_hh, active, {dg},
                [&](int64_t d, int64_t, int64_t row, int64_t at_s, int64_t at_h, float* carry) {
    const float *dhi = dhp + (d * N + row) * H, *dyi = dyp + at_s * H, *hn = hp + (at_h + N) * H;
    float* dgo = dgp + at_s * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t c = std::min(W, H - j);
      Vec dhv = load(dhi + j, c) + load(dyi + j, c), zero(0.f), h = load(hn + j, c);
      store(dhv * (Vec(1.f) - h * h), dgo + j, c);
      store(zero, carry + j, c);
    }
  });
  return {dg, dh0};
}

// out (M, N) = bias (N,) + x (M, K) rounded to bfloat16 @ w bfloat16 transposed, accumulated in float32: the input
// projections of inference at precision "bf16", w (N, K) in the module's layout for MKL's product, or (kp, N, 2)
// pairs for gemm_pairs (rows split between the threads).
// c (m, n) = bias (n,) (or none) + a (m, k) @ b (k, n) for many rows: eight rows by min(R, 3) vectors, then four
// rows by R vectors of columns at a time, R (2-6) fitted to n so that few columns are masked off (480: 6, 80: 5,
// 29: 2). small_gemm's 4 x 2 blocks suit a step's few rows; here, one thread, a 2-core AMD EPYC (2026-12-07): 97 x
// 320 @ 320 x 480 at 230 GFLOP/s against small_gemm's 200 and MKL's 99, the features' 290 x 257 @ 257 x 80 at 229
// against 98 and 99; the eight-row blocks (2026-12-08) 237-249 against 221-243 at 97-3348 rows.
// With beta 1 and no bias, c += a @ b (conv_frames_f32's later taps).
template <int64_t R>
void wide_rows(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c, const float* bias,
               float beta) {
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) rows_product<8, (R % 3 == 0 ? 3 : 2)>(n, k, a + i * k, b, beta, c + i * n, bias);
  for (; i + 4 <= m; i += 4) rows_product<4, R>(n, k, a + i * k, b, beta, c + i * n, bias);
  for (; i < m; ++i) rows_product<1, R>(n, k, a + i * k, b, beta, c + i * n, bias);
}

void wide_gemm(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c, const float* bias,
               float beta = 0.f) {
  const int64_t v = (n + W - 1) / W;
  int64_t best = 6;                                     // the widest block that masks off the fewest columns
  for (int64_t r = 6; r >= 2; --r)
    if ((v + r - 1) / r * r < (v + best - 1) / best * best) best = r;
  switch (best) {
    case 2: return wide_rows<2>(m, n, k, a, b, c, bias, beta);
    case 3: return wide_rows<3>(m, n, k, a, b, c, bias, beta);
    case 4: return wide_rows<4>(m, n, k, a, b, c, bias, beta);
    case 5: return wide_rows<5>(m, n, k, a, b, c, bias, beta);
    default: return wide_rows<6>(m, n, k, a, b, c, bias, beta);
  }
}

// out (m, n) = bias (n,) (or none) + x (m, k) @ w_t (k, n), float32, through wide_gemm four rows at a time: one
// input's projections and mel product where torch's BLAS runs AVX2 kernels on a CPU with AVX-512 (asr.native.linear,
// own_products).
// (D, H, G) float32 recurrent weights as the loops' panels (D, ceil(G / kPanel), H, kPanel), zero past G
// (panels_gemm): the weights asr.rnn keeps for inference where `own_products`.
at::Tensor panels(const at::Tensor& w_t) {
  check(w_t, "w_t", 3);
  const int64_t D = w_t.size(0), H = w_t.size(1), G = w_t.size(2), np = (G + kPanel - 1) / kPanel;
  auto padded = at::constant_pad_nd(w_t, {0, np * kPanel - G});                    // (D, H, np kPanel)
  return padded.view({D, H, np, kPanel}).permute({0, 2, 1, 3}).contiguous();
}

void linear_f32(const at::Tensor& out, const std::optional<at::Tensor>& bias, const at::Tensor& x,
                const at::Tensor& w_t) {
  check(out, "out", 2), check(x, "x", 2), check(w_t, "w_t", 2);
  if (bias) check(*bias, "bias", 1);
  const int64_t m = x.size(0), k = x.size(1), n = w_t.size(1);
  TORCH_CHECK(w_t.size(0) == k && out.size(0) == m && out.size(1) == n && (!bias || bias->size(0) == n),
              "asr rnn_loop: linear_f32 needs x (m, k), w_t (k, n), bias (n,) or none, and out (m, n)");
  const float* b0 = bias ? bias->data_ptr<float>() : nullptr;
  at::parallel_for(0, (m + 3) / 4, 1, [&](int64_t b, int64_t e) {   // blocks of four rows
    const int64_t r0 = 4 * b, r1 = std::min(m, 4 * e);
    wide_gemm(r1 - r0, n, k, x.data_ptr<float>() + r0 * k, w_t.data_ptr<float>(), out.data_ptr<float>() + r0 * n, b0);
  });
}

// out (N, T', Co) = the 1-D convolution, stride 1, of x (N, T, Ci) (frames in rows: time-major) by w (k, Ci, Co)
// (tap, input channel, output channel) + bias (Co,) or none, each input zero-padded by `pad` frames at both ends
// (T' = T + 2 pad - k + 1): tap by tap, c's rows += a's rows shifted by the tap @ w[tap], through wide_gemm; the
// frames past an input's ends are never read (no padded copy), and each tap's (Ci, Co) weights stay in L2 while
// every row passes. One input's conv2 in float32 (AcousticModel._front, asr.native.conv_frames), where oneDNN's
// convolution took 0.41 ms of a 2.2 ms request.
void conv_frames_f32(const at::Tensor& out, const std::optional<at::Tensor>& bias, const at::Tensor& x,
                     const at::Tensor& w, int64_t pad) {
  check(out, "out", 3), check(x, "x", 3), check(w, "w", 3);
  if (bias) check(*bias, "bias", 1);
  const int64_t N = x.size(0), T = x.size(1), ci = x.size(2), k = w.size(0), co = w.size(2), t_out = out.size(1);
  TORCH_CHECK(w.size(1) == ci && out.size(0) == N && out.size(2) == co && pad >= 0 &&
              t_out == std::max<int64_t>(0, T + 2 * pad - k + 1) && (!bias || bias->size(0) == co),
              "asr rnn_loop: conv_frames_f32 needs x (N, T, Ci), w (k, Ci, Co), bias (Co,) or none, "
              "out (N, T + 2 pad - k + 1, Co)");
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *b0 = bias ? bias->data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t blocks = (t_out + 7) / 8;                      // eight output frames a block
  at::parallel_for(0, N * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e;) {                               // one input's run of blocks at a time
      const int64_t n = u / blocks, r0 = 8 * (u % blocks), last = std::min(e, (n + 1) * blocks);
      const int64_t r1 = std::min(t_out, 8 * (last - n * blocks));
      float* c = op + (n * t_out + r0) * co;
      for (int64_t r = r0; r < r1; ++r)
        if (b0) std::memcpy(op + (n * t_out + r) * co, b0, co * sizeof(float));
        else std::memset(op + (n * t_out + r) * co, 0, co * sizeof(float));
      for (int64_t j = 0; j < k; ++j) {                          // output frame t reads input frame t + j - pad
        const int64_t lo = std::max(r0, pad - j), hi = std::min(r1, T + pad - j);
        if (hi > lo)
          wide_gemm(hi - lo, co, ci, xp + (n * T + lo + j - pad) * ci, wp + j * ci * co, c + (lo - r0) * co,
                    nullptr, 1.f);
      }
      u = last;
    }
  });
}

// ATen's exact GELU, x / 2 (1 + erf(x / sqrt 2)), in its own vector operations.
inline Vec gelu(const Vec& x) { return Vec(0.5f) * x * (Vec(1.f) + (x * Vec(static_cast<float>(M_SQRT1_2))).erf()); }

// conv1 of front2d_f32 at M frequencies f1 .. f1 + M - 1 of the frame whose first time tap is t0, channels
// [c, c + 2W): the bias plus each tap's feature broadcast against the taps' weight vectors, the time taps [j0, j1)
// (the others fall outside the input: zero); `edge`: some frequency taps fall outside too (checked one by one).
template <int64_t M>
void conv1_taps(const float* xn, int64_t t0, int64_t f1, int64_t c, int64_t j0, int64_t j1, int64_t F, int64_t kf1,
                int64_t kt1, int64_t sf1, int64_t pf1, int64_t C1, const float* w1p, const float* b1p, float* o,
                bool edge) {
  const int64_t w0 = std::min(W, C1 - c), w1n = std::max<int64_t>(0, std::min(W, C1 - c - W));
  Vec a0[M], a1[M];
  for (int64_t m = 0; m < M; ++m) a0[m] = load(b1p + c, w0), a1[m] = w1n ? load(b1p + c + W, w1n) : Vec(0.f);
  for (int64_t j = j0; j < j1; ++j) {
    const float* xr = xn + (t0 + j) * F + f1 * sf1 - pf1;      // the features of time t0 + j from frequency tap 0
    for (int64_t i = 0; i < kf1; ++i) {
      const float* wt = w1p + (i * kt1 + j) * C1 + c;
      const Vec v0 = load(wt, w0), v1 = w1n ? load(wt + W, w1n) : Vec(0.f);
      for (int64_t m = 0; m < M; ++m) {
        const int64_t f = (f1 + m) * sf1 + i - pf1;
        if (edge && (f < 0 || f >= F)) continue;
        const Vec x(xr[m * sf1 + i]);
        a0[m] = at::vec::fmadd(x, v0, a0[m]), a1[m] = at::vec::fmadd(x, v1, a1[m]);
      }
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    store(a0[m], o + (f1 + m) * C1 + c, w0);
    if (w1n) store(a1[m], o + (f1 + m) * C1 + c + W, w1n);
  }
}

// The 2-D front end of inference in float32 (AcousticModel._front over whole inputs, asr.native.front2d): features
// x (N, T, F) -> out (N, T1, C2 F2), each frame's C2 x F2 outputs channel by channel (the module's reshape's order)
// = gelu(conv1f(gelu(conv1(x)))), where conv1 takes 1 -> C1 channels over (frequency, time), kernel (kf1, kt1),
// stride (sf1, st1), zero padding (pf1, pt1), weights w1 (kf1, kt1, C1) and b1 (C1); conv1f C1 -> C2 over frequency,
// kernel (kf2, 1), stride (sf2, 1), padding (pf2, 0), w2 (kf2, C1, C2) and b2 (C2). Frame by frame: conv1's F1 x C1
// outputs (kf1 kt1 taps each, a feature broadcast against C1-wide weight vectors) into a buffer with pf2 zero rows
// at each end, then conv1f as one product whose rows (kf2 C1 wide) overlap in it, sf2 C1 apart. oneDNN's two
// convolutions, their GELUs and the reshape's copy took 0.37 ms of a 2.0 ms request (the EPYC).
void front2d_f32(const at::Tensor& out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                 const at::Tensor& w2, const at::Tensor& b2, int64_t sf1, int64_t st1, int64_t pf1, int64_t pt1,
                 int64_t sf2, int64_t pf2) {
  check(out, "out", 3), check(x, "x", 3), check(w1, "w1", 3), check(b1, "b1", 1), check(w2, "w2", 3);
  check(b2, "b2", 1);
  const int64_t N = x.size(0), T = x.size(1), F = x.size(2), kf1 = w1.size(0), kt1 = w1.size(1), C1 = w1.size(2);
  const int64_t kf2 = w2.size(0), C2 = w2.size(2), T1 = out.size(1);
  TORCH_CHECK(sf1 > 0 && st1 > 0 && sf2 > 0 && pf1 >= 0 && pt1 >= 0 && pf2 >= 0 && F + 2 * pf1 >= kf1,
              "asr rnn_loop: front2d_f32 needs positive strides, paddings of zero or more, and frequencies enough");
  const int64_t F1 = (F + 2 * pf1 - kf1) / sf1 + 1;
  TORCH_CHECK(F1 + 2 * pf2 >= kf2, "asr rnn_loop: front2d_f32: conv1 leaves too few frequencies for conv1f");
  const int64_t F2 = (F1 + 2 * pf2 - kf2) / sf2 + 1;
  TORCH_CHECK(T + 2 * pt1 >= kt1 && T1 == (T + 2 * pt1 - kt1) / st1 + 1 && out.size(0) == N &&
              out.size(2) == C2 * F2 && b1.size(0) == C1 && w2.size(1) == C1 && b2.size(0) == C2,
              "asr rnn_loop: front2d_f32 needs x (N, T, F), w1 (kf1, kt1, C1), b1 (C1,), w2 (kf2, C1, C2), b2 (C2,) "
              "and out (N, T1, C2 F2) of the convolutions' sizes");
  const float *xp = x.data_ptr<float>(), *w1p = w1.data_ptr<float>(), *b1p = b1.data_ptr<float>();
  const float *w2p = w2.data_ptr<float>(), *b2p = b2.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t rows = F1 + 2 * pf2, k2 = kf2 * C1, lda = sf2 * C1;
  // conv1's frequencies whose taps all fall inside the features: [in0, in1)
  const int64_t in0 = std::min(F1, (pf1 + sf1 - 1) / sf1);
  const int64_t in1 = std::max(in0, std::min(F1, (F + pf1 - kf1) / sf1 + 1));
  at::parallel_for(0, N * T1, 1, [&](int64_t b, int64_t e) {
    // conv1's outputs of a frame with pf2 zero rows at each end (those stay zero); conv1f's (F2, C2)
    std::vector<float> buf(rows * C1, 0.f), frame(F2 * C2);
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / T1, t1 = u % T1, t0 = t1 * st1 - pt1;
      const int64_t j0 = std::max<int64_t>(0, -t0), j1 = std::min(kt1, T - t0);   // the time taps inside
      const float* xn = xp + n * T * F;
      float* o = buf.data() + pf2 * C1;                         // conv1 and its GELU
      for (int64_t c = 0; c < C1; c += 2 * W) {
        int64_t f1 = 0;
        for (; f1 < in0; ++f1) conv1_taps<1>(xn, t0, f1, c, j0, j1, F, kf1, kt1, sf1, pf1, C1, w1p, b1p, o, true);
        for (; f1 + 4 <= in1; f1 += 4)
          conv1_taps<4>(xn, t0, f1, c, j0, j1, F, kf1, kt1, sf1, pf1, C1, w1p, b1p, o, false);
        for (; f1 < F1; ++f1)
          conv1_taps<1>(xn, t0, f1, c, j0, j1, F, kf1, kt1, sf1, pf1, C1, w1p, b1p, o, f1 >= in1);
      }
      for (int64_t i = 0; i < F1 * C1; i += W) {
        const int64_t w = std::min(W, F1 * C1 - i);
        store(gelu(load(o + i, w)), o + i, w);
      }
      int64_t f2 = 0;                                         // conv1f: frame row f2 = buf[f2 sf2 ...] @ w2 + b2
      for (; f2 + 4 <= F2; f2 += 4)
        rows_product<4, 2>(C2, k2, buf.data() + f2 * lda, w2p, 0.f, frame.data() + f2 * C2, b2p, 0, 0, lda);
      for (; f2 < F2; ++f2)
        rows_product<1, 2>(C2, k2, buf.data() + f2 * lda, w2p, 0.f, frame.data() + f2 * C2, b2p, 0, 0, lda);
      for (int64_t i = 0; i < F2 * C2; i += W) {
        const int64_t w = std::min(W, F2 * C2 - i);
        store(gelu(load(frame.data() + i, w)), frame.data() + i, w);
      }
      float* on = op + u * C2 * F2;                             // channel by channel: out[c F2 + f2]
      for (int64_t r = 0; r < F2; ++r)
        for (int64_t c = 0; c < C2; ++c) on[c * F2 + r] = frame[r * C2 + c];
    }
  });
}

void linear_bf16(const at::Tensor& out, const at::Tensor& bias, const at::Tensor& x, const at::Tensor& w) {
  check(out, "out", 2), check(bias, "bias", 1), check(x, "x", 2);
  const bool pairs = w.dim() == 3 && w.size(2) == 2;
  const int64_t n = pairs ? w.size(1) : w.size(0), k = x.size(1), m = x.size(0);
  TORCH_CHECK((pairs ? cpu_has_bf16_pairs() && w.size(0) == (k + 1) / 2 : find_gemm_bf16() && w.dim() == 2 &&
               w.size(1) == k) && w.scalar_type() == at::kBFloat16 && w.is_contiguous() && out.size(0) == m &&
              out.size(1) == n && bias.size(0) == n, "asr rnn_loop: linear_bf16 needs (kp, N, 2) pairs on a CPU "
              "with AVX-512 BF16 or (N, K) and MKL's gemm_bf16bf16f32, and shapes that agree");
  if (m == 0) return;
  if (!pairs) {
    out.copy_(bias.expand_as(out));
    gemm(m, n, k, x.to(at::kBFloat16).data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(), 1.f,
         out.data_ptr<float>(), true);
    return;
  }
  const int64_t kp = w.size(0);
  auto xb = at::empty({m, 2 * kp}, w.options());
  at::parallel_for(0, (m + 3) / 4, 1, [&](int64_t b, int64_t e) {   // blocks of four rows
    const int64_t r0 = 4 * b, r1 = std::min(m, 4 * e);
    at::BFloat16* xr = xb.data_ptr<at::BFloat16>() + r0 * 2 * kp;
    to_pairs(x.data_ptr<float>() + r0 * k, r1 - r0, k, xr, kp);
    gemm_pairs(r1 - r0, n, kp, xr, w.data_ptr<at::BFloat16>(), bias.data_ptr<float>(), out.data_ptr<float>() + r0 * n);
  });
}

}  // namespace

TORCH_LIBRARY(asr_rnn_loop, m) {
  m.def("gru_forward(Tensor g, Tensor w_hh_t, Tensor b_hn, Tensor h0, Tensor active, bool saved)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_backward(Tensor dys, Tensor dh_n, Tensor w_hh, Tensor hs, Tensor ghn, Tensor rz, Tensor n,"
        " Tensor active) -> (Tensor, Tensor, Tensor)");
  m.def("lstm_forward(Tensor g, Tensor w_hh_t, Tensor h0, Tensor c0, Tensor active, bool saved)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_backward(Tensor dys, Tensor dh_n, Tensor dc_n, Tensor w_hh, Tensor cs, Tensor q, Tensor tc,"
        " Tensor active) -> (Tensor, Tensor, Tensor)");
  m.def("rnn_forward(Tensor g, Tensor w_hh_t, Tensor h0, Tensor active) -> Tensor");
  m.def("rnn_backward(Tensor dys, Tensor dh_n, Tensor w_hh, Tensor hs, Tensor active)"
        " -> (Tensor, Tensor)");
  m.def("blas() -> bool", [] { return find_sgemm() != nullptr; });  // the steps' products call sgemm directly
  m.def("blas_bf16() -> bool", [] { return find_gemm_bf16() != nullptr; });  // ... and at "bf16" MKL's bf16 gemm
  m.def("bf16_pairs() -> bool", [] { return cpu_has_bf16_pairs(); });  // ... or gemm_pairs, on AVX-512 BF16
  m.def("own_products(bool on) -> bool", [](bool on) { return own_products.exchange(on); });  // see gemm
  m.def("linear_bf16(Tensor(a!) out, Tensor bias, Tensor x, Tensor w) -> ()");
  m.def("linear_f32(Tensor(a!) out, Tensor? bias, Tensor x, Tensor w_t) -> ()");
  m.def("conv_frames_f32(Tensor(a!) out, Tensor? bias, Tensor x, Tensor w, int pad) -> ()");
  m.def("front2d_f32(Tensor(a!) out, Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, int sf1, int st1,"
        " int pf1, int pt1, int sf2, int pf2) -> ()");
  m.def("panels(Tensor w_t) -> Tensor");
}

TORCH_LIBRARY_IMPL(asr_rnn_loop, CPU, m) {
  m.impl("gru_forward", gru_forward);
  m.impl("gru_backward", gru_backward);
  m.impl("lstm_forward", lstm_forward);
  m.impl("lstm_backward", lstm_backward);
  m.impl("rnn_forward", rnn_forward);
  m.impl("rnn_backward", rnn_backward);
  m.impl("linear_bf16", linear_bf16);
  m.impl("linear_f32", linear_f32);
  m.impl("conv_frames_f32", conv_frames_f32);
  m.impl("front2d_f32", front2d_f32);
  m.impl("panels", panels);
}
