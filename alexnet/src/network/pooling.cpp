#include <alexnet/network/pooling.h>

#include "network/kernels.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/record_function.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace alexnet {
namespace {

using detail::acc_t;
using detail::bits_of;
using detail::kernel_layout;
using detail::narrow;
using detail::parallel_for_vectorized;

// max(m, v) that propagates NaN, as LibTorch's `val > maxval || isnan(val)`; bitwise,
// not short-circuit, so that it compiles to a select, not a branch the data decides.
template <typename A>
inline A nan_max(A m, A v) {
  const bool take = (v > m) | (v != v);
  return take ? v : m;
}

// The backward pass routes a window's gradient as LibTorch's CPU kernel does: to the
// first position (row-major) equal to the window's maximum y, or to the last NaN when
// y is NaN. Scanning the window backwards with `arg = v == y ? position : arg` leaves
// the first; NaN windows (rare) are scanned forwards apart.

struct Shape {
  int64_t n, c, h, w, oh, ow, kernel, stride;
  int64_t rows(int64_t o) const { return std::min(o * stride + kernel, h) - o * stride; }
  int64_t cols(int64_t o) const { return std::min(o * stride + kernel, w) - o * stride; }
};

// NCHW forward: per plane, the maximum over each window's rows (contiguous, so it
// vectorises), then over its columns.
template <typename T, typename A = acc_t<T>>
void forward_nchw(const T* in, T* out, const Shape& s) {
  parallel_for_vectorized(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> row(static_cast<size_t>(s.w));
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* x = in + plane * s.h * s.w;
      T* y = out + plane * s.oh * s.ow;
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const T* r = x + oh * s.stride * s.w;
        for (int64_t i = 0; i < s.w; ++i) row[i] = static_cast<A>(r[i]);
        for (int64_t k = 1; k < s.rows(oh); ++k) {
          const T* rk = r + k * s.w;
          for (int64_t i = 0; i < s.w; ++i) row[i] = nan_max(row[i], static_cast<A>(rk[i]));
        }
        // A plain maximum (a select, not a branch) and a NaN flag: the row stage has
        // already carried any NaN of the window's column into `row`.
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const A* window = row.data() + ow * s.stride;
          A m = window[0];
          bool nan = m != m;
          for (int64_t k = 1; k < s.cols(ow); ++k) {
            m = window[k] > m ? window[k] : m;
            nan |= window[k] != window[k];
          }
          y[oh * s.ow + ow] = narrow<T>(nan ? std::numeric_limits<A>::quiet_NaN() : m);
        }
      }
    }
  });
}

// Channels-last forward: per output row, the maximum over the window's input rows,
// pixel by pixel (one flat loop over W * C contiguous values), then over each
// window's columns (C contiguous channels per pixel).
template <typename T, typename A = acc_t<T>>
void forward_channels_last(const T* in, T* out, const Shape& s) {
  parallel_for_vectorized(0, s.n * s.oh, 1, [&](int64_t begin, int64_t end) {
    const int64_t row = s.w * s.c;
    std::vector<A> rowmax(static_cast<size_t>(row));
    std::vector<A> m(static_cast<size_t>(s.c));
    A* r = rowmax.data();
    A* mc = m.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / s.oh, oh = task % s.oh;
      const T* x = in + (n * s.h + oh * s.stride) * row;
      for (int64_t i = 0; i < row; ++i) r[i] = static_cast<A>(x[i]);
      for (int64_t kh = 1; kh < s.rows(oh); ++kh) {
        const T* xk = x + kh * row;
        for (int64_t i = 0; i < row; ++i) r[i] = nan_max(r[i], static_cast<A>(xk[i]));
      }
      for (int64_t ow = 0; ow < s.ow; ++ow) {
        const A* window = r + ow * s.stride * s.c;
        for (int64_t c = 0; c < s.c; ++c) mc[c] = window[c];
        for (int64_t kw = 1; kw < s.cols(ow); ++kw) {
          const A* p = window + kw * s.c;
          for (int64_t c = 0; c < s.c; ++c) mc[c] = nan_max(mc[c], p[c]);
        }
        T* y = out + ((n * s.oh + oh) * s.ow + ow) * s.c;
        for (int64_t c = 0; c < s.c; ++c) y[c] = narrow<T>(mc[c]);
      }
    }
  });
}

// Backward: each window's gradient goes to the position described above, found again
// by comparing the input with the forward's output (no indices kept), and is summed
// in A where windows overlap.
template <typename T, typename A = acc_t<T>>
void backward_nchw(const T* g, const T* in, const T* out, T* grad, const Shape& s) {
  parallel_for_vectorized(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> sum(static_cast<size_t>(s.h * s.w));
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* x = in + plane * s.h * s.w;
      const T* gy = g + plane * s.oh * s.ow;
      const T* y = out + plane * s.oh * s.ow;
      std::fill(sum.begin(), sum.end(), A(0));
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const int64_t rows = s.rows(oh);
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const int64_t first = oh * s.stride * s.w + ow * s.stride;
          const int64_t cols = s.cols(ow);
          const A m = static_cast<A>(y[oh * s.ow + ow]);
          int64_t arg = first;
          if (m == m) {
            for (int64_t kh = rows - 1; kh >= 0; --kh) {
              for (int64_t kw = cols - 1; kw >= 0; --kw) {
                const int64_t i = first + kh * s.w + kw;
                arg = static_cast<A>(x[i]) == m ? i : arg;
              }
            }
          } else {
            for (int64_t kh = 0; kh < rows; ++kh) {
              for (int64_t kw = 0; kw < cols; ++kw) {
                const int64_t i = first + kh * s.w + kw;
                if (x[i] != x[i]) arg = i;
              }
            }
          }
          sum[arg] += static_cast<A>(gy[oh * s.ow + ow]);
        }
      }
      T* gx = grad + plane * s.h * s.w;
      for (int64_t i = 0; i < s.h * s.w; ++i) gx[i] = narrow<T>(sum[i]);
    }
  });
}

// Over one pixel's channels: where the input equals the maximum m, the gradient left
// goes to the sum and is zeroed. The arrays do not overlap (`__restrict`: the loop
// vectorises without run-time overlap checks, once per pixel).
template <typename T, typename A>
inline void take_first(const T* __restrict x, const A* __restrict m, A* __restrict sum, A* __restrict left,
                       int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    const bool hit = static_cast<A>(x[c]) == m[c];
    sum[c] += hit ? left[c] : A(0);
    left[c] = hit ? A(0) : left[c];
  }
}

// Channels-last backward, one image per task. Each window's pixels are visited in
// row-major order over C contiguous channels: the first equal to the maximum takes
// the gradient, which is then zeroed so that later equal pixels add nothing (a select
// per channel: no branch, no index). A gradient no pixel took belongs to a NaN window.
// The sums live in a float (A) buffer of the `kernel` input rows the current output
// row's windows cover; rows no later window reaches are written out (rounded once)
// as the windows move down.
template <typename T, typename A = acc_t<T>>
void backward_channels_last(const T* g, const T* in, const T* out, T* grad, const Shape& s) {
  parallel_for_vectorized(0, s.n, 1, [&](int64_t begin, int64_t end) {
    const int64_t row = s.w * s.c;
    std::vector<A> sum(static_cast<size_t>(s.kernel * row));
    std::vector<A> m(static_cast<size_t>(s.c));
    std::vector<A> left(static_cast<size_t>(s.c));  // the gradient no pixel has taken yet
    A* acc = sum.data();
    A* mc = m.data();
    A* lc = left.data();
    for (int64_t n = begin; n < end; ++n) {
      const T* x = in + n * s.h * row;
      T* gx = grad + n * s.h * row;
      std::fill(sum.begin(), sum.end(), A(0));
      for (int64_t oh = 0; oh < s.oh; ++oh) {
        const int64_t top = oh * s.stride;  // acc's first row
        for (int64_t ow = 0; ow < s.ow; ++ow) {
          const int64_t o = (n * s.oh + oh) * s.ow + ow;
          const T* y = out + o * s.c;
          const T* gy = g + o * s.c;
          for (int64_t c = 0; c < s.c; ++c) {
            mc[c] = static_cast<A>(y[c]);
            lc[c] = static_cast<A>(gy[c]);
          }
          const int64_t left_col = ow * s.stride;
          for (int64_t kh = 0; kh < s.rows(oh); ++kh) {
            for (int64_t kw = 0; kw < s.cols(ow); ++kw) {
              take_first(x + (top + kh) * row + (left_col + kw) * s.c, mc, acc + kh * row + (left_col + kw) * s.c,
                         lc, s.c);
            }
          }
          // Any gradient left (its bits, sign aside, not all zero)? An integer
          // reduction, which vectorises where a float one would not.
          decltype(bits_of(A())) untaken = 0;
          for (int64_t c = 0; c < s.c; ++c) untaken |= bits_of(lc[c]) << 1;
          if (untaken != 0) {  // NaN windows (rare): the gradient goes to the last NaN
            for (int64_t c = 0; c < s.c; ++c) {
              if (lc[c] == A(0)) continue;
              int64_t last = 0;
              for (int64_t kh = 0; kh < s.rows(oh); ++kh) {
                for (int64_t kw = 0; kw < s.cols(ow); ++kw) {
                  const A v = static_cast<A>(x[(top + kh) * row + (left_col + kw) * s.c + c]);
                  if (v != v) last = kh * row + (left_col + kw) * s.c;
                }
              }
              acc[last + c] += lc[c];
            }
          }
        }
        // Rows [top, next) are final: no later window starts above `next`.
        const int64_t next = oh + 1 < s.oh ? top + s.stride : s.h;
        for (int64_t r = top; r < next; ++r) {
          T* gr = gx + r * row;
          if (r - top < s.kernel) {
            const A* a = acc + (r - top) * row;
            for (int64_t i = 0; i < row; ++i) gr[i] = narrow<T>(a[i]);
          } else {
            for (int64_t i = 0; i < row; ++i) gr[i] = T(0);  // between or below the windows
          }
        }
        // The rows the next windows share move to the front; the rest start at zero.
        const int64_t shift = std::min(next - top, s.kernel);
        std::copy(acc + shift * row, acc + s.kernel * row, acc);
        std::fill(acc + (s.kernel - shift) * row, acc + s.kernel * row, A(0));
      }
    }
  });
}

Shape shape_of(const at::Tensor& x, int64_t kernel, int64_t stride, bool ceil_mode) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), pooled_size(x.size(2), kernel, stride, ceil_mode),
          pooled_size(x.size(3), kernel, stride, ceil_mode), kernel, stride};
}

class MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t kernel,
                            int64_t stride, bool ceil_mode) {
    const auto layout = kernel_layout(input);
    const bool last = layout == at::MemoryFormat::ChannelsLast;
    const auto x = input.contiguous(layout);
    const Shape s = shape_of(x, kernel, stride, ceil_mode);
    auto y = at::empty({s.n, s.c, s.oh, s.ow},
                       x.options().memory_format(layout));
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "alexnet_max_pool2d", [&] {
      if (last) {
        forward_channels_last(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), s);
      } else {
        forward_nchw(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), s);
      }
    });
    ctx->save_for_backward({x, y});
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["ceil_mode"] = ceil_mode;
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& y = saved[1];
    const auto layout = kernel_layout(x);
    const bool last = layout == at::MemoryFormat::ChannelsLast;
    const Shape s = shape_of(x, ctx->saved_data["kernel"].toInt(), ctx->saved_data["stride"].toInt(),
                             ctx->saved_data["ceil_mode"].toBool());
    const auto g = grad_outputs[0].to(x.scalar_type()).contiguous(layout);
    auto grad = at::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "alexnet_max_pool2d_backward", [&] {
      if (last) {
        backward_channels_last(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                               grad.data_ptr<scalar_t>(), s);
      } else {
        backward_nchw(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                      s);
      }
    });
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor max_pool2d(const at::Tensor& input, int64_t kernel_size, int64_t stride, bool ceil_mode) {
  TORCH_CHECK(input.dim() == 4, "max_pool2d: expected [N, C, H, W], got ", input.dim(), " dimensions");
  TORCH_CHECK(kernel_size >= 1 && stride >= 1, "max_pool2d: kernel size and stride must be at least 1, got ",
              kernel_size, " and ", stride);
  TORCH_CHECK(input.size(2) >= kernel_size && input.size(3) >= kernel_size, "max_pool2d: input of ",
              input.size(2), "x", input.size(3), " is smaller than one ", kernel_size, "x", kernel_size, " window");
  RECORD_USER_SCOPE("alexnet::max_pool2d");  // named in LibTorch's profiler
  if (!detail::fused_kernel_takes(input)) {
    return at::max_pool2d(input, {kernel_size, kernel_size}, {stride, stride}, {0, 0}, {1, 1}, ceil_mode);
  }
  return MaxPoolFunction::apply(input, kernel_size, stride, ceil_mode);
}

int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, bool ceil_mode) {
  int64_t out = (in - kernel + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in) --out;  // the last window must start inside
  return out;
}

}  // namespace alexnet
