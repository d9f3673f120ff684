// CPU kernels (forward + backward) of word-region attention and the DAMSM all-pairs word score.
//
// Both are blocked so that only small per-thread tiles exist besides inputs and outputs:
// the GEMMs go to BLAS through at::mm_out / at::addmm_ on tile views, the softmaxes and
// cosines are fused loops, and backward recomputes the forward tiles instead of storing them
// (except the DAMSM score's CPU training path, damsm_word_scores_save: its scores S and softmaxes,
// [M, 3, L, N], are kept for the backward, which then skips the score GEMM and the exponentials).
// Work is split into one static chunk per thread (at::parallel_for), so results do not depend
// on scheduling; BLAS calls inside a chunk run single-threaded.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace t2i {
namespace {

// Hot elementwise loops are compiled for AVX-512, AVX2 and baseline x86-64, chosen at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define T2I_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define T2I_CLONES
#endif
#define T2I_INLINE inline __attribute__((always_inline))

// Flushes subnormal floats to zero on this thread while alive. The softmax backward produces
// products like P * (dP - sum) with P ~ 1e-30 that land below 1e-38; as subnormals they make
// the following GEMMs several times slower, as zeros they change nothing measurable.
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
struct FlushDenormals {
  unsigned csr = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(csr | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(csr); }
};
#else
struct FlushDenormals {};
#endif

// exp(x) for x <= 0 (softmax after max subtraction); float: a branch-free polynomial that
// the compiler vectorises (relative error ~2e-7), 0 below -87 (and for -inf); NaN stays NaN;
// double: std::exp. The clamp and the zeroing are integer bit-selects on one mask: written as
// float selects (std::max, ?:), GCC turns them into branches and leaves every loop that calls
// this scalar ("control flow in loop"): several times slower than 8 floats at a time with AVX2.
inline float exp_nonpos(float x) {
  const int32_t below = -static_cast<int32_t>(x < -87.0f);  // all ones where x < -87
  const float lo = -87.0f;
  int32_t xb, lb;
  std::memcpy(&xb, &x, sizeof(xb));
  std::memcpy(&lb, &lo, sizeof(lb));
  xb = (xb & ~below) | (lb & below);  // max(x, -87)
  float xc;
  std::memcpy(&xc, &xb, sizeof(xc));
  const float t = xc * 1.4426950408889634f;           // x / ln 2
  const float k = (t + 12582912.0f) - 12582912.0f;    // round to nearest integer
  const float r = (t - k) * 0.6931471805599453f;      // in [-ln2/2, ln2/2]
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;
  int32_t yb;
  std::memcpy(&yb, &y, sizeof(yb));
  yb &= ~below;  // 0 below -87
  float out;
  std::memcpy(&out, &yb, sizeof(out));
  return out;
}
inline double exp_nonpos(double x) { return std::exp(x); }

template <typename T>
inline T clamp_eps(T x) {
  return std::max(x, static_cast<T>(1e-8));  // torch cosine_similarity clamps each norm at eps
}

// Splits [0, n) into `parts` contiguous ranges; range k = [bound(k), bound(k+1)).
inline int64_t bound(int64_t k, int64_t n, int64_t parts) { return k * n / parts; }

// Chunks (one per thread) for `items` independent work items costing `flops` in all; small
// problems run on the calling thread, where a parallel region would cost more than it saves.
inline int64_t num_chunks(int64_t items, double flops) {
  if (flops < 4e6) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(items, at::get_num_threads()));
}

// ---------------------------------------------------------------------------------------------
// word-region attention
// ---------------------------------------------------------------------------------------------

// In place: s [nb, T] scores -> beta = softmax over unmasked words (masked = 0; all masked = 0).
template <typename scalar_t>
void masked_softmax_rows(scalar_t* s, int64_t nb, int64_t T, const bool* mask) {
  for (int64_t n = 0; n < nb; ++n) {
    scalar_t* row = s + n * T;
    scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t t = 0; t < T; ++t)
      if (!mask[t]) mx = std::max(mx, row[t]);
    if (mx == -std::numeric_limits<scalar_t>::infinity()) {  // every word masked
      std::fill(row, row + T, scalar_t(0));
      continue;
    }
    scalar_t sum = 0;
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t v = mask[t] ? scalar_t(0) : exp_nonpos(row[t] - mx);
      row[t] = v;
      sum += v;
    }
    const scalar_t inv = scalar_t(1) / sum;
    for (int64_t t = 0; t < T; ++t) row[t] *= inv;
  }
}

constexpr int64_t kAttnTile = 2048;  // region columns per tile

std::tuple<at::Tensor, at::Tensor> wra_forward_cpu(const at::Tensor& h_, const at::Tensor& e_, const at::Tensor& mask_, bool return_attn) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(h_.dim() == 3 && e_.dim() == 3 && mask_.dim() == 2, "t2i::word_region_attention: expected h [B,C,N], e [B,C,T], mask [B,T]");
  const at::Tensor h = h_.detach().contiguous(), e = e_.detach().contiguous();
  const at::Tensor mask = mask_.to(at::kBool).contiguous();
  const int64_t B = h.size(0), C = h.size(1), N = h.size(2), T = e.size(2);
  TORCH_CHECK(e.size(0) == B && e.size(1) == C && mask.size(0) == B && mask.size(1) == T, "t2i::word_region_attention: shape mismatch");
  TORCH_CHECK(h.scalar_type() == e.scalar_type(), "t2i::word_region_attention: h and e dtypes differ");
  at::Tensor c = at::empty({B, C, N}, h.options());                                  // [B, C, N]
  at::Tensor beta = return_attn ? at::empty({B, T, N}, h.options()) : at::empty({0}, h.options());  // [B, T, N]
  const int64_t nb_max = std::min(N, kAttnTile), tiles_per_b = (N + nb_max - 1) / nb_max, tiles = B * tiles_per_b;
  if (tiles == 0 || C == 0) { c.zero_(); if (return_attn) beta.zero_(); return {c, beta}; }
  const int64_t chunks = num_chunks(tiles, 4.0 * B * C * N * T);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "t2i_wra_forward_cpu", [&] {
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      at::NoGradGuard guard;
      FlushDenormals ftz;
      at::Tensor s = at::empty({nb_max, T}, h.options());  // [nb, T] scores, then beta
      for (int64_t k = k0; k < k1; ++k) {
        for (int64_t tile = bound(k, tiles, chunks); tile < bound(k + 1, tiles, chunks); ++tile) {
          const int64_t b = tile / tiles_per_b, n0 = (tile % tiles_per_b) * nb_max, nb = std::min(nb_max, N - n0);
          at::Tensor st = s.narrow(0, 0, nb);
          at::Tensor hb = h[b].narrow(1, n0, nb), eb = e[b];  // [C, nb], [C, T]
          at::mm_out(st, hb.t(), eb);                          // [nb, T]  s_ji = h_j . e_i
          masked_softmax_rows<scalar_t>(st.data_ptr<scalar_t>(), nb, T, mask[b].data_ptr<bool>());
          at::Tensor cb = c[b].narrow(1, n0, nb);              // [C, nb] view, row stride N
          at::mm_out(cb, eb, st.t());                          // c_j = sum_i beta_ji e_i
          if (return_attn) beta[b].narrow(1, n0, nb).copy_(st.t());
        }
      }
    });
  });
  return {c, beta};
}

std::tuple<at::Tensor, at::Tensor> wra_backward_cpu(const at::Tensor& grad_c_, const std::optional<at::Tensor>& grad_beta_,
                                                     const at::Tensor& h_, const at::Tensor& e_, const at::Tensor& mask_) {
  at::NoGradGuard no_grad;
  const at::Tensor h = h_.detach().contiguous(), e = e_.detach().contiguous(), gc = grad_c_.detach().contiguous();
  const at::Tensor mask = mask_.to(at::kBool).contiguous();
  const bool has_gb = grad_beta_.has_value() && grad_beta_->defined() && grad_beta_->numel() > 0;
  const at::Tensor gb = has_gb ? grad_beta_->detach().contiguous() : at::Tensor();
  const int64_t B = h.size(0), C = h.size(1), N = h.size(2), T = e.size(2);
  TORCH_CHECK(gc.sizes() == h.sizes(), "t2i::word_region_attention_backward: grad_c must be [B,C,N]");
  TORCH_CHECK(!has_gb || (gb.size(0) == B && gb.size(1) == T && gb.size(2) == N), "grad_beta must be [B,T,N]");
  at::Tensor grad_h = at::empty_like(h);  // [B, C, N]
  const int64_t nb_max = std::min(N, kAttnTile), tiles_per_b = (N + nb_max - 1) / nb_max, tiles = B * tiles_per_b;
  if (tiles == 0 || C == 0) { grad_h.zero_(); return {grad_h, at::zeros_like(e)}; }
  const int64_t chunks = num_chunks(tiles, 4.0 * B * C * N * T);
  at::Tensor grad_e_part = at::zeros({chunks, B, C, T}, h.options());  // one accumulator per chunk
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "t2i_wra_backward_cpu", [&] {
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      at::NoGradGuard guard;
      FlushDenormals ftz;
      at::Tensor s = at::empty({nb_max, T}, h.options());   // [nb, T] beta
      at::Tensor ds = at::empty({nb_max, T}, h.options());  // [nb, T] dbeta, then ds
      for (int64_t k = k0; k < k1; ++k) {
        at::Tensor ge = grad_e_part[k];  // [B, C, T]
        for (int64_t tile = bound(k, tiles, chunks); tile < bound(k + 1, tiles, chunks); ++tile) {
          const int64_t b = tile / tiles_per_b, n0 = (tile % tiles_per_b) * nb_max, nb = std::min(nb_max, N - n0);
          at::Tensor st = s.narrow(0, 0, nb), dst = ds.narrow(0, 0, nb);
          at::Tensor hb = h[b].narrow(1, n0, nb), eb = e[b], gcb = gc[b].narrow(1, n0, nb);  // [C,nb], [C,T], [C,nb]
          at::mm_out(st, hb.t(), eb);  // recompute s [nb, T]
          masked_softmax_rows<scalar_t>(st.data_ptr<scalar_t>(), nb, T, mask[b].data_ptr<bool>());
          at::mm_out(dst, gcb.t(), eb);  // dbeta [nb, T] = dc^T e
          if (has_gb) dst.add_(gb[b].narrow(1, n0, nb).t());
          ge[b].addmm_(gcb, st);  // de += dc beta  [C, T]
          // softmax backward over words: ds = beta * (dbeta - sum_t beta dbeta); masked words have beta = 0
          scalar_t* bp = st.data_ptr<scalar_t>();
          scalar_t* dp = dst.data_ptr<scalar_t>();
          for (int64_t n = 0; n < nb; ++n) {
            scalar_t dot = 0;
            for (int64_t t = 0; t < T; ++t) dot += bp[n * T + t] * dp[n * T + t];
            for (int64_t t = 0; t < T; ++t) dp[n * T + t] = bp[n * T + t] * (dp[n * T + t] - dot);
          }
          at::Tensor ghb = grad_h[b].narrow(1, n0, nb);  // [C, nb] view
          at::mm_out(ghb, eb, dst.t());                   // dh = e ds^T
          ge[b].addmm_(hb, dst);                          // de += h ds
        }
      }
    });
  });
  return {grad_h, grad_e_part.sum(0)};
}

// ---------------------------------------------------------------------------------------------
// DAMSM all-pairs word score
// ---------------------------------------------------------------------------------------------
//
// Captions are packed: WT [L, D] holds the L = sum(lengths) real words, caption j in rows
// [off_j, off_j + len_j). For image i (x = img_i [D, N]) one GEMM gives the scores of all
// words of all captions, S = WT x [L, N]; then per caption segment the softmax over its words
// (for each region) gives P, and the row softmax over regions of gamma1 * P gives alpha (A).
// The contexts c_w = x alpha_w^T enter the score only through R_w = cos(c_w, word_w), and the
// per-caption log-sum-exp of gamma2 * R gives the M scores of that image. Two ways to R:
//   contexts: one more GEMM, CT = A x^T [L, D], and the cosines of its rows with WT's;
//   Gram:     c_w . word_w = sum_n A_wn S_wn and |c_w|^2 = alpha_w G alpha_w^T = sum_n A_wn H_wn,
//             with the regions' Gram matrix G = x^T x [N, N] and H = A G [L, N]: products of
//             N-wide instead of D-wide rows, and a backward that needs besides them only
//             dx = WT^T dS + 2 x dG and dWT = dS x^T (not d contexts, dA = dCT x, dx's dCT^T A).
// Counted in multiply-adds, the training step (forward + backward) costs 7 LND by contexts and
// 3 LND + 3 LN^2 + 3 DN^2 by Gram; Gram is taken where N/D + N/L <= 1 (small region grids: the
// toybirds encoder's 8 x 8 against D = 256), contexts elsewhere (Inception's 17 x 17 = 289).
// Only [L, N], [L, D] and [N, N] tiles per thread are ever held.

struct Packed {
  at::Tensor WT;              // [L, D] packed words
  std::vector<int64_t> off;   // [M + 1] segment offsets
  int64_t L;
};

Packed pack_words(const at::Tensor& words, const at::Tensor& lengths) {
  const int64_t M = words.size(0), T = words.size(2);
  const at::Tensor len = lengths.to(at::kCPU, at::kLong).contiguous();
  TORCH_CHECK(len.dim() == 1 && len.size(0) == M, "t2i::damsm_word_scores: lengths must be [M]");
  const int64_t* lp = len.data_ptr<int64_t>();
  Packed p;
  p.off.assign(M + 1, 0);
  for (int64_t j = 0; j < M; ++j) {
    TORCH_CHECK(lp[j] >= 1 && lp[j] <= T, "t2i::damsm_word_scores: lengths[", j, "] = ", lp[j], " is not in [1, T=", T, "]");
    p.off[j + 1] = p.off[j] + lp[j];
  }
  p.L = p.off[M];
  p.WT = at::empty({p.L, words.size(1)}, words.options());
  for (int64_t j = 0; j < M; ++j) p.WT.narrow(0, p.off[j], lp[j]).copy_(words[j].narrow(1, 0, lp[j]).t());
  return p;
}

// The cheaper way to R for these sizes (see above).
bool use_gram(int64_t L, int64_t D, int64_t N) { return N * (L + D) <= L * D; }

// softmaxes: from S [L, N] (rows l in [off_j, off_j+1) per caption j), writes P = softmax over
// each caption's words for each region into p, and A = softmax over regions of gamma1 * P into a.
// p may alias s (then S is overwritten), a may alias p (then P is). colbuf: 2N scratch values.
template <typename scalar_t>
T2I_INLINE void softmaxes_body(const scalar_t* sp, scalar_t* pp, scalar_t* ap, const int64_t* off, int64_t M, int64_t N, scalar_t g1, scalar_t* colbuf) {
  scalar_t* mx = colbuf;
  scalar_t* inv = colbuf + N;
  for (int64_t j = 0; j < M; ++j) {
    const scalar_t* seg = sp + off[j] * N;
    scalar_t* eseg = pp + off[j] * N;
    const int64_t len = off[j + 1] - off[j];
    for (int64_t n = 0; n < N; ++n) mx[n] = seg[n];
    for (int64_t w = 1; w < len; ++w)
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) mx[n] = std::max(mx[n], seg[w * N + n]);
    for (int64_t n = 0; n < N; ++n) inv[n] = 0;
    for (int64_t w = 0; w < len; ++w)
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t v = exp_nonpos(seg[w * N + n] - mx[n]);
        eseg[w * N + n] = v;
        inv[n] += v;
      }
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) inv[n] = scalar_t(1) / inv[n];
    // Per word row: P = E / colsum (in place), then A = softmax_n(gamma1 * P).
    for (int64_t w = 0; w < len; ++w) {
      const int64_t l = off[j] + w;
      scalar_t* prow = pp + l * N;
      scalar_t* arow = ap + l * N;
      scalar_t m = 0;  // P >= 0
#pragma omp simd reduction(max : m)
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t v = prow[n] * inv[n];
        prow[n] = v;
        m = std::max(m, v);
      }
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) arow[n] = exp_nonpos(g1 * (prow[n] - m));
      scalar_t tot = 0;
      for (int64_t n = 0; n < N; ++n) tot += arow[n];  // in order: the sum these kernels have always formed
      const scalar_t r = scalar_t(1) / tot;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) arow[n] *= r;
    }
  }
}
T2I_CLONES void softmaxes(const float* sp, float* pp, float* ap, const int64_t* off, int64_t M, int64_t N, float g1, float* colbuf) {
  softmaxes_body<float>(sp, pp, ap, off, M, N, g1, colbuf);
}
void softmaxes(const double* sp, double* pp, double* ap, const int64_t* off, int64_t M, int64_t N, double g1, double* colbuf) {
  softmaxes_body<double>(sp, pp, ap, off, M, N, g1, colbuf);
}

// R_l = (x_l . y_l) / (|c_l| |word_l|), |c_l| = sqrt(x_l . z_l) written to cn, for L rows of K values: by contexts
// x = z = CT and y = WT (K = D); by Gram x = A, y = S and z = H (K = N), whose |c|^2 is >= 0 only up to rounding:
// clamped at 0 before the root. Each norm clamped at eps in the quotient.
template <typename scalar_t>
T2I_INLINE void cosines_body(const scalar_t* xp, const scalar_t* yp, const scalar_t* zp, const scalar_t* wnorm, int64_t L, int64_t K, scalar_t* r,
                             scalar_t* cn) {
  for (int64_t l = 0; l < L; ++l) {
    scalar_t dot = 0, cc = 0;
#pragma omp simd reduction(+ : dot, cc)
    for (int64_t k = 0; k < K; ++k) {
      dot += xp[l * K + k] * yp[l * K + k];
      cc += xp[l * K + k] * zp[l * K + k];
    }
    cn[l] = std::sqrt(std::max(cc, scalar_t(0)));
    r[l] = dot / (clamp_eps(cn[l]) * wnorm[l]);
  }
}
T2I_CLONES void cosines(const float* xp, const float* yp, const float* zp, const float* wnorm, int64_t L, int64_t K, float* r, float* cn) {
  cosines_body<float>(xp, yp, zp, wnorm, L, K, r, cn);
}
void cosines(const double* xp, const double* yp, const double* zp, const double* wnorm, int64_t L, int64_t K, double* r, double* cn) {
  cosines_body<double>(xp, yp, zp, wnorm, L, K, r, cn);
}

// Per-image scratch of the forward: S and H [L, N] (S may be a saved slot), G [N, N], contexts [L, D], norms [L].
template <typename scalar_t>
struct Tile {
  at::Tensor s, h, g, ct;
  std::vector<scalar_t> r, cn, colbuf;
  Tile(const Packed& pk, int64_t D, int64_t N, bool gram, bool own_s, const at::TensorOptions& o)
      : r(pk.L), cn(pk.L), colbuf(2 * N) {
    if (own_s) s = at::empty({pk.L, N}, o);
    if (gram) {
      h = at::empty({pk.L, N}, o);
      g = at::empty({N, N}, o);
    } else {
      ct = at::empty({pk.L, D}, o);
    }
  }
};

// R of one image's tile (in t.r) from its S (in s) and A (in a): by Gram (G, H in t.g, t.h) or by contexts (in t.ct);
// |c| in t.cn. The contexts way does not read s.
template <typename scalar_t>
void tile_cosines(const at::Tensor& x, const Packed& pk, const scalar_t* wnorm, bool gram, const at::Tensor& s, const at::Tensor& a,
                  Tile<scalar_t>& t) {
  const int64_t N = x.size(1), D = x.size(0);
  at::Tensor &g = t.g, &h = t.h, &ct = t.ct;
  if (gram) {
    at::mm_out(g, x.t(), x);  // [N, N]  G = x^T x
    at::mm_out(h, a, g);      // [L, N]  H = A G
    cosines(a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), wnorm, pk.L, N, t.r.data(), t.cn.data());
  } else {
    at::mm_out(ct, a, x.t());  // [L, D]  c_w = sum_n alpha_wn x_n
    cosines(ct.data_ptr<scalar_t>(), pk.WT.data_ptr<scalar_t>(), ct.data_ptr<scalar_t>(), wnorm, pk.L, D, t.r.data(), t.cn.data());
  }
}

// The forward tile of one image: S = WT x (in s), P (in p), A (in a; may alias p), then R (tile_cosines).
template <typename scalar_t>
void damsm_image_tile(const at::Tensor& x, const Packed& pk, const scalar_t* wnorm, scalar_t gamma1, bool gram, at::Tensor& s, at::Tensor& p,
                      at::Tensor& a, Tile<scalar_t>& t) {
  const int64_t M = static_cast<int64_t>(pk.off.size()) - 1, N = x.size(1);
  at::mm_out(s, pk.WT, x);  // [L, N]  s_wn = word_w . region_n
  softmaxes(s.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), pk.off.data(), M, N, gamma1, t.colbuf.data());
  tile_cosines<scalar_t>(x, pk, wnorm, gram, s, a, t);
}

template <typename scalar_t>
std::vector<scalar_t> word_norms(const Packed& pk) {
  const int64_t D = pk.WT.size(1);
  std::vector<scalar_t> out(pk.L);
  const scalar_t* wp = pk.WT.data_ptr<scalar_t>();
  for (int64_t l = 0; l < pk.L; ++l) {
    scalar_t ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += wp[l * D + d] * wp[l * D + d];
    out[l] = clamp_eps(std::sqrt(ss));
  }
  return out;
}

// score_j = log sum_{w in caption j} exp(gamma2 R_w)
template <typename scalar_t>
scalar_t segment_lse(const scalar_t* r, int64_t a, int64_t b, scalar_t gamma2) {
  scalar_t m = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t l = a; l < b; ++l) m = std::max(m, gamma2 * r[l]);
  scalar_t s = 0;
  for (int64_t l = a; l < b; ++l) s += std::exp(gamma2 * r[l] - m);
  return m + std::log(s);
}

// In place on d [L, N] (holding dA): the backward of A = softmax_n(gamma1 * P) and of
// P = softmax over each caption's words, leaving dS. tot: N scratch values.
template <typename scalar_t>
T2I_INLINE void softmax_backward_body(const scalar_t* ap, const scalar_t* pp, scalar_t* dp, const int64_t* off, int64_t M, int64_t L, int64_t N, scalar_t g1, scalar_t* tot) {
  // Per caption j: over regions, dP = gamma1 * A * (dA - sum_n A dA) (row by row, accumulating
  // tot = sum_w P dP per region in the same pass); then over the caption's words, per region,
  // dS = P * (dP - tot).
  (void)L;
  for (int64_t j = 0; j < M; ++j) {
    const int64_t l0 = off[j], l1 = off[j + 1];
    for (int64_t n = 0; n < N; ++n) tot[n] = 0;
    for (int64_t l = l0; l < l1; ++l) {
      const scalar_t* arow = ap + l * N;
      const scalar_t* prow = pp + l * N;
      scalar_t* drow = dp + l * N;
      scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t n = 0; n < N; ++n) dot += arow[n] * drow[n];
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t v = g1 * arow[n] * (drow[n] - dot);
        drow[n] = v;
        tot[n] += prow[n] * v;
      }
    }
    for (int64_t l = l0; l < l1; ++l)
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) dp[l * N + n] = pp[l * N + n] * (dp[l * N + n] - tot[n]);
  }
}
T2I_CLONES void softmax_backward(const float* ap, const float* pp, float* dp, const int64_t* off, int64_t M, int64_t L, int64_t N, float g1, float* tot) {
  softmax_backward_body<float>(ap, pp, dp, off, M, L, N, g1, tot);
}
void softmax_backward(const double* ap, const double* pp, double* dp, const int64_t* off, int64_t M, int64_t L, int64_t N, double g1, double* tot) {
  softmax_backward_body<double>(ap, pp, dp, off, M, L, N, g1, tot);
}

// The log-sum-exp's backward: dR_w = g_j * gamma2 * softmax over caption j's words of gamma2 R, for each word w of
// each caption j (g: the M scores' gradients for this image).
template <typename scalar_t>
T2I_INLINE void lse_backward_body(const scalar_t* r, const int64_t* off, int64_t M, const scalar_t* g, scalar_t g2, scalar_t* dr) {
  for (int64_t j = 0; j < M; ++j) {
    const scalar_t lse = segment_lse<scalar_t>(r, off[j], off[j + 1], g2);
    for (int64_t l = off[j]; l < off[j + 1]; ++l) dr[l] = g[j] * g2 * std::exp(g2 * r[l] - lse);
  }
}
T2I_CLONES void lse_backward(const float* r, const int64_t* off, int64_t M, const float* g, float g2, float* dr) {
  lse_backward_body<float>(r, off, M, g, g2, dr);
}
void lse_backward(const double* r, const int64_t* off, int64_t M, const double* g, double g2, double* dr) {
  lse_backward_body<double>(r, off, M, g, g2, dr);
}

// Contexts: backward of R_w = cos(c_w, word_w) for the L rows of ct and wt [L, D] (|c_w| in cn): writes d c_w into dc
// and adds d word_w into dw.
template <typename scalar_t>
T2I_INLINE void cosine_backward_body(const scalar_t* cp, const scalar_t* wp, const scalar_t* wn, const scalar_t* r, const scalar_t* cn,
                                     const scalar_t* drp, int64_t L, int64_t D, scalar_t* dcp, scalar_t* dwp) {
  const scalar_t eps = scalar_t(1e-8);
  for (int64_t l = 0; l < L; ++l) {
    const scalar_t dr = drp[l], craw = cn[l], nc = clamp_eps(craw), nw = wn[l];
    const scalar_t inv = scalar_t(1) / (nc * nw);
    const scalar_t kc = craw > eps ? r[l] / (nc * nc) : scalar_t(0);  // a clamped norm passes no gradient
    const scalar_t kw = nw > eps ? r[l] / (nw * nw) : scalar_t(0);
    const scalar_t* c = cp + l * D;
    const scalar_t* w = wp + l * D;
    scalar_t* dc = dcp + l * D;
    scalar_t* dw = dwp + l * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) {
      dc[d] = dr * (w[d] * inv - kc * c[d]);
      dw[d] += dr * (c[d] * inv - kw * w[d]);
    }
  }
}
T2I_CLONES void cosine_backward(const float* cp, const float* wp, const float* wn, const float* r, const float* cn, const float* drp, int64_t L,
                                int64_t D, float* dcp, float* dwp) {
  cosine_backward_body<float>(cp, wp, wn, r, cn, drp, L, D, dcp, dwp);
}
void cosine_backward(const double* cp, const double* wp, const double* wn, const double* r, const double* cn, const double* drp, int64_t L,
                     int64_t D, double* dcp, double* dwp) {
  cosine_backward_body<double>(cp, wp, wn, r, cn, drp, L, D, dcp, dwp);
}

// Gram: the same backward through R_w = dot_w / (|c_w| |word_w|), dot_w = sum_n A_wn S_wn, |c_w|^2 = sum_n A_wn H_wn.
// With ddot = dR / (|c| |w|) and dcc = -dR R / (2 |c|^2) (0 where a norm is clamped): writes dA = ddot S + 2 dcc H
// into da, B = dcc A into bp (dG = A^T B), ddot into dd, and adds the word norm's share -dR R / |w|^2 word_w into dw
// (the dot's share reaches the words through dS).
template <typename scalar_t>
T2I_INLINE void cosine_backward_gram_body(const scalar_t* sp, const scalar_t* ap, const scalar_t* hp, const scalar_t* wp, const scalar_t* wn,
                                          const scalar_t* r, const scalar_t* cn, const scalar_t* drp, int64_t L, int64_t N, int64_t D, scalar_t* da,
                                          scalar_t* bp, scalar_t* dd, scalar_t* dwp) {
  const scalar_t eps = scalar_t(1e-8);
  for (int64_t l = 0; l < L; ++l) {
    const scalar_t dr = drp[l], craw = cn[l], nc = clamp_eps(craw), nw = wn[l];
    const scalar_t ddot = dr / (nc * nw);
    const scalar_t dcc2 = craw > eps ? -dr * r[l] / (nc * nc) : scalar_t(0);  // 2 dcc; a clamped norm passes no gradient
    const scalar_t kw = nw > eps ? dr * r[l] / (nw * nw) : scalar_t(0);
    dd[l] = ddot;
    const scalar_t* srow = sp + l * N;
    const scalar_t* arow = ap + l * N;
    const scalar_t* hrow = hp + l * N;
    scalar_t* darow = da + l * N;
    scalar_t* brow = bp + l * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) {
      darow[n] = ddot * srow[n] + dcc2 * hrow[n];
      brow[n] = scalar_t(0.5) * dcc2 * arow[n];
    }
    const scalar_t* w = wp + l * D;
    scalar_t* dw = dwp + l * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dw[d] -= kw * w[d];
  }
}
T2I_CLONES void cosine_backward_gram(const float* sp, const float* ap, const float* hp, const float* wp, const float* wn, const float* r, const float* cn,
                                     const float* drp, int64_t L, int64_t N, int64_t D, float* da, float* bp, float* dd, float* dwp) {
  cosine_backward_gram_body<float>(sp, ap, hp, wp, wn, r, cn, drp, L, N, D, da, bp, dd, dwp);
}
void cosine_backward_gram(const double* sp, const double* ap, const double* hp, const double* wp, const double* wn, const double* r, const double* cn,
                          const double* drp, int64_t L, int64_t N, int64_t D, double* da, double* bp, double* dd, double* dwp) {
  cosine_backward_gram_body<double>(sp, ap, hp, wp, wn, r, cn, drp, L, N, D, da, bp, dd, dwp);
}

// dS += ddot_w A_w (the dot's direct share) on [L, N].
template <typename scalar_t>
T2I_INLINE void add_rows_scaled_body(scalar_t* ds, const scalar_t* ap, const scalar_t* dd, int64_t L, int64_t N) {
  for (int64_t l = 0; l < L; ++l)
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) ds[l * N + n] += dd[l] * ap[l * N + n];
}
T2I_CLONES void add_rows_scaled(float* ds, const float* ap, const float* dd, int64_t L, int64_t N) { add_rows_scaled_body<float>(ds, ap, dd, L, N); }
void add_rows_scaled(double* ds, const double* ap, const double* dd, int64_t L, int64_t N) { add_rows_scaled_body<double>(ds, ap, dd, L, N); }

void check_damsm_inputs(const at::Tensor& img, const at::Tensor& words) {
  TORCH_CHECK(img.dim() == 3 && words.dim() == 3, "t2i::damsm_word_scores: expected img [M,D,N], words [M,D,T]");
  TORCH_CHECK(img.size(0) == words.size(0) && img.size(1) == words.size(1), "t2i::damsm_word_scores: img and words disagree on M or D");
  TORCH_CHECK(img.scalar_type() == words.scalar_type(), "t2i::damsm_word_scores: img and words dtypes differ");
}

// The M x M scores; with `save` also every image's tile of S and the softmaxes, saved [M, 3, L, N] (image i: S, P,
// A), which the backward then reads instead of recomputing them (damsm_word_scores_save: the CPU training path).
std::tuple<at::Tensor, at::Tensor> damsm_forward(const at::Tensor& img_, const at::Tensor& words_, const at::Tensor& lengths, double gamma1,
                                                 double gamma2, bool save) {
  at::NoGradGuard no_grad;
  check_damsm_inputs(img_, words_);
  const at::Tensor img = img_.detach().contiguous(), words = words_.detach().contiguous();
  const int64_t M = img.size(0), D = img.size(1), N = img.size(2);
  at::Tensor score = at::empty({M, M}, img.options());  // [M(images), M(captions)]
  if (M == 0) return {score, at::empty({0, 3, 0, N}, img.options())};
  TORCH_CHECK(N > 0, "t2i::damsm_word_scores: no regions");
  const Packed pk = pack_words(words, lengths);
  const bool gram = use_gram(pk.L, D, N);
  at::Tensor saved = save ? at::empty({M, 3, pk.L, N}, img.options()) : at::Tensor();  // [M, 3, L, N]
  const int64_t chunks = num_chunks(M, 4.0 * M * pk.L * N * D);
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "t2i_damsm_forward_cpu", [&] {
    const std::vector<scalar_t> wn = word_norms<scalar_t>(pk);
    scalar_t* out = score.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      at::NoGradGuard guard;
      FlushDenormals ftz;
      Tile<scalar_t> t(pk, D, N, gram, !save, img.options());
      at::Tensor p = save || !gram ? t.s : at::empty({pk.L, N}, img.options());  // [L, N] P, then A (in place; Gram keeps S)
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t i = bound(k, M, chunks); i < bound(k + 1, M, chunks); ++i) {
          if (save) {
            at::Tensor si = saved[i][0], pi = saved[i][1], ai = saved[i][2];  // [L, N] each
            damsm_image_tile<scalar_t>(img[i], pk, wn.data(), static_cast<scalar_t>(gamma1), gram, si, pi, ai, t);
          } else {
            damsm_image_tile<scalar_t>(img[i], pk, wn.data(), static_cast<scalar_t>(gamma1), gram, t.s, p, p, t);  // contexts: all one buffer
          }
          for (int64_t j = 0; j < M; ++j) out[i * M + j] = segment_lse<scalar_t>(t.r.data(), pk.off[j], pk.off[j + 1], static_cast<scalar_t>(gamma2));
        }
    });
  });
  return {score, saved};
}

at::Tensor damsm_forward_cpu(const at::Tensor& img, const at::Tensor& words, const at::Tensor& lengths, double gamma1, double gamma2) {
  return std::get<0>(damsm_forward(img, words, lengths, gamma1, gamma2, false));
}

std::tuple<at::Tensor, at::Tensor> damsm_forward_save_cpu(const at::Tensor& img, const at::Tensor& words, const at::Tensor& lengths, double gamma1,
                                                          double gamma2) {
  return damsm_forward(img, words, lengths, gamma1, gamma2, true);
}

// grad [M, M] -> (grad_img, grad_words). saved: the forward's [M, 3, L, N] S and softmaxes, or undefined (recompute them).
std::tuple<at::Tensor, at::Tensor> damsm_backward(const at::Tensor& grad_, const at::Tensor& img_, const at::Tensor& words_, const at::Tensor& lengths,
                                                  const at::Tensor& saved_, double gamma1, double gamma2) {
  at::NoGradGuard no_grad;
  check_damsm_inputs(img_, words_);
  const at::Tensor img = img_.detach().contiguous(), words = words_.detach().contiguous();
  const at::Tensor grad = grad_.detach().to(img.scalar_type()).contiguous();
  const int64_t M = img.size(0), D = img.size(1), N = img.size(2);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == M && grad.size(1) == M, "t2i::damsm_word_scores_backward: grad must be [M,M]");
  at::Tensor grad_img = at::empty_like(img);      // [M, D, N]
  at::Tensor grad_words = at::zeros_like(words);  // [M, D, T]; padding words get 0
  if (M == 0) return {grad_img, grad_words};
  const Packed pk = pack_words(words, lengths);
  const bool gram = use_gram(pk.L, D, N);
  const bool use_saved = saved_.defined();
  const at::Tensor saved = use_saved ? saved_.detach().contiguous() : at::Tensor();
  TORCH_CHECK(!use_saved || (saved.dim() == 4 && saved.size(0) == M && saved.size(1) == 3 && saved.size(2) == pk.L && saved.size(3) == N &&
                             saved.scalar_type() == img.scalar_type()),
              "t2i::damsm_word_scores_backward_saved: saved must be the forward's [M, 3, L, N] of img's dtype (L = sum(lengths) = ", pk.L, ")");
  const int64_t chunks = num_chunks(M, 4.0 * M * pk.L * N * D);
  at::Tensor gwt_part = at::zeros({chunks, pk.L, D}, img.options());  // d WT, one accumulator per chunk
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "t2i_damsm_backward_cpu", [&] {
    const std::vector<scalar_t> wn = word_norms<scalar_t>(pk);
    const scalar_t g1 = static_cast<scalar_t>(gamma1), g2 = static_cast<scalar_t>(gamma2);
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* wp = pk.WT.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      at::NoGradGuard guard;
      FlushDenormals ftz;
      const int64_t L = pk.L;
      const at::TensorOptions o = img.options();
      Tile<scalar_t> t(pk, D, N, gram, gram && !use_saved, o);  // contexts: S is formed in da
      at::Tensor p = use_saved ? at::Tensor() : at::empty({L, N}, o);  // [L, N] P (recomputed)
      at::Tensor ad = at::empty({2 * L, N}, o);  // [2L, N] rows [0, L): alpha; rows [L, 2L): dA, then dP, then dS
      at::Tensor a = ad.narrow(0, 0, L), da = ad.narrow(0, L, L);
      // Gram: B [L, N], dG [N, N], ddot [L]. Contexts: rows [0, L) d contexts, rows [L, 2L) WT (one GEMM for dx).
      at::Tensor b, dg, cw, dct;
      std::vector<scalar_t> dd, dr(L);  // ddot (Gram), dR
      if (gram) {
        b = at::empty({L, N}, o);
        dg = at::empty({N, N}, o);
        dd.resize(L);
      } else {
        cw = at::empty({2 * L, D}, o);
        dct = cw.narrow(0, 0, L);
        cw.narrow(0, L, L).copy_(pk.WT);
      }
      for (int64_t k = k0; k < k1; ++k) {
        at::Tensor gwt = gwt_part[k];  // [L, D]
        scalar_t* gwp = gwt.data_ptr<scalar_t>();
        for (int64_t i = bound(k, M, chunks); i < bound(k + 1, M, chunks); ++i) {
          const at::Tensor x = img[i];  // [D, N]
          at::Tensor si = gram ? t.s : da, pi = p, ai = a;
          if (use_saved) {  // the forward's S, P and A; then the tile's last steps (Gram or contexts, the cosines)
            si = saved[i][0];
            pi = saved[i][1];
            if (gram) {
              ai = saved[i][2];
            } else {
              a.copy_(saved[i][2]);  // beside dS for the one-GEMM dx below
            }
            tile_cosines<scalar_t>(x, pk, wn.data(), gram, si, ai, t);
          } else {
            damsm_image_tile<scalar_t>(x, pk, wn.data(), g1, gram, si, p, a, t);
          }
          at::Tensor gx = grad_img[i];  // [D, N]
          lse_backward(t.r.data(), pk.off.data(), M, gp + i * M, g2, dr.data());
          if (gram) {
            // R backward -> dA (in da), B, ddot, the word norms' share of d words; then dS = softmax backward + ddot A.
            cosine_backward_gram(si.data_ptr<scalar_t>(), ai.data_ptr<scalar_t>(), t.h.data_ptr<scalar_t>(), wp, wn.data(), t.r.data(),
                                 t.cn.data(), dr.data(), L, N, D, da.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), dd.data(), gwp);
            softmax_backward(ai.data_ptr<scalar_t>(), pi.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), pk.off.data(), M, L, N, g1, t.colbuf.data());
            add_rows_scaled(da.data_ptr<scalar_t>(), ai.data_ptr<scalar_t>(), dd.data(), L, N);
            at::mm_out(dg, ai.t(), b);      // dG [N, N] = A^T diag(dcc) A (symmetric)
            at::mm_out(gx, pk.WT.t(), da);  // dx = WT^T dS [D, N] ...
            gx.addmm_(x, dg, 1, 2);         // ... + 2 x dG
          } else {
            // Cosine + log-sum-exp backward -> d contexts (dct) and the direct part of d words (gwt).
            cosine_backward(t.ct.data_ptr<scalar_t>(), wp, wn.data(), t.r.data(), t.cn.data(), dr.data(), L, D, dct.data_ptr<scalar_t>(), gwp);
            at::mm_out(da, dct, x);  // dA [L, N] = dCT x
            softmax_backward(a.data_ptr<scalar_t>(), pi.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), pk.off.data(), M, L, N, g1, t.colbuf.data());
            at::mm_out(gx, cw.t(), ad);  // dx = dCT^T A + W dS in one GEMM: [D, 2L] x [2L, N]
          }
          gwt.addmm_(da, x.t());  // dWT += dS x^T  [L, D]
        }
      }
    });
    // Unpack d WT into the padded [M, D, T] layout.
    const at::Tensor gwt = gwt_part.sum(0);  // [L, D]
    for (int64_t j = 0; j < M; ++j) {
      const int64_t len = pk.off[j + 1] - pk.off[j];
      grad_words[j].narrow(1, 0, len).copy_(gwt.narrow(0, pk.off[j], len).t());
    }
  });
  return {grad_img, grad_words};
}

std::tuple<at::Tensor, at::Tensor> damsm_backward_cpu(const at::Tensor& grad, const at::Tensor& img, const at::Tensor& words, const at::Tensor& lengths,
                                                      double gamma1, double gamma2) {
  return damsm_backward(grad, img, words, lengths, at::Tensor(), gamma1, gamma2);
}

std::tuple<at::Tensor, at::Tensor> damsm_backward_saved_cpu(const at::Tensor& grad, const at::Tensor& img, const at::Tensor& words, const at::Tensor& lengths,
                                                            const at::Tensor& saved, double gamma1, double gamma2) {
  return damsm_backward(grad, img, words, lengths, saved, gamma1, gamma2);
}

}  // namespace

TORCH_LIBRARY_IMPL(t2i, CPU, m) {
  m.impl("word_region_attention", &wra_forward_cpu);
  m.impl("word_region_attention_backward", &wra_backward_cpu);
  m.impl("damsm_word_scores", &damsm_forward_cpu);
  m.impl("damsm_word_scores_backward", &damsm_backward_cpu);
  m.impl("damsm_word_scores_save", &damsm_forward_save_cpu);
  m.impl("damsm_word_scores_backward_saved", &damsm_backward_saved_cpu);
}

}  // namespace t2i
