// CUDA kernels (forward + backward) of word-region attention and the DAMSM all-pairs word score.
//
// The contractions go to cuBLAS through batched ATen matmuls; the softmaxes, cosines and
// log-sum-exps are the fused kernels below. DAMSM works on chunks of images so that the
// [chunk, L, N] tiles (L = sum of caption lengths) stay within a fixed memory budget, and
// backward recomputes the forward tiles instead of saving them. No [M, M, T, N] tensor exists.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace t2i {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTileElems = int64_t(1) << 26;  // elements per [chunk, L, N] tile (256 MB in float32)

inline unsigned blocks_for(int64_t n, int threads = kThreads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return __shfl_sync(0xffffffffu, v, 0);
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_down_sync(0xffffffffu, v, o));
  return __shfl_sync(0xffffffffu, v, 0);
}

// ---------------------------------------------------------------------------------------------
// word-region attention: s [B, T, N] -> beta (softmax over unmasked words, per column)
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void masked_softmax_cols_kernel(scalar_t* __restrict__ s, const bool* __restrict__ mask, int64_t B, int64_t T, int64_t N) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // over B * N
  if (idx >= B * N) return;
  const int64_t b = idx / N, n = idx % N;
  scalar_t* col = s + b * T * N + n;
  const bool* mb = mask + b * T;
  scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t t = 0; t < T; ++t)
    if (!mb[t]) mx = max(mx, col[t * N]);
  if (mx == -std::numeric_limits<scalar_t>::infinity()) {  // every word masked: beta = 0
    for (int64_t t = 0; t < T; ++t) col[t * N] = scalar_t(0);
    return;
  }
  scalar_t sum = 0;
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t v = mb[t] ? scalar_t(0) : exp(col[t * N] - mx);
    col[t * N] = v;
    sum += v;
  }
  const scalar_t inv = scalar_t(1) / sum;
  for (int64_t t = 0; t < T; ++t) col[t * N] *= inv;
}

// In place on d [B, T, N] (dbeta): ds = beta * (dbeta - sum_t beta dbeta)
template <typename scalar_t>
__global__ void softmax_cols_backward_kernel(const scalar_t* __restrict__ beta, scalar_t* __restrict__ d, int64_t B, int64_t T, int64_t N) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * N) return;
  const int64_t b = idx / N, n = idx % N;
  const scalar_t* bc = beta + b * T * N + n;
  scalar_t* dc = d + b * T * N + n;
  scalar_t dot = 0;
  for (int64_t t = 0; t < T; ++t) dot += bc[t * N] * dc[t * N];
  for (int64_t t = 0; t < T; ++t) dc[t * N] = bc[t * N] * (dc[t * N] - dot);
}

at::Tensor attention_beta(const at::Tensor& h, const at::Tensor& e, const at::Tensor& mask) {
  const int64_t B = h.size(0), N = h.size(2), T = e.size(2);
  at::Tensor s = at::bmm(e.transpose(1, 2), h);  // [B, T, N]  s_ji = e_i . h_j
  if (B * N == 0) return s;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "t2i_wra_softmax_cuda", [&] {
    masked_softmax_cols_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        s.data_ptr<scalar_t>(), mask.data_ptr<bool>(), B, T, N);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return s;  // [B, T, N] beta
}

std::tuple<at::Tensor, at::Tensor> wra_forward_cuda(const at::Tensor& h_, const at::Tensor& e_, const at::Tensor& mask_, bool return_attn) {
  TORCH_CHECK(h_.dim() == 3 && e_.dim() == 3 && mask_.dim() == 2, "t2i::word_region_attention: expected h [B,C,N], e [B,C,T], mask [B,T]");
  TORCH_CHECK(h_.scalar_type() == e_.scalar_type(), "t2i::word_region_attention: h and e dtypes differ");
  TORCH_CHECK(e_.size(0) == h_.size(0) && e_.size(1) == h_.size(1) && mask_.size(0) == h_.size(0) && mask_.size(1) == e_.size(2),
              "t2i::word_region_attention: shape mismatch");
  const c10::cuda::CUDAGuard guard(h_.device());
  at::NoGradGuard no_grad;
  const at::Tensor h = h_.detach().contiguous(), e = e_.detach().contiguous(), mask = mask_.to(at::kBool).contiguous();
  const at::Tensor beta = attention_beta(h, e, mask);  // [B, T, N]
  at::Tensor c = at::bmm(e, beta);                     // [B, C, N]  c_j = sum_i beta_ji e_i
  return {c, return_attn ? beta : at::empty({0}, h.options())};
}

std::tuple<at::Tensor, at::Tensor> wra_backward_cuda(const at::Tensor& grad_c_, const std::optional<at::Tensor>& grad_beta_, const at::Tensor& h_,
                                                      const at::Tensor& e_, const at::Tensor& mask_) {
  const c10::cuda::CUDAGuard guard(h_.device());
  at::NoGradGuard no_grad;
  const at::Tensor h = h_.detach().contiguous(), e = e_.detach().contiguous(), mask = mask_.to(at::kBool).contiguous();
  const at::Tensor gc = grad_c_.detach().contiguous();  // [B, C, N]
  const int64_t B = h.size(0), N = h.size(2), T = e.size(2);
  const at::Tensor beta = attention_beta(h, e, mask);   // recomputed [B, T, N]
  at::Tensor d = at::bmm(e.transpose(1, 2), gc);        // dbeta [B, T, N] = e^T dc
  if (grad_beta_.has_value() && grad_beta_->defined() && grad_beta_->numel() > 0) d.add_(*grad_beta_);
  at::Tensor grad_e = at::bmm(gc, beta.transpose(1, 2));  // [B, C, T]  de = dc beta^T
  if (B * N > 0) {
    AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "t2i_wra_backward_cuda", [&] {
      softmax_cols_backward_kernel<scalar_t><<<blocks_for(B * N), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          beta.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), B, T, N);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor grad_h = at::bmm(e, d);                   // [B, C, N]  dh = e ds
  grad_e.baddbmm_(h, d.transpose(1, 2));               // de += h ds^T
  return {grad_h, grad_e};
}

// ---------------------------------------------------------------------------------------------
// DAMSM all-pairs word score. Words are packed: WT [L, D], caption j in rows [off_j, off_j+1).
// ---------------------------------------------------------------------------------------------

// S [Mc, L, N] -> P (in p): softmax over each caption's words, for each region. One thread per (image, caption, region).
template <typename scalar_t>
__global__ void segment_softmax_kernel(const scalar_t* __restrict__ s, scalar_t* __restrict__ p, const int64_t* __restrict__ off, int64_t Mc,
                                       int64_t M, int64_t L, int64_t N) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // over Mc * M * N
  if (idx >= Mc * M * N) return;
  const int64_t n = idx % N, j = (idx / N) % M, i = idx / (N * M);
  const int64_t l0 = off[j], l1 = off[j + 1];
  const scalar_t* sc = s + i * L * N + n;
  scalar_t* pc = p + i * L * N + n;
  scalar_t mx = sc[l0 * N];
  for (int64_t l = l0 + 1; l < l1; ++l) mx = max(mx, sc[l * N]);
  scalar_t sum = 0;
  for (int64_t l = l0; l < l1; ++l) {
    const scalar_t v = exp(sc[l * N] - mx);
    pc[l * N] = v;
    sum += v;
  }
  const scalar_t inv = scalar_t(1) / sum;
  for (int64_t l = l0; l < l1; ++l) pc[l * N] *= inv;
}

// P [rows, N] -> A: softmax over regions of gamma1 * P. One warp per row.
template <typename scalar_t>
__global__ void row_softmax_kernel(const scalar_t* __restrict__ p, scalar_t* __restrict__ a, int64_t rows, int64_t N, scalar_t g1) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps exit together
  const scalar_t* pr = p + row * N;
  scalar_t* ar = a + row * N;
  scalar_t m = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t n = lane; n < N; n += 32) m = max(m, pr[n]);
  m = warp_max(m);
  scalar_t sum = 0;
  for (int64_t n = lane; n < N; n += 32) {
    const scalar_t v = exp(g1 * (pr[n] - m));
    ar[n] = v;
    sum += v;
  }
  const scalar_t inv = scalar_t(1) / warp_sum(sum);
  for (int64_t n = lane; n < N; n += 32) ar[n] *= inv;
}

// R [Mc, L] = cos(CT[i, l], WT[l]), norms clamped at eps. One warp per (image, word).
template <typename scalar_t>
__global__ void cosine_kernel(const scalar_t* __restrict__ ct, const scalar_t* __restrict__ wt, scalar_t* __restrict__ r, int64_t rows, int64_t L,
                              int64_t D) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const scalar_t* c = ct + row * D;
  const scalar_t* w = wt + (row % L) * D;
  scalar_t dot = 0, cc = 0, ww = 0;
  for (int64_t d = lane; d < D; d += 32) {
    dot += c[d] * w[d];
    cc += c[d] * c[d];
    ww += w[d] * w[d];
  }
  dot = warp_sum(dot);
  cc = warp_sum(cc);
  ww = warp_sum(ww);
  if (lane == 0) r[row] = dot / (max(sqrt(cc), scalar_t(1e-8)) * max(sqrt(ww), scalar_t(1e-8)));
}

// score [Mc, M] (row stride ld) = log sum_{w in caption j} exp(gamma2 R_w). One thread per (image, caption).
template <typename scalar_t>
__global__ void lse_kernel(const scalar_t* __restrict__ r, const int64_t* __restrict__ off, scalar_t* __restrict__ score, int64_t Mc, int64_t M,
                           int64_t L, scalar_t g2) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= Mc * M) return;
  const int64_t i = idx / M, j = idx % M;
  const scalar_t* ri = r + i * L;
  scalar_t m = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t l = off[j]; l < off[j + 1]; ++l) m = max(m, g2 * ri[l]);
  scalar_t s = 0;
  for (int64_t l = off[j]; l < off[j + 1]; ++l) s += exp(g2 * ri[l] - m);
  score[i * M + j] = m + log(s);
}

// Cosine + log-sum-exp backward, one warp per (image, word): dR = g_ij gamma2 exp(gamma2 R - score_ij);
// writes d context dct [Mc, L, D] and the direct d word dwt [Mc, L, D] (summed over images later).
template <typename scalar_t>
__global__ void cosine_backward_kernel(const scalar_t* __restrict__ ct, const scalar_t* __restrict__ wt, const scalar_t* __restrict__ r,
                                       const scalar_t* __restrict__ score, const scalar_t* __restrict__ grad, const int64_t* __restrict__ seg,
                                       scalar_t* __restrict__ dct, scalar_t* __restrict__ dwt, int64_t rows, int64_t M, int64_t L, int64_t D,
                                       scalar_t g2) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t i = row / L, l = row % L, j = seg[l];
  const scalar_t* c = ct + row * D;
  const scalar_t* w = wt + l * D;
  scalar_t cc = 0, ww = 0;
  for (int64_t d = lane; d < D; d += 32) {
    cc += c[d] * c[d];
    ww += w[d] * w[d];
  }
  cc = sqrt(warp_sum(cc));
  ww = sqrt(warp_sum(ww));
  const scalar_t eps = scalar_t(1e-8);
  const scalar_t nc = max(cc, eps), nw = max(ww, eps), rl = r[row];
  const scalar_t dr = grad[i * M + j] * g2 * exp(g2 * rl - score[i * M + j]);
  const scalar_t inv = scalar_t(1) / (nc * nw);
  const scalar_t kc = cc > eps ? rl / (nc * nc) : scalar_t(0);  // a clamped norm passes no gradient
  const scalar_t kw = ww > eps ? rl / (nw * nw) : scalar_t(0);
  for (int64_t d = lane; d < D; d += 32) {
    dct[row * D + d] = dr * (w[d] * inv - kc * c[d]);
    dwt[row * D + d] = dr * (c[d] * inv - kw * w[d]);
  }
}

// In place on d [rows, N] (dA): dP = gamma1 * A * (dA - sum_n A dA). One warp per row.
template <typename scalar_t>
__global__ void row_softmax_backward_kernel(const scalar_t* __restrict__ a, scalar_t* __restrict__ d, int64_t rows, int64_t N, scalar_t g1) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const scalar_t* ar = a + row * N;
  scalar_t* dr = d + row * N;
  scalar_t dot = 0;
  for (int64_t n = lane; n < N; n += 32) dot += ar[n] * dr[n];
  dot = warp_sum(dot);
  for (int64_t n = lane; n < N; n += 32) dr[n] = g1 * ar[n] * (dr[n] - dot);
}

// In place on d [Mc, L, N] (dP): dS = P * (dP - sum_{w in caption} P dP), per (image, caption, region).
template <typename scalar_t>
__global__ void segment_softmax_backward_kernel(const scalar_t* __restrict__ p, scalar_t* __restrict__ d, const int64_t* __restrict__ off, int64_t Mc,
                                                int64_t M, int64_t L, int64_t N) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= Mc * M * N) return;
  const int64_t n = idx % N, j = (idx / N) % M, i = idx / (N * M);
  const scalar_t* pc = p + i * L * N + n;
  scalar_t* dc = d + i * L * N + n;
  scalar_t dot = 0;
  for (int64_t l = off[j]; l < off[j + 1]; ++l) dot += pc[l * N] * dc[l * N];
  for (int64_t l = off[j]; l < off[j + 1]; ++l) dc[l * N] = pc[l * N] * (dc[l * N] - dot);
}

struct PackedCuda {
  at::Tensor WT;    // [L, D] packed words
  at::Tensor off;   // [M + 1] int64 segment offsets (device)
  at::Tensor seg;   // [L] int64 caption of each packed word (device)
  at::Tensor tidx;  // [L] int64 position of each packed word in its caption (device)
  int64_t L;
};

PackedCuda pack_words_cuda(const at::Tensor& words, const at::Tensor& lengths) {
  const int64_t M = words.size(0), T = words.size(2);
  const at::Tensor len = lengths.to(at::kCPU, at::kLong).contiguous();  // one host sync for the offsets
  TORCH_CHECK(len.dim() == 1 && len.size(0) == M, "t2i::damsm_word_scores: lengths must be [M]");
  const int64_t* lp = len.data_ptr<int64_t>();
  std::vector<int64_t> off(M + 1, 0), seg, tidx;
  for (int64_t j = 0; j < M; ++j) {
    TORCH_CHECK(lp[j] >= 1 && lp[j] <= T, "t2i::damsm_word_scores: lengths[", j, "] = ", lp[j], " is not in [1, T=", T, "]");
    off[j + 1] = off[j] + lp[j];
    for (int64_t t = 0; t < lp[j]; ++t) {
      seg.push_back(j);
      tidx.push_back(t);
    }
  }
  PackedCuda pk;
  pk.L = off[M];
  const auto dev = at::TensorOptions().dtype(at::kLong).device(words.device());
  pk.off = at::tensor(off, at::kLong).to(dev);
  pk.seg = at::tensor(seg, at::kLong).to(dev);
  pk.tidx = at::tensor(tidx, at::kLong).to(dev);
  pk.WT = words.transpose(1, 2).index({pk.seg, pk.tidx}).contiguous();  // [L, D]
  return pk;
}

void check_damsm_inputs(const at::Tensor& img, const at::Tensor& words) {
  TORCH_CHECK(img.dim() == 3 && words.dim() == 3, "t2i::damsm_word_scores: expected img [M,D,N], words [M,D,T]");
  TORCH_CHECK(img.size(0) == words.size(0) && img.size(1) == words.size(1), "t2i::damsm_word_scores: img and words disagree on M or D");
  TORCH_CHECK(img.scalar_type() == words.scalar_type(), "t2i::damsm_word_scores: img and words dtypes differ");
}

// The forward tiles of images [i0, i0 + Mc): P, A [Mc, L, N], CT [Mc, L, D], R [Mc, L]; p may be null (forward: in place).
template <typename scalar_t>
void damsm_tiles(const at::Tensor& x, const PackedCuda& pk, int64_t M, scalar_t g1, at::Tensor& p, at::Tensor& a, at::Tensor& ct, at::Tensor& r) {
  const int64_t Mc = x.size(0), N = x.size(2), D = x.size(1), L = pk.L;
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor s = at::bmm(pk.WT.expand({Mc, L, D}), x);  // [Mc, L, N] contiguous  s_wn = word_w . region_n
  p = p.defined() ? p : s;
  segment_softmax_kernel<scalar_t><<<blocks_for(Mc * M * N), kThreads, 0, stream>>>(s.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                                                                                     pk.off.data_ptr<int64_t>(), Mc, M, L, N);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  a = a.defined() ? a : p;
  row_softmax_kernel<scalar_t><<<blocks_for(Mc * L * 32), kThreads, 0, stream>>>(p.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), Mc * L, N, g1);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  ct = at::bmm(a, x.transpose(1, 2));  // [Mc, L, D]  c_w = sum_n alpha_wn x_n
  r = at::empty({Mc, L}, x.options());
  cosine_kernel<scalar_t><<<blocks_for(Mc * L * 32), kThreads, 0, stream>>>(ct.data_ptr<scalar_t>(), pk.WT.data_ptr<scalar_t>(),
                                                                            r.data_ptr<scalar_t>(), Mc * L, L, D);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int64_t chunk_images(int64_t M, int64_t L, int64_t N) { return std::max<int64_t>(1, std::min<int64_t>(M, kTileElems / std::max<int64_t>(1, L * N))); }

at::Tensor damsm_forward_cuda(const at::Tensor& img_, const at::Tensor& words_, const at::Tensor& lengths, double gamma1, double gamma2) {
  check_damsm_inputs(img_, words_);
  const c10::cuda::CUDAGuard guard(img_.device());
  at::NoGradGuard no_grad;
  const at::Tensor img = img_.detach().contiguous(), words = words_.detach().contiguous();
  const int64_t M = img.size(0), N = img.size(2);
  at::Tensor score = at::empty({M, M}, img.options());  // [M(images), M(captions)]
  if (M == 0) return score;
  const PackedCuda pk = pack_words_cuda(words, lengths);
  const int64_t Mc = chunk_images(M, pk.L, N);
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "t2i_damsm_forward_cuda", [&] {
    for (int64_t i0 = 0; i0 < M; i0 += Mc) {
      const int64_t mc = std::min(Mc, M - i0);
      at::Tensor p, a, ct, r;
      damsm_tiles<scalar_t>(img.narrow(0, i0, mc), pk, M, static_cast<scalar_t>(gamma1), p, a, ct, r);
      lse_kernel<scalar_t><<<blocks_for(mc * M), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          r.data_ptr<scalar_t>(), pk.off.data_ptr<int64_t>(), score.data_ptr<scalar_t>() + i0 * M, mc, M, pk.L, static_cast<scalar_t>(gamma2));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return score;
}

std::tuple<at::Tensor, at::Tensor> damsm_backward_cuda(const at::Tensor& grad_, const at::Tensor& img_, const at::Tensor& words_,
                                                       const at::Tensor& lengths, double gamma1, double gamma2) {
  check_damsm_inputs(img_, words_);
  const c10::cuda::CUDAGuard guard(img_.device());
  at::NoGradGuard no_grad;
  const at::Tensor img = img_.detach().contiguous(), words = words_.detach().contiguous();
  const at::Tensor grad = grad_.detach().to(img.scalar_type()).contiguous();
  const int64_t M = img.size(0), D = img.size(1), N = img.size(2), T = words.size(2);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == M && grad.size(1) == M, "t2i::damsm_word_scores_backward: grad must be [M,M]");
  at::Tensor grad_img = at::empty_like(img);  // [M, D, N]
  if (M == 0) return {grad_img, at::zeros_like(words)};
  const PackedCuda pk = pack_words_cuda(words, lengths);
  const int64_t L = pk.L, Mc = chunk_images(M, L, N);
  at::Tensor gwt = at::zeros({L, D}, img.options());  // d WT [L, D]
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "t2i_damsm_backward_cuda", [&] {
    const scalar_t g1 = static_cast<scalar_t>(gamma1), g2 = static_cast<scalar_t>(gamma2);
    auto stream = at::cuda::getCurrentCUDAStream();
    for (int64_t i0 = 0; i0 < M; i0 += Mc) {
      const int64_t mc = std::min(Mc, M - i0);
      const at::Tensor x = img.narrow(0, i0, mc);  // [mc, D, N]
      at::Tensor p = at::empty({mc, L, N}, img.options()), a = at::empty({mc, L, N}, img.options()), ct, r;
      damsm_tiles<scalar_t>(x, pk, M, g1, p, a, ct, r);
      at::Tensor score = at::empty({mc, M}, img.options());
      lse_kernel<scalar_t><<<blocks_for(mc * M), kThreads, 0, stream>>>(r.data_ptr<scalar_t>(), pk.off.data_ptr<int64_t>(),
                                                                        score.data_ptr<scalar_t>(), mc, M, L, g2);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor dct = at::empty({mc, L, D}, img.options()), dwt = at::empty({mc, L, D}, img.options());
      cosine_backward_kernel<scalar_t><<<blocks_for(mc * L * 32), kThreads, 0, stream>>>(
          ct.data_ptr<scalar_t>(), pk.WT.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(),
          grad.data_ptr<scalar_t>() + i0 * M, pk.seg.data_ptr<int64_t>(), dct.data_ptr<scalar_t>(), dwt.data_ptr<scalar_t>(), mc * L, M, L, D, g2);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      gwt.add_(dwt.sum(0));
      at::Tensor d = at::bmm(dct, x);  // dA [mc, L, N] = dCT x
      at::Tensor gx = grad_img.narrow(0, i0, mc);
      at::bmm_out(gx, dct.transpose(1, 2), a);  // dx = dCT^T A  [mc, D, N]
      row_softmax_backward_kernel<scalar_t><<<blocks_for(mc * L * 32), kThreads, 0, stream>>>(a.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                                                                             mc * L, N, g1);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      segment_softmax_backward_kernel<scalar_t><<<blocks_for(mc * M * N), kThreads, 0, stream>>>(
          p.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), pk.off.data_ptr<int64_t>(), mc, M, L, N);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      gx.baddbmm_(pk.WT.t().expand({mc, D, L}), d);  // dx += W dS
      gwt.add_(at::bmm(d, x.transpose(1, 2)).sum(0));  // dWT += sum_i dS_i x_i^T
    }
  });
  // Unpack d WT into the padded layout; padding words get 0.
  at::Tensor gw = at::zeros({M, T, D}, img.options());
  gw.index_put_({pk.seg, pk.tidx}, gwt);
  return {grad_img, gw.transpose(1, 2).contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(t2i, CUDA, m) {
  m.impl("word_region_attention", &wra_forward_cuda);
  m.impl("word_region_attention_backward", &wra_backward_cuda);
  m.impl("damsm_word_scores", &damsm_forward_cuda);
  m.impl("damsm_word_scores_backward", &damsm_backward_cuda);
}

}  // namespace t2i
