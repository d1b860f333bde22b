// CAME's step for its factored (2-D) parameters, on CPU, in the four sweeps over the matrix that its data
// dependencies force and no more: each sweep ends in a reduction over the whole matrix that the next one needs.
//   1. g:          row and column sums of g^2             -> r, c and the update's factors
//   2. g:          sum of u^2, u = g * row_factor * col_factor -> the clip divisor
//   3. g, m -> m:  m <- lerp(m, u / clip, 1 - beta1), row and column sums of the instability (u / clip - m)^2
//                                                          -> R, C and the step's factors
//   4. m, p -> p:  p <- p d + m * step_row_factor * step_col_factor
// So g is read three times, m twice and written once, p read and written once. The torch.compile'd form of the
// same step (three graphs) writes the row and the column reductions as separate loops and streams the matrix 11-13
// times; one row's sums and one row's column contributions are taken here in the same loop over the row.
//
// Same arithmetic as adamlab.optim.came._update_factored (the ground truth; tests/optim/test_fused.py holds the
// two together): the row factor rsqrt(r / mean(r)) (negated for maximize), the column factor rsqrt(c), the
// update (g * row_factor) * col_factor, divided by max(1, RMS(u) / d), torch.lerp's formula, and the parameter
// p d + (m * (-lr) rsqrt(R / mean(R))) * rsqrt(C). Sums are taken in float chunks added up in double: closer to
// float64 than the float32 reference itself (on a 512 x 1376 matrix its clip norm, one float32 reduction, is 7e-6
// off float64 after a step; these sums keep every tensor within 5e-7).
// The scalars arrive as the compiled path takes them:
//   [sign, decay, -lr, 1 - beta1, 1 - beta2, 1 - beta3, eps1, eps2, clip_threshold].

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace {

template <typename T>
struct Scalars {
  T sign, decay, neg_lr, one_minus_beta1, one_minus_beta2, one_minus_beta3, eps1, eps2;
};

// rows per task of a sweep, and rows summed in T before a column's partial sum is added to its double total
constexpr int64_t kRowGrain = 16;
constexpr int64_t kColumnChunk = 64;

// torch.lerp's formula (ATen's: from the nearer end, so weights 0 and 1 give the ends exactly)
template <typename T>
inline T lerp(T start, T end, T weight) {
  return weight < T(0.5) ? start + weight * (end - start) : end - (end - start) * (T(1) - weight);
}

// A row's sum over its columns: in T over chunks of 256 (`chunk(start, n)` sums one; independent partial sums the
// compiler vectorises), the chunks' sums in double.
template <typename Chunk>
inline double row_sum(int64_t cols, Chunk&& chunk) {
  double total = 0;
  for (int64_t start = 0; start < cols; start += 256) {
    total += chunk(start, std::min<int64_t>(256, cols - start));
  }
  return total;
}

// The loops over n columns of one row. Each takes its pointers as __restrict__ and its scalars by value: reading
// them through a lambda's captured references, the compiler could not rule out that a store changed them and
// ran the scalar loop (3.9x torch's fused AdamW on a one-thread profile).

// sweep 1: g^2 into the columns' sums; returns the chunk's sum
template <typename T>
inline T squares(const T* __restrict__ g, T* __restrict__ col_sums, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const T square = g[j] * g[j];
    col_sums[j] += square;
    sum += square;
  }
  return sum;
}

// sweep 2: the sum of u^2, u = (g * row_factor) * col_factor
template <typename T>
inline T update_squares(const T* __restrict__ g, const T* __restrict__ col_factor, T row_factor, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const T u = g[j] * row_factor * col_factor[j];
    sum += u * u;
  }
  return sum;
}

// sweep 3: m <- lerp(m, u / clip, w) (torch.lerp's formula, its branch on w taken once per chunk: `near_start`
// is w < 0.5), the instability (u / clip - m)^2 into the columns' sums; returns the chunk's sum
template <typename T, bool near_start>
inline T moment(const T* __restrict__ g, T* __restrict__ m, T* __restrict__ col_sums,
                const T* __restrict__ col_factor, T row_factor, T clip, T w, int64_t n) {
  const T rest = T(1) - w;
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const T u = g[j] * row_factor * col_factor[j] / clip;
    const T new_m = near_start ? m[j] + w * (u - m[j]) : u - (u - m[j]) * rest;
    m[j] = new_m;
    const T instability = (u - new_m) * (u - new_m);
    col_sums[j] += instability;
    sum += instability;
  }
  return sum;
}

// sweep 4: p <- p d + (m * row_factor) * col_factor
template <typename T>
inline void parameter(T* __restrict__ p, const T* __restrict__ m, const T* __restrict__ col_factor, T row_factor,
                      T decay, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    p[j] = p[j] * decay + m[j] * row_factor * col_factor[j];
  }
}

// A sweep over the rows that ends in each row's sum and each column's sum of square(i, j): `row_pass(i, cols)`
// does whatever else the sweep does to row i and adds the row's squares into cols (T, one per column), returning
// the row's sum. Each thread adds its rows' column sums into its own double buffer every kColumnChunk rows; the
// buffers are added up at the end.
template <typename T, typename RowPass>
void sweep_rows(int64_t rows, int64_t cols, std::vector<double>& row_sums, std::vector<double>& col_sums,
                RowPass&& row_pass) {
  const int threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * cols, 0.0);
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    double* mine = partial.data() + static_cast<size_t>(at::get_thread_num()) * cols;
    std::vector<T> chunk(cols);
    for (int64_t start = begin; start < end; start += kColumnChunk) {
      std::fill(chunk.begin(), chunk.end(), T(0));
      const int64_t stop = std::min<int64_t>(end, start + kColumnChunk);
      for (int64_t i = start; i < stop; ++i) {
        row_sums[i] = row_pass(i, chunk.data());
      }
      for (int64_t j = 0; j < cols; ++j) {
        mine[j] += chunk[j];
      }
    }
  });
  std::fill(col_sums.begin(), col_sums.end(), 0.0);
  for (int t = 0; t < threads; ++t) {
    const double* theirs = partial.data() + static_cast<size_t>(t) * cols;
    for (int64_t j = 0; j < cols; ++j) {
      col_sums[j] += theirs[j];
    }
  }
}

// Folds a sweep's sums into the running statistics (stat <- lerp(stat, sum / count + eps, weight), in T as the
// reference's mean, add and lerp are) and returns the factors rsqrt(row / mean(row)) * row_scale and rsqrt(col).
template <typename T>
void fold(const std::vector<double>& row_sums, const std::vector<double>& col_sums, T* row_stat, T* col_stat,
          T eps, T weight, T row_scale, std::vector<T>& row_factor, std::vector<T>& col_factor) {
  const int64_t rows = static_cast<int64_t>(row_sums.size()), cols = static_cast<int64_t>(col_sums.size());
  for (int64_t i = 0; i < rows; ++i) {
    row_stat[i] = lerp(row_stat[i], T(row_sums[i] / double(cols)) + eps, weight);
  }
  for (int64_t j = 0; j < cols; ++j) {
    col_stat[j] = lerp(col_stat[j], T(col_sums[j] / double(rows)) + eps, weight);
    col_factor[j] = T(1) / std::sqrt(col_stat[j]);
  }
  double total = 0;
  for (int64_t i = 0; i < rows; ++i) {
    total += row_stat[i];
  }
  const T mean = T(total / double(rows));
  for (int64_t i = 0; i < rows; ++i) {
    row_factor[i] = T(1) / std::sqrt(row_stat[i] / mean) * row_scale;
  }
}

template <typename T>
void step_one(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& sq_row, at::Tensor& sq_col,
              at::Tensor& res_row, at::Tensor& res_col, const Scalars<T>& c, double clip_threshold) {
  const int64_t rows = param.size(0), cols = param.size(1);
  T* p = param.data_ptr<T>();
  const T* g = grad.data_ptr<T>();
  T* m = exp_avg.data_ptr<T>();
  std::vector<double> row_sums(rows), col_sums(cols);
  std::vector<T> row_factor(rows), col_factor(cols);
  const T* cf = col_factor.data();

  // 1. the second moment's row and column statistics
  sweep_rows<T>(rows, cols, row_sums, col_sums, [&](int64_t i, T* col_chunk) {
    return row_sum(cols, [&](int64_t j, int64_t n) { return squares(g + i * cols + j, col_chunk + j, n); });
  });
  fold(row_sums, col_sums, sq_row.data_ptr<T>(), sq_col.data_ptr<T>(), c.eps1, c.one_minus_beta2, c.sign,
       row_factor, col_factor);

  // 2. the update's RMS, for its clipping
  const double square_sum = at::parallel_reduce(0, rows, kRowGrain, 0.0, [&](int64_t begin, int64_t end, double sum) {
    for (int64_t i = begin; i < end; ++i) {
      sum += row_sum(cols, [&](int64_t j, int64_t n) {
        return update_squares(g + i * cols + j, cf + j, row_factor[i], n);
      });
    }
    return sum;
  }, std::plus<double>());
  const T clip = std::max(T(std::sqrt(square_sum)) / T(std::sqrt(double(rows * cols)) * clip_threshold), T(1));

  // 3. m, and the instability's row and column statistics
  const T w = c.one_minus_beta1;
  sweep_rows<T>(rows, cols, row_sums, col_sums, [&](int64_t i, T* col_chunk) {
    return row_sum(cols, [&](int64_t j, int64_t n) {
      const int64_t at = i * cols + j;
      return w < T(0.5) ? moment<T, true>(g + at, m + at, col_chunk + j, cf + j, row_factor[i], clip, w, n)
                        : moment<T, false>(g + at, m + at, col_chunk + j, cf + j, row_factor[i], clip, w, n);
    });
  });
  fold(row_sums, col_sums, res_row.data_ptr<T>(), res_col.data_ptr<T>(), c.eps2, c.one_minus_beta3, c.neg_lr,
       row_factor, col_factor);

  // 4. the parameter
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      parameter(p + i * cols, m + i * cols, cf, row_factor[i], c.decay, cols);
    }
  });
}

void came_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList sq_rows,
               at::TensorList sq_cols, at::TensorList res_rows, at::TensorList res_cols, const at::Tensor& scalars) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && sq_rows.size() == n && sq_cols.size() == n &&
                  res_rows.size() == n && res_cols.size() == n && scalars.numel() == 9,
              "came_step: one grad, exp_avg and four statistics per parameter, and 9 scalars");
  at::Tensor row = scalars.to(at::kDouble).contiguous();
  const double* s = row.data_ptr<double>();
  for (size_t i = 0; i < n; ++i) {
    at::Tensor param = params[i], exp_avg = exp_avgs[i], sq_row = sq_rows[i], sq_col = sq_cols[i],
               res_row = res_rows[i], res_col = res_cols[i];
    const at::Tensor& grad = grads[i];
    TORCH_CHECK(param.device().is_cpu() && param.dim() == 2, "came_step: 2-D CPU parameters only");
    const auto dtype = param.scalar_type();
    const at::Tensor* others[] = {&grad, &exp_avg, &sq_row, &sq_col, &res_row, &res_col};
    for (const at::Tensor* t : others) {
      TORCH_CHECK(t->is_contiguous() && t->scalar_type() == dtype && t->device().is_cpu(),
                  "came_step: contiguous CPU tensors of the parameter's dtype only");
    }
    TORCH_CHECK(param.is_contiguous() && grad.sizes() == param.sizes() && exp_avg.sizes() == param.sizes() &&
                    sq_row.numel() == param.size(0) && res_row.numel() == param.size(0) &&
                    sq_col.numel() == param.size(1) && res_col.numel() == param.size(1),
                "came_step: state shaped as CAME keeps it for a 2-D parameter");
    if (param.numel() == 0) {
      continue;  // CAME itself leaves a zero-size parameter out of the step
    }
    AT_DISPATCH_FLOATING_TYPES(dtype, "came_step", [&] {
      // the scalars in the parameter's type, as the compiled path's float32/float64 scalars tensor
      Scalars<scalar_t> c{scalar_t(s[0]), scalar_t(s[1]), scalar_t(s[2]), scalar_t(s[3]), scalar_t(s[4]),
                          scalar_t(s[5]), scalar_t(s[6]), scalar_t(s[7])};
      // the clip threshold stays a double, as the reference's Python float scales sqrt(numel) before the division
      step_one<scalar_t>(param, grad, exp_avg, sq_row, sq_col, res_row, res_col, c, s[8]);
    });
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adamlab, m) {
  m.def("came_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] sq_rows, "
        "Tensor(d!)[] sq_cols, Tensor(e!)[] res_rows, Tensor(f!)[] res_cols, Tensor scalars) -> ()");
  m.impl("came_step", c10::DispatchKey::CPU, came_step);
}
