#include <alexnet/network/lrn.h>

#include "network/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/record_function.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <type_traits>
#include <vector>

namespace alexnet {
namespace {

using detail::acc_t;
using detail::bits_of;
using detail::kernel_layout;
using detail::narrow;
using detail::parallel_for_vectorized;

// Positions along the non-channel dimensions handled by one task: small enough that
// a task's channel planes stay in cache, large enough to vectorise.
constexpr int64_t kBlock = 256;

struct Window {
  int64_t before;  // channels behind i that the window of i covers
  int64_t after;   // channels ahead of i
};

Window window_of(int64_t size) { return {size / 2, (size - 1) / 2}; }

double effective_alpha(const LRNOptions& o) {
  return o.mode() == LRNMode::kSum ? o.alpha() : o.alpha() / static_cast<double>(o.size());
}

// p = s^(-beta). The paper's beta = 0.75 is two square roots, far cheaper than pow;
// the choice is a template parameter so that the inner loops stay branch-free.
enum class Power { kThreeQuarters, kHalf, kGeneral };

Power power_of(double beta) {
  return beta == 0.75 ? Power::kThreeQuarters : beta == 0.5 ? Power::kHalf : Power::kGeneral;
}

template <Power P, typename T>
inline T inverse_power(T s, T beta) {
  if constexpr (P == Power::kThreeQuarters) {
    const T r = std::sqrt(s);
    return T(1) / (r * std::sqrt(r));
  } else if constexpr (P == Power::kHalf) {
    return T(1) / std::sqrt(s);
  } else {
    return std::pow(s, -beta);
  }
}

// The same from s and r = 1 / s, which the backward pass needs anyway: for 3/4,
// r s^(1/4), two roots and no second division.
template <Power P, typename T>
inline T inverse_power(T s, T r, T beta) {
  if constexpr (P == Power::kThreeQuarters) {
    return r * std::sqrt(std::sqrt(s));
  } else if constexpr (P == Power::kHalf) {
    return std::sqrt(r);
  } else {
    return std::pow(s, -beta);
  }
}

// Runs `body(plane_offset, block_start, block_length)` over [N * groups] x blocks.
template <typename F>
void for_each_block(int64_t outer, int64_t channels, int64_t inner, const F& body) {
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  parallel_for_vectorized(0, outer * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks;
      const int64_t x0 = (task % blocks) * kBlock;
      body(o * channels * inner, x0, std::min(kBlock, inner - x0));
    }
  });
}

// 1 if v is infinite or NaN (all exponent bits set), else 0: an integer test, so that
// `flag |= not_finite(v)` stays an or-reduction the loops around it vectorise.
template <typename A>
inline auto not_finite(A v) {
  using Bits = decltype(bits_of(v));
  constexpr Bits exponent = sizeof(A) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000ull);
  return static_cast<Bits>((bits_of(v) & exponent) == exponent);
}

// Whether v[0, len) are all finite.
template <typename A>
inline bool all_finite(const A* v, int64_t len) {
  decltype(not_finite(A())) bad = 0;
  for (int64_t x = 0; x < len; ++x) bad |= not_finite(v[x]);
  return bad == 0;
}

// The largest square a sliding sum takes: k / alpha, whose rounding, left in the sum
// after it slides out, k still dominates in s = k + alpha * sum (float32 outputs within
// 1.4e-6 of the formula in double, measured with such squares beside near-zero ones;
// without the limit, a square of 2^24 k / alpha would leave the sum wrong). Larger
// squares (and any, when k = 0) take direct_squares.
template <typename A>
A sliding_limit(A k, A alpha) {
  const A limit = alpha > A(0) ? k / alpha : std::numeric_limits<A>::max();
  return std::min(limit, std::numeric_limits<A>::max());
}

// Calls `visit(c, sum)` for every channel c of one block, `sum` holding the sum of
// squares over c's window. The sum slides: add the channel entering, subtract the one
// leaving. `a` points at the block's first position in channel 0. Returns false if a
// square exceeded `limit` (sliding_limit) or was not finite (a NaN input, or a square
// beyond the type's range): the sliding sum then carried its rounding (or inf - inf)
// past its window, and the caller visits the block again with direct_squares.
template <typename T, typename F, typename A = acc_t<T>>
inline bool slide_squares(const T* a, int64_t channels, int64_t inner, int64_t len, Window w, A limit,
                          const F& visit) {
  A sum[kBlock] = {};
  // The largest square's bits: squares are non-negative (or NaN), so their bits order
  // as their values do, NaNs above infinity, and the maximum is an integer reduction.
  decltype(bits_of(A())) peak = 0;
  for (int64_t j = 0; j <= std::min(channels - 1, w.after); ++j) {
    const T* aj = a + j * inner;
    for (int64_t x = 0; x < len; ++x) {
      const A v = static_cast<A>(aj[x]);
      sum[x] += v * v;
      peak = std::max(peak, bits_of(v * v));
    }
  }
  for (int64_t c = 0; c < channels; ++c) {
    visit(c, static_cast<const A*>(sum));
    if (c + 1 + w.after < channels) {
      const T* in = a + (c + 1 + w.after) * inner;
      for (int64_t x = 0; x < len; ++x) {
        const A v = static_cast<A>(in[x]);
        sum[x] += v * v;
        peak = std::max(peak, bits_of(v * v));
      }
    }
    if (c - w.before >= 0) {
      const T* out = a + (c - w.before) * inner;
      // Clamped: rounding in the sliding sum must never make a sum of squares negative.
      for (int64_t x = 0; x < len; ++x) {
        const A v = static_cast<A>(out[x]);
        sum[x] = std::max(A(0), sum[x] - v * v);
      }
    }
  }
  return peak <= bits_of(limit);
}

// The same visits with each window's sum computed on its own: infinities and NaNs stay
// in the windows that hold them, as in the formula.
template <typename T, typename F, typename A = acc_t<T>>
inline void direct_squares(const T* a, int64_t channels, int64_t inner, int64_t len, Window w,
                           const F& visit) {
  A sum[kBlock];
  for (int64_t c = 0; c < channels; ++c) {
    std::fill(sum, sum + len, A(0));
    for (int64_t j = std::max<int64_t>(0, c - w.before); j <= std::min(channels - 1, c + w.after); ++j) {
      const T* aj = a + j * inner;
      for (int64_t x = 0; x < len; ++x) {
        const A v = static_cast<A>(aj[x]);
        sum[x] += v * v;
      }
    }
    visit(c, static_cast<const A*>(sum));
  }
}

// b = a * (k + alpha * sum)^-beta in one pass over the channels. Only b is written:
// on memory-bound CPUs the scale is cheaper to recompute in backward than to store.
template <Power P, typename T, typename A = acc_t<T>>
void forward_cpu(const T* a, T* b, int64_t outer, int64_t channels, int64_t inner, Window w,
                 A k, A alpha, A beta) {
  const A limit = sliding_limit(k, alpha);
  for_each_block(outer, channels, inner, [&](int64_t base, int64_t x0, int64_t len) {
    const auto visit = [&](int64_t c, const A* sum) {
      const int64_t off = base + c * inner + x0;
      for (int64_t x = 0; x < len; ++x) {
        b[off + x] = narrow<T>(static_cast<A>(a[off + x]) * inverse_power<P>(k + alpha * sum[x], beta));
      }
    };
    if (!slide_squares(a + base + x0, channels, inner, len, w, limit, visit)) {
      direct_squares(a + base + x0, channels, inner, len, w, visit);
    }
  });
}

// dL/da[j] = g[j] p[j] - 2 alpha beta a[j] SUM_{i : j in window(i)} g[i] b[i] / s[i],
// with s = k + alpha * (window sum of a^2) and p = s^-beta. It reuses the forward's
// output b; s and p are recomputed from a in the same sliding pass. The i whose window
// holds j form the mirrored window [j - after, j + before].
template <Power P, typename T, typename A = acc_t<T>>
void backward_cpu(const T* g, const T* a, const T* b, T* grad, int64_t outer, int64_t channels,
                  int64_t inner, Window w, A k, A alpha, A beta) {
  const A coef = A(2) * alpha * beta;
  const A limit = sliding_limit(k, alpha);
  for_each_block(outer, channels, inner, [&](int64_t base, int64_t x0, int64_t len) {
    // First pass: t = g b / s and p into scratch, one of each per thread.
    thread_local std::vector<A> t, p;
    t.resize(static_cast<size_t>(channels * len));
    p.resize(static_cast<size_t>(channels * len));
    const auto visit = [&](int64_t c, const A* sum) {
      const int64_t off = base + c * inner + x0;
      A* tc = t.data() + c * len;
      A* pc = p.data() + c * len;
      for (int64_t x = 0; x < len; ++x) {
        const A s = k + alpha * sum[x];
        const A r = A(1) / s;
        tc[x] = static_cast<A>(g[off + x]) * static_cast<A>(b[off + x]) * r;
        pc[x] = inverse_power<P>(s, r, beta);
      }
    };
    // Second pass: the mirrored window over t, its sums direct where the squares' were
    // (a large a would multiply the sliding sum's rounding) or a t is not finite.
    const auto direct_t = [&] {
      for (int64_t j = 0; j < channels; ++j) {
        const int64_t off = base + j * inner + x0;
        const A* pj = p.data() + j * len;
        for (int64_t x = 0; x < len; ++x) {
          A window = 0;
          for (int64_t i = std::max<int64_t>(0, j - w.after); i <= std::min(channels - 1, j + w.before); ++i) {
            window += t[static_cast<size_t>(i * len + x)];
          }
          grad[off + x] =
              narrow<T>(static_cast<A>(g[off + x]) * pj[x] - coef * static_cast<A>(a[off + x]) * window);
        }
      }
    };
    if (!slide_squares(a + base + x0, channels, inner, len, w, limit, visit)) {
      direct_squares(a + base + x0, channels, inner, len, w, visit);
      return direct_t();
    }
    A sum[kBlock] = {};
    for (int64_t i = 0; i <= std::min(channels - 1, w.before); ++i) {
      const A* ti = t.data() + i * len;
      for (int64_t x = 0; x < len; ++x) sum[x] += ti[x];
    }
    for (int64_t j = 0; j < channels; ++j) {
      const int64_t off = base + j * inner + x0;
      const A* pj = p.data() + j * len;
      for (int64_t x = 0; x < len; ++x) {
        grad[off + x] = narrow<T>(static_cast<A>(g[off + x]) * pj[x] -
                                       coef * static_cast<A>(a[off + x]) * sum[x]);
      }
      if (j + 1 + w.before < channels) {
        const A* in = t.data() + (j + 1 + w.before) * len;
        for (int64_t x = 0; x < len; ++x) sum[x] += in[x];
      }
      if (j - w.after >= 0) {
        const A* out = t.data() + (j - w.after) * len;
        for (int64_t x = 0; x < len; ++x) sum[x] -= out[x];
      }
    }
    // Every t entered the sum once: one not finite (a NaN or infinite input or output
    // gradient) left it so for good.
    if (!all_finite(sum, len)) direct_t();
  });
}

// Channels-last ([N, H, W, C] in memory): a position's channels are contiguous, so a
// group's window sums are `size` shifted loads from a zero-padded row of squares, all
// in one loop over the channels (a sliding sum would be a chain the vector units cannot
// split). Positions per task: enough to amortise the scheduling, few enough to balance.
constexpr int64_t kPositionsPerTask = 64;

// v[0] + ... + v[size - 1]. S is the window size when known at compile time (the
// paper's 5: the loop unrolls and the loop around it vectorises), else 0.
template <int S, typename A>
inline A window_sum(const A* v, int64_t size) {
  A sum = v[0];
  if constexpr (S > 0) {
    for (int m = 1; m < S; ++m) sum += v[m];
  } else {
    for (int64_t m = 1; m < size; ++m) sum += v[m];
  }
  return sum;
}

// Rows (one position's channels of one group) per block: the block's squares are all
// written before the window sums read them back at shifted offsets (a load straddling
// two just-issued stores would wait for them), and its scratch stays in L1.
constexpr int64_t kRowsPerBlock = 32;

// Calls body(first_row, rows) for the blocks of rows [begin, end).
template <typename F>
inline void for_each_row_block(int64_t begin, int64_t end, const F& body) {
  for (int64_t i = begin; i < end; i += kRowsPerBlock) body(i, std::min(kRowsPerBlock, end - i));
}

// Rows [0, rows) of a block, `channels` each: sq[r * stride + before + c] = a^2, where
// stride = channels + size - 1 leaves the window's zeros on either side untouched.
template <typename T, typename A>
inline void pad_squares(const T* a, int64_t rows, int64_t channels, Window w, A* sq) {
  const int64_t stride = channels + w.before + w.after;
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * channels;
    A* q = sq + r * stride + w.before;
    for (int64_t c = 0; c < channels; ++c) {
      const A v = static_cast<A>(ar[c]);
      q[c] = v * v;
    }
  }
}

template <Power P, int S, typename T, typename A = acc_t<T>>
void forward_channels_last(const T* a, T* b, int64_t positions, int64_t groups, int64_t channels, Window w,
                           A k, A alpha, A beta) {
  const int64_t size = w.before + w.after + 1;
  const int64_t stride = channels + size - 1;  // a padded row
  parallel_for_vectorized(0, positions, kPositionsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<A> sq(static_cast<size_t>(kRowsPerBlock * stride), A(0));
    for_each_row_block(begin * groups, end * groups, [&](int64_t first, int64_t rows) {
      pad_squares(a + first * channels, rows, channels, w, sq.data());
      for (int64_t r = 0; r < rows; ++r) {
        const T* ai = a + (first + r) * channels;
        T* bi = b + (first + r) * channels;
        const A* q = sq.data() + r * stride;
        for (int64_t c = 0; c < channels; ++c) {
          const A s = k + alpha * window_sum<S>(q + c, size);
          bi[c] = narrow<T>(static_cast<A>(ai[c]) * inverse_power<P>(s, beta));
        }
      }
    });
  });
}

template <Power P, int S, typename T, typename A = acc_t<T>>
void backward_channels_last(const T* g, const T* a, const T* b, T* grad, int64_t positions, int64_t groups,
                            int64_t channels, Window w, A k, A alpha, A beta) {
  const A coef = A(2) * alpha * beta;
  const int64_t size = w.before + w.after + 1;
  const int64_t stride = channels + size - 1;
  parallel_for_vectorized(0, positions, kPositionsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<A> sq(static_cast<size_t>(kRowsPerBlock * stride), A(0));
    // t = g b / s with `after` zeros ahead and `before` behind: the mirrored window.
    std::vector<A> t(static_cast<size_t>(kRowsPerBlock * stride), A(0));
    std::vector<A> p(static_cast<size_t>(kRowsPerBlock * channels));
    for_each_row_block(begin * groups, end * groups, [&](int64_t first, int64_t rows) {
      pad_squares(a + first * channels, rows, channels, w, sq.data());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t off = (first + r) * channels;
        const A* q = sq.data() + r * stride;
        A* pr = p.data() + r * channels;
        A* tr = t.data() + r * stride + w.after;
        for (int64_t c = 0; c < channels; ++c) {
          const A s = k + alpha * window_sum<S>(q + c, size);
          const A r = A(1) / s;
          pr[c] = inverse_power<P>(s, r, beta);
          tr[c] = static_cast<A>(g[off + c]) * static_cast<A>(b[off + c]) * r;
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t off = (first + r) * channels;
        const A* pr = p.data() + r * channels;
        const A* tr = t.data() + r * stride;
        for (int64_t c = 0; c < channels; ++c) {
          grad[off + c] = narrow<T>(static_cast<A>(g[off + c]) * pr[c] -
                                    coef * static_cast<A>(a[off + c]) * window_sum<S>(tr + c, size));
        }
      }
    });
  });
}

// Calls f(std::integral_constant<int, S>()) with S = 5 for the paper's window and beta
// (the unrolled kernels), else 0.
template <Power P, typename F>
void with_window(int64_t size, const F& f) {
  if constexpr (P == Power::kThreeQuarters) {
    if (size == 5) return f(std::integral_constant<int, 5>());
  }
  f(std::integral_constant<int, 0>());
}

// Calls f.template operator()<P>() with the Power that beta selects.
template <typename F>
void with_power(double beta, const F& f) {
  switch (power_of(beta)) {
    case Power::kThreeQuarters: return f(std::integral_constant<Power, Power::kThreeQuarters>());
    case Power::kHalf: return f(std::integral_constant<Power, Power::kHalf>());
    case Power::kGeneral: return f(std::integral_constant<Power, Power::kGeneral>());
  }
}

// [N, C, ...] viewed as [N * groups, C / groups, inner]: a group is a separate LRN.
struct Geometry {
  int64_t outer, channels, inner;
};

Geometry geometry_of(const torch::Tensor& input, int64_t groups) {
  const int64_t channels = input.size(1) / groups;
  return {input.size(0) * groups, channels,
          channels == 0 ? 0 : input.numel() / (input.size(0) * groups * channels)};
}

class LRNFunction : public torch::autograd::Function<LRNFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               int64_t size, double alpha, double beta, double k, int64_t groups) {
    // Channels-last input stays channels-last (no copy to NCHW and back): the layout
    // oneDNN's convolutions on either side run in.
    const auto a = input.contiguous(kernel_layout(input));
    auto b = torch::empty_like(a);
    run(a, size, beta, groups, [&](auto power, auto* tag, auto nchw, const Geometry& geo, Window w) {
      using T = std::remove_pointer_t<decltype(tag)>;
      using A = acc_t<T>;
      constexpr Power P = decltype(power)::value;
      if constexpr (decltype(nchw)::value) {
        forward_cpu<P>(a.data_ptr<T>(), b.data_ptr<T>(), geo.outer, geo.channels, geo.inner, w, A(k), A(alpha),
                       A(beta));
      } else {
        with_window<P>(size, [&](auto window) {
          forward_channels_last<P, decltype(window)::value>(a.data_ptr<T>(), b.data_ptr<T>(), geo.outer, groups,
                                                            geo.channels, w, A(k), A(alpha), A(beta));
        });
      }
    });
    ctx->save_for_backward({a, b});
    ctx->saved_data["size"] = size;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["k"] = k;
    ctx->saved_data["groups"] = groups;
    return b;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& a = saved[0];
    const auto& b = saved[1];
    const auto g = grad_outputs[0].to(a.scalar_type()).contiguous(kernel_layout(a));
    const int64_t size = ctx->saved_data["size"].toInt();
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const double beta = ctx->saved_data["beta"].toDouble();
    const double k = ctx->saved_data["k"].toDouble();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    auto grad = torch::empty_like(a);
    run(a, size, beta, groups, [&](auto power, auto* tag, auto nchw, const Geometry& geo, Window w) {
      using T = std::remove_pointer_t<decltype(tag)>;
      using A = acc_t<T>;
      constexpr Power P = decltype(power)::value;
      if constexpr (decltype(nchw)::value) {
        backward_cpu<P>(g.data_ptr<T>(), a.data_ptr<T>(), b.data_ptr<T>(), grad.data_ptr<T>(), geo.outer,
                        geo.channels, geo.inner, w, A(k), A(alpha), A(beta));
      } else {
        with_window<P>(size, [&](auto window) {
          backward_channels_last<P, decltype(window)::value>(g.data_ptr<T>(), a.data_ptr<T>(), b.data_ptr<T>(),
                                                             grad.data_ptr<T>(), geo.outer, groups, geo.channels, w,
                                                             A(k), A(alpha), A(beta));
        });
      }
    });
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }

 private:
  // Calls f(power, (T*)nullptr, nchw, geometry, window) with the element type, the power
  // beta selects and whether `a` is NCHW (else channels-last: geometry.outer counts
  // positions N * H * W, geometry.channels the channels of one group).
  template <typename F>
  static void run(const torch::Tensor& a, int64_t size, double beta, int64_t groups, const F& f) {
    const bool nchw = a.is_contiguous();
    const Geometry geo = nchw ? geometry_of(a, groups)
                              : Geometry{a.numel() / std::max<int64_t>(1, a.size(1)), a.size(1) / groups, 1};
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, a.scalar_type(), "alexnet_lrn", [&] {
      with_power(beta, [&](auto power) {
        if (nchw) {
          f(power, static_cast<scalar_t*>(nullptr), std::true_type(), geo, window_of(size));
        } else {
          f(power, static_cast<scalar_t*>(nullptr), std::false_type(), geo, window_of(size));
        }
      });
    });
  }
};

void check_arguments(const torch::Tensor& input, const LRNOptions& o, int64_t groups) {
  TORCH_CHECK(input.dim() >= 2, "local_response_norm: expected an input of at least 2 dimensions [N, C, ...], got ",
              input.dim());
  TORCH_CHECK(o.size() >= 1, "local_response_norm: window size must be at least 1, got ", o.size());
  TORCH_CHECK(o.k() >= 0.0 && o.alpha() >= 0.0,
              "local_response_norm: k and alpha must be non-negative, got k = ", o.k(),
              ", alpha = ", o.alpha());
  TORCH_CHECK(groups >= 1 && input.size(1) % groups == 0, "local_response_norm: ",
              input.size(1), " channels do not split into ", groups, " groups");
}

}  // namespace

LRNOptions LRNOptions::paper() { return LRNOptions(); }

LRNOptions LRNOptions::caffe() { return LRNOptions().k(1.0).mode(LRNMode::kAverage); }

template <>
const std::vector<std::pair<std::string, LRNMode>>& names<LRNMode>() {
  static const std::vector<std::pair<std::string, LRNMode>> table{{"sum", LRNMode::kSum}, {"average", LRNMode::kAverage}};
  return table;
}


torch::Tensor local_response_norm(const torch::Tensor& input, const LRNOptions& options,
                                  int64_t groups) {
  check_arguments(input, options, groups);
  RECORD_USER_SCOPE("alexnet::local_response_norm");  // named in LibTorch's profiler
  if (!detail::fused_kernel_takes(input)) return detail::local_response_norm_composite(input, options, groups);
  return LRNFunction::apply(input, options.size(), effective_alpha(options), options.beta(),
                            options.k(), groups);
}

namespace detail {

torch::Tensor local_response_norm_composite(const torch::Tensor& input, const LRNOptions& options,
                                            int64_t groups) {
  check_arguments(input, options, groups);
  const Window w = window_of(options.size());
  const auto n = input.size(0);
  const auto channels = input.size(1) / groups;
  // Half and bfloat16 (autocast) are normalised in float32: a square of 256 or more
  // overflows float16, and the unit's output would become 0 without a NaN for loss
  // scaling to see; bfloat16 sums lose the small terms.
  const bool reduced = input.scalar_type() == torch::kHalf || input.scalar_type() == torch::kBFloat16;
  // [N * groups, C / groups, inner]: windows are zero-padded at each group's ends.
  const auto x = (reduced ? input.to(torch::kFloat) : input).reshape({n * groups, channels, -1});
  const auto padded = torch::constant_pad_nd(x * x, {0, 0, w.before, w.after});
  auto sum = padded.narrow(1, 0, channels);
  for (int64_t i = 1; i < options.size(); ++i) sum = sum + padded.narrow(1, i, channels);
  const auto scale = options.k() + effective_alpha(options) * sum;
  return (x * scale.pow(-options.beta())).reshape(input.sizes()).to(input.scalar_type());
}

}  // namespace detail

LRNImpl::LRNImpl(LRNOptions options_, int64_t groups_)
    : options(std::move(options_)), groups(groups_) {
  reset();
}

void LRNImpl::reset() {
  TORCH_CHECK(options.size() >= 1, "LRN: window size must be at least 1, got ", options.size());
  TORCH_CHECK(groups >= 1, "LRN: groups must be at least 1, got ", groups);
}

void LRNImpl::pretty_print(std::ostream& stream) const {
  stream << "alexnet::LRN(size=" << options.size() << ", alpha=" << options.alpha()
         << ", beta=" << options.beta() << ", k=" << options.k()
         << ", mode=" << name_of(options.mode()) << ", groups=" << groups << ")";
}

torch::Tensor LRNImpl::forward(const torch::Tensor& input) {
  return local_response_norm(input, options, groups);
}

}  // namespace alexnet
