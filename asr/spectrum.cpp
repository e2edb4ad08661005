// The features' step from a spectrum to its filterbank energies, compiled: asr/native.py builds it with the
// recurrent layers' loops (one extension, asr/rnn_loop.cpp) and asr/features.py calls it, where its three tensor
// passes (|spectrum|^2, the product by the mel matrix, the floored log) took 23 of a 52 ms feature pass over AN4
// test in batches (one thread, a 2-core AMD EPYC), the product doing all K x F multiplications of a matrix whose
// filters each cover a few bins.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();

// R frames' energies: rows [r, r + R) of out from spectrum's, as mel_energies below. The R frames' sums are R
// independent chains of fmas (one chain waits on each fma's latency; R of them keep the unit busy), each bin's W
// weights loaded once for all R.
template <int64_t R>
void frames_energies(int64_t r, int64_t k, int64_t f, const float* s, const float* w, const std::vector<int64_t>& lo,
                     const std::vector<int64_t>& hi, float floor, float* o, float* power) {
  for (int64_t i = 0; i < R; ++i) {                                   // power[i * k + b]: frame r + i, bin b
    const float* x = s + (r + i) * k * 2;
    float* p = power + i * k;
    int64_t b = 0;
    for (; b + W <= k; b += W) {
      auto [re, im] = at::vec::deinterleave2(Vec::loadu(x + 2 * b), Vec::loadu(x + 2 * b + W));
      (re * re + im * im).store(p + b);
    }
    for (; b < k; ++b) p[b] = x[2 * b] * x[2 * b] + x[2 * b + 1] * x[2 * b + 1];
  }
  for (int64_t g = 0; g < static_cast<int64_t>(lo.size()); ++g) {
    const int64_t j = g * W, n = std::min(W, f - j);
    Vec sum[R];
    for (int64_t i = 0; i < R; ++i) sum[i] = Vec(0.f);
    for (int64_t b = lo[g]; b < hi[g]; ++b) {
      const Vec wb = n == W ? Vec::loadu(w + b * f + j) : Vec::loadu(w + b * f + j, n);
      for (int64_t i = 0; i < R; ++i) sum[i] = at::vec::fmadd(Vec(power[i * k + b]), wb, sum[i]);
    }
    for (int64_t i = 0; i < R; ++i) {
      sum[i] = at::vec::maximum(sum[i], Vec(floor)).log();
      n == W ? sum[i].store(o + (r + i) * f + j) : sum[i].store(o + (r + i) * f + j, n);
    }
  }
}

// out (M, F) = log(max(power @ mel, floor)), floor > 0, for power (M, K) the squared
// magnitudes of spectrum (M, K, 2) (real and imaginary parts) and mel (K, F) a filterbank. W filters at a time:
// their sums one vector, to which each bin in the run where any of them has a weight adds its power times the
// bin's W weights (one broadcast, one fma): the product's nonzero terms and the zeros beside them, summed bin by
// bin. Eight frames at a time: 1100 -> ~250 cycles a frame at 80 filters over 257 bins (the EPYC).
void mel_energies(const at::Tensor& out, const at::Tensor& spectrum, const at::Tensor& mel, double floor) {
  TORCH_CHECK(spectrum.dim() == 3 && spectrum.size(2) == 2 && mel.dim() == 2 && out.dim() == 2 &&
                  spectrum.size(1) == mel.size(0) && out.size(0) == spectrum.size(0) && out.size(1) == mel.size(1),
              "asr spectrum: mel_energies needs spectrum (M, K, 2), mel (K, F) and out (M, F)");
  TORCH_CHECK(floor > 0, "asr spectrum: mel_energies needs a log floor above zero");
  for (const at::Tensor* t : {&out, &spectrum, &mel})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "asr spectrum: mel_energies takes contiguous float32 CPU tensors");
  const int64_t m = spectrum.size(0), k = spectrum.size(1), f = mel.size(1), groups = (f + W - 1) / W;
  const float* w = mel.data_ptr<float>();
  std::vector<int64_t> lo(groups, k), hi(groups, 0);  // group g's bins with a weight: [lo, hi)
  for (int64_t b = 0; b < k; ++b)
    for (int64_t j = 0; j < f; ++j)
      if (w[b * f + j] != 0.f) {
        lo[j / W] = std::min(lo[j / W], b);
        hi[j / W] = std::max(hi[j / W], b + 1);
      }
  const float* s = spectrum.data_ptr<float>();
  float* o = out.data_ptr<float>();
  constexpr int64_t R = 8;
  at::parallel_for(0, (m + R - 1) / R, 8, [&](int64_t b0, int64_t b1) {
    std::vector<float> power(R * k);
    int64_t r = b0 * R;
    for (; r + R <= std::min(m, b1 * R); r += R) frames_energies<R>(r, k, f, s, w, lo, hi, floor, o, power.data());
    for (; r < std::min(m, b1 * R); ++r) frames_energies<1>(r, k, f, s, w, lo, hi, floor, o, power.data());
  });
}

}  // namespace

TORCH_LIBRARY(asr_spectrum, m) {
  m.def("mel_energies(Tensor(a!) out, Tensor spectrum, Tensor mel, float floor) -> ()");
}

TORCH_LIBRARY_IMPL(asr_spectrum, CPU, m) { m.impl("mel_energies", mel_energies); }
