// Adam-mini's step for parameters with one second moment per block (a row of the parameter viewed a block per
// row), on CPU, in one sweep: each block's mean of g^2, its second moment and step factor, then its m and
// parameter updates while the block's gradient is still in cache. The torch.compile'd form of the same update
// reads g twice (inductor writes the block reduction and the elementwise update as separate loops over the whole
// tensor); here each element of g is read from memory once, so a step moves the bytes the state layout implies:
// the parameter read and written, g read, m read and written.
//
// Same arithmetic as adamlab.optim._adamw.single_tensor_adamw (the ground truth; tests/optim/test_fused.py holds
// the two together): with s = sign, d = 1 - lr wd, w = 1 - beta1, and per block
//   v <- beta2 v + (1 - beta2) mean(g^2),  f = -lr / (1 - beta1^t) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// and per element
//   g <- s g,  m <- lerp(m, g, w),  p <- p d + f m.
// The scalars arrive as one row per parameter, as the compiled path takes them:
//   [sign, decay, 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t), eps, -lr / (1 - beta1^t)].

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>

namespace {

template <typename T>
struct Scalars {
  T sign, decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step;
};

// Sum of g^2 over n elements: in T over chunks of 256 (independent partial sums the compiler vectorises), the
// chunks' sums in double. One float accumulator over a 70,000-element block drifted 1.2e-6 from the reference's
// pairwise sum; a double accumulator throughout halves the vector width (5-8% slower on a one-thread profile).
template <typename T>
inline double sum_of_squares(const T* __restrict__ grad, int64_t n) {
  double total = 0;
  for (int64_t start = 0; start < n; start += 256) {
    const int64_t end = std::min<int64_t>(n, start + 256);
    T chunk = 0;
#pragma omp simd reduction(+ : chunk)
    for (int64_t i = start; i < end; ++i) {
      chunk += grad[i] * grad[i];
    }
    total += chunk;
  }
  return total;
}

template <typename T>
inline T step_factor(T* second_moment, T mean, const Scalars<T>& c) {
  T v = *second_moment * c.beta2 + mean * c.one_minus_beta2;
  *second_moment = v;
  return c.neg_step / (std::sqrt(v) / c.bias_correction2_sqrt + c.eps);
}

// m <- lerp(m, g, w) with torch.lerp's formula (ATen's: from the nearer end, so weights 0 and 1 give the ends
// exactly). Its branch on the weight is taken once per block: inside the loop it kept the compiler from vectorising
// (2.4x torch's fused AdamW on a one-thread profile, against 0.8x with the branch outside).
template <typename T>
inline void apply(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg, int64_t n, T factor,
                  const Scalars<T>& c) {
  const T weight = c.one_minus_beta1, sign = c.sign, decay = c.decay;
  if (weight < T(0.5)) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T m = exp_avg[i] + weight * (sign * grad[i] - exp_avg[i]);
      exp_avg[i] = m;
      param[i] = param[i] * decay + m * factor;
    }
  } else {
    const T rest = T(1) - weight;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T g = sign * grad[i];
      T m = g - (g - exp_avg[i]) * rest;
      exp_avg[i] = m;
      param[i] = param[i] * decay + m * factor;
    }
  }
}

// A block this large (elements) is split over all threads, since a tensor of few such blocks would leave threads
// idle and a block no longer stays in a core's cache with its m and parameter: it is reduced first and updated in
// a second sweep (two reads of g, as a whole-tensor second moment forces).
constexpr int64_t kLargeBlock = 1 << 16;

template <typename T>
void step_one(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
              const Scalars<T>& c) {
  const int64_t blocks = exp_avg_sq.numel();
  const int64_t size = blocks > 0 ? param.numel() / blocks : 0;
  T* p = param.data_ptr<T>();
  const T* g = grad.data_ptr<T>();
  T* m = exp_avg.data_ptr<T>();
  T* v = exp_avg_sq.data_ptr<T>();
  if (size >= kLargeBlock) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t offset = b * size;
      double total = at::parallel_reduce(0, size, 4096, 0.0, [&](int64_t begin, int64_t end, double partial) {
        return partial + sum_of_squares(g + offset + begin, end - begin);
      }, std::plus<double>());
      T factor = step_factor(v + b, T(total / double(size)), c);
      at::parallel_for(0, size, 4096, [&](int64_t begin, int64_t end) {
        apply(p + offset + begin, g + offset + begin, m + offset + begin, end - begin, factor, c);
      });
    }
    return;
  }
  // one task covers whole blocks: reduce a block, then update it while it is in cache
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(size, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t offset = b * size;
      T factor = step_factor(v + b, T(sum_of_squares(g + offset, size) / double(size)), c);
      apply(p + offset, g + offset, m + offset, size, factor, c);
    }
  });
}

void adam_mini_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, const at::Tensor& scalars) {
  TORCH_CHECK(params.size() == grads.size() && params.size() == exp_avgs.size() &&
                  params.size() == exp_avg_sqs.size() && scalars.dim() == 2 &&
                  scalars.size(0) == static_cast<int64_t>(params.size()) && scalars.size(1) == 8,
              "adam_mini_step: one grad, exp_avg, exp_avg_sq and row of 8 scalars per parameter");
  at::Tensor rows = scalars.to(at::kDouble).contiguous();
  const double* row = rows.data_ptr<double>();
  for (size_t i = 0; i < params.size(); ++i, row += 8) {
    at::Tensor param = params[i], exp_avg = exp_avgs[i], exp_avg_sq = exp_avg_sqs[i];
    const at::Tensor& grad = grads[i];
    TORCH_CHECK(param.device().is_cpu() && param.is_contiguous() && grad.is_contiguous() &&
                    exp_avg.is_contiguous() && exp_avg_sq.is_contiguous(),
                "adam_mini_step: contiguous CPU tensors only");
    TORCH_CHECK(param.scalar_type() == grad.scalar_type() && param.scalar_type() == exp_avg.scalar_type() &&
                    param.scalar_type() == exp_avg_sq.scalar_type(),
                "adam_mini_step: parameter, gradient and state of one dtype");
    TORCH_CHECK(grad.numel() == param.numel() && exp_avg.numel() == param.numel() &&
                    (exp_avg_sq.numel() == 0 ? param.numel() == 0 : param.numel() % exp_avg_sq.numel() == 0),
                "adam_mini_step: the second moment must have one value per equal block of the parameter");
    if (exp_avg_sq.numel() == 0) {
      continue;  // no blocks (a parameter with a zero-size dimension): nothing to update
    }
    AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "adam_mini_step", [&] {
      // the scalars in the parameter's type, as the compiled path's float32/float64 scalars tensor
      Scalars<scalar_t> c{scalar_t(row[0]), scalar_t(row[1]), scalar_t(row[2]), scalar_t(row[3]),
                          scalar_t(row[4]), scalar_t(row[5]), scalar_t(row[6]), scalar_t(row[7])};
      step_one<scalar_t>(param, grad, exp_avg, exp_avg_sq, c);
    });
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adamlab, m) {  // each kernel of the namespace is its own build
  m.def("adam_mini_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor scalars) -> ()");
  m.impl("adam_mini_step", c10::DispatchKey::CPU, adam_mini_step);
}
