// Fused sequential ParaGRU and ParaLSTM cells on the CPU: forward and backward (BPTT).
//
// ParaRNN's cells (Danieli et al. 2025, arXiv 2510.21450) have *diagonal* recurrent
// weights, so feature j of the state depends only on feature j of the previous state
// and of the input projection u = W x + b (computed outside, one matrix product for all
// steps). The recurrence is therefore independent across (batch, feature): each unit of
// work (one batch element, a block of features) runs its own loop over time with the
// state in registers/L1, reading u and writing the states once. That is the whole
// sequential computation in one pass over memory, with no per-step dispatch.
//
// Layout (batch-first, contiguous, row-major):
//   u   (B, L, 3H)  gate pre-activations from the input, gate blocks [g0 | g1 | g2]
//   a   (3, H)      diagonal recurrent weights (GRU: z, r, c; LSTM: f, z, o)
//   p   (2, H)      LSTM peepholes (f from c_prev, o from c)
//   GRU state h (B, L, H); LSTM state s (B, L, H, 2) with s[..., 0] = c, s[..., 1] = h
//   lengths (B,) int64 or null: steps t >= lengths[b] leave the state unchanged.
// Backward takes the gradient of every state (the final state is the last one, so its
// gradient is already in there), returns du, the parameter gradients (accumulated over
// batch and time: a unit owns a feature block for every batch element, so no two
// threads write the same entry) and the gradient of the initial state.

// Floating-point comparisons never trap here; telling the compiler so lets it turn the
// clamps of exp_approx into vector min/max and vectorise the gate loops.
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

using i64 = int64_t;

namespace {

// exp for float: Cody-Waite range reduction and the Cephes polynomial (about 1 ulp on
// the clamped range), written so that the compiler vectorises the loops that call it
// (the libm expf is a scalar call per element and dominates the kernel otherwise).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float exp_of(float x) { return exp_approx(x); }
inline double exp_of(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_of(-x));
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) <= 1: no overflow.
inline float tanh_of(float x) {
  const float e = exp_approx(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}
inline double tanh_of(double x) { return std::tanh(x); }

inline int threads_for(i64 work, int nthreads) {
  return work < (i64(1) << 14) ? 1 : std::max(nthreads, 1);
}

// Feature block size: about 4 units per thread, at least 8 features per block.
inline i64 block_of(i64 rows, i64 H, int nthreads) {
  const i64 want = 4 * std::max(nthreads, 1);
  i64 per_row = std::max<i64>(1, (want + rows - 1) / rows);
  i64 blk = (H + per_row - 1) / per_row;
  blk = std::max<i64>(8, (blk + 7) / 8 * 8);
  return std::min(blk, std::max<i64>(H, 1));
}

constexpr i64 kMaxBlk = 512;

// ---------------------------------------------------------------------------- GRU
//   z = sigmoid(a_z h + u_z), r = sigmoid(a_r h + u_r), c = tanh(a_c (h r) + u_c)
//   h' = h + z (c - h)

template <typename T>
void gru_forward(const T* u, const T* a, const T* h0, const i64* lengths, T* h, i64 B, i64 L,
                 i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(B, H, nthreads));
  const i64 per_row = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * per_row; ++unit) {
    T s[kMaxBlk];
    const i64 b = unit / per_row;
    const i64 j0 = (unit % per_row) * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const i64 len = lengths ? lengths[b] : L;
    const T* az = a + j0;
    const T* ar = a + H + j0;
    const T* ac = a + 2 * H + j0;
    std::memcpy(s, h0 + b * H + j0, sizeof(T) * n);
    for (i64 t = 0; t < L; ++t) {
      T* ht = h + (b * L + t) * H + j0;
      if (t < len) {
        const T* ut = u + (b * L + t) * 3 * H + j0;
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const T hp = s[j];
          const T z = sigmoid(az[j] * hp + ut[j]);
          const T r = sigmoid(ar[j] * hp + ut[H + j]);
          const T c = tanh_of(ac[j] * (hp * r) + ut[2 * H + j]);
          s[j] = hp + z * (c - hp);
        }
      }
      std::memcpy(ht, s, sizeof(T) * n);
    }
  }
}

template <typename T>
void gru_backward(const T* u, const T* a, const T* h0, const i64* lengths, const T* h,
                  const T* gh, T* du, T* ga, T* gh0, i64 B, i64 L, i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T carry[kMaxBlk], gaz[kMaxBlk], gar[kMaxBlk], gac[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* az = a + j0;
    const T* ar = a + H + j0;
    const T* ac = a + 2 * H + j0;
    std::fill(gaz, gaz + n, T(0));
    std::fill(gar, gar + n, T(0));
    std::fill(gac, gac + n, T(0));
    for (i64 b = 0; b < B; ++b) {
      const i64 len = lengths ? lengths[b] : L;
      std::fill(carry, carry + n, T(0));
      for (i64 t = L - 1; t >= 0; --t) {
        const T* gt = gh + (b * L + t) * H + j0;
        T* dut = du + (b * L + t) * 3 * H + j0;
        if (t >= len) {  // identity step
          for (i64 j = 0; j < n; ++j) {
            carry[j] += gt[j];
            dut[j] = dut[H + j] = dut[2 * H + j] = T(0);
          }
          continue;
        }
        const T* ut = u + (b * L + t) * 3 * H + j0;
        const T* hp_row = t > 0 ? h + (b * L + t - 1) * H + j0 : h0 + b * H + j0;
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const T hp = hp_row[j];
          const T g = gt[j] + carry[j];
          const T z = sigmoid(az[j] * hp + ut[j]);
          const T r = sigmoid(ar[j] * hp + ut[H + j]);
          const T c = tanh_of(ac[j] * (hp * r) + ut[2 * H + j]);
          const T dq = g * z * (T(1) - c * c);
          const T dpz = g * (c - hp) * z * (T(1) - z);
          const T dpr = dq * ac[j] * hp * r * (T(1) - r);
          dut[j] = dpz;
          dut[H + j] = dpr;
          dut[2 * H + j] = dq;
          gaz[j] += dpz * hp;
          gar[j] += dpr * hp;
          gac[j] += dq * hp * r;
          carry[j] = g * (T(1) - z) + dpz * az[j] + dpr * ar[j] + dq * ac[j] * r;
        }
      }
      std::memcpy(gh0 + b * H + j0, carry, sizeof(T) * n);
    }
    std::memcpy(ga + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + H + j0, gar, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gac, sizeof(T) * n);
  }
}

// ---------------------------------------------------------------------------- LSTM
// Coupled input-forget gate with peepholes (state (c, h)):
//   f = sigmoid(a_f h + p_f c + u_f), z = tanh(a_z h + u_z), c' = f c + (1 - f) z
//   o = sigmoid(a_o h + p_o c' + u_o), h' = o tanh(c')

template <typename T>
void lstm_forward(const T* u, const T* a, const T* p, const T* s0, const i64* lengths, T* s,
                  i64 B, i64 L, i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(B, H, nthreads));
  const i64 per_row = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * per_row; ++unit) {
    T st[2 * kMaxBlk];
    const i64 b = unit / per_row;
    const i64 j0 = (unit % per_row) * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const i64 len = lengths ? lengths[b] : L;
    const T* af = a + j0;
    const T* az = a + H + j0;
    const T* ao = a + 2 * H + j0;
    const T* pf = p + j0;
    const T* po = p + H + j0;
    std::memcpy(st, s0 + (b * H + j0) * 2, sizeof(T) * 2 * n);
    for (i64 t = 0; t < L; ++t) {
      if (t < len) {
        const T* ut = u + (b * L + t) * 3 * H + j0;
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const T cp = st[2 * j], hp = st[2 * j + 1];
          const T f = sigmoid(af[j] * hp + pf[j] * cp + ut[j]);
          const T z = tanh_of(az[j] * hp + ut[H + j]);
          const T c = f * cp + (T(1) - f) * z;
          const T o = sigmoid(ao[j] * hp + po[j] * c + ut[2 * H + j]);
          st[2 * j] = c;
          st[2 * j + 1] = o * tanh_of(c);
        }
      }
      std::memcpy(s + ((b * L + t) * H + j0) * 2, st, sizeof(T) * 2 * n);
    }
  }
}

template <typename T>
void lstm_backward(const T* u, const T* a, const T* p, const T* s0, const i64* lengths,
                   const T* s, const T* gs, T* du, T* ga, T* gp, T* gs0, i64 B, i64 L, i64 H,
                   int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T cc[kMaxBlk], ch[kMaxBlk];
    T gaf[kMaxBlk], gaz[kMaxBlk], gao[kMaxBlk], gpf[kMaxBlk], gpo[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* af = a + j0;
    const T* az = a + H + j0;
    const T* ao = a + 2 * H + j0;
    const T* pf = p + j0;
    const T* po = p + H + j0;
    for (T* buf : {gaf, gaz, gao, gpf, gpo}) std::fill(buf, buf + n, T(0));
    for (i64 b = 0; b < B; ++b) {
      const i64 len = lengths ? lengths[b] : L;
      std::fill(cc, cc + n, T(0));
      std::fill(ch, ch + n, T(0));
      for (i64 t = L - 1; t >= 0; --t) {
        const T* gt = gs + ((b * L + t) * H + j0) * 2;
        T* dut = du + (b * L + t) * 3 * H + j0;
        if (t >= len) {
          for (i64 j = 0; j < n; ++j) {
            cc[j] += gt[2 * j];
            ch[j] += gt[2 * j + 1];
            dut[j] = dut[H + j] = dut[2 * H + j] = T(0);
          }
          continue;
        }
        const T* ut = u + (b * L + t) * 3 * H + j0;
        const T* sp = t > 0 ? s + ((b * L + t - 1) * H + j0) * 2 : s0 + (b * H + j0) * 2;
        const T* sc = s + ((b * L + t) * H + j0) * 2;
        #pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const T cp = sp[2 * j], hp = sp[2 * j + 1], c = sc[2 * j];
          const T gc = gt[2 * j] + cc[j];
          const T gh = gt[2 * j + 1] + ch[j];
          const T f = sigmoid(af[j] * hp + pf[j] * cp + ut[j]);
          const T z = tanh_of(az[j] * hp + ut[H + j]);
          const T o = sigmoid(ao[j] * hp + po[j] * c + ut[2 * H + j]);
          const T tc = tanh_of(c);
          const T dpo = gh * tc * o * (T(1) - o);
          const T dc = gc + gh * o * (T(1) - tc * tc) + dpo * po[j];
          const T dpf = dc * (cp - z) * f * (T(1) - f);
          const T dpz = dc * (T(1) - f) * (T(1) - z * z);
          dut[j] = dpf;
          dut[H + j] = dpz;
          dut[2 * H + j] = dpo;
          gaf[j] += dpf * hp;
          gaz[j] += dpz * hp;
          gao[j] += dpo * hp;
          gpf[j] += dpf * cp;
          gpo[j] += dpo * c;
          cc[j] = dc * f + dpf * pf[j];
          ch[j] = dpf * af[j] + dpz * az[j] + dpo * ao[j];
        }
      }
      T* o0 = gs0 + (b * H + j0) * 2;
      for (i64 j = 0; j < n; ++j) {
        o0[2 * j] = cc[j];
        o0[2 * j + 1] = ch[j];
      }
    }
    std::memcpy(ga + j0, gaf, sizeof(T) * n);
    std::memcpy(ga + H + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gao, sizeof(T) * n);
    std::memcpy(gp + j0, gpf, sizeof(T) * n);
    std::memcpy(gp + H + j0, gpo, sizeof(T) * n);
  }
}

}  // namespace

#define RNNX_PARARNN(SUFFIX, T)                                                               \
  extern "C" void rnnx_paragru_fwd_##SUFFIX(const T* u, const T* a, const T* h0,              \
                                            const i64* lengths, T* h, i64 B, i64 L, i64 H,    \
                                            int nthreads) {                                   \
    gru_forward<T>(u, a, h0, lengths, h, B, L, H, nthreads);                                  \
  }                                                                                           \
  extern "C" void rnnx_paragru_bwd_##SUFFIX(const T* u, const T* a, const T* h0,              \
                                            const i64* lengths, const T* h, const T* gh,      \
                                            T* du, T* ga, T* gh0, i64 B, i64 L, i64 H,        \
                                            int nthreads) {                                   \
    gru_backward<T>(u, a, h0, lengths, h, gh, du, ga, gh0, B, L, H, nthreads);                \
  }                                                                                           \
  extern "C" void rnnx_paralstm_fwd_##SUFFIX(const T* u, const T* a, const T* p, const T* s0, \
                                             const i64* lengths, T* s, i64 B, i64 L, i64 H,   \
                                             int nthreads) {                                  \
    lstm_forward<T>(u, a, p, s0, lengths, s, B, L, H, nthreads);                              \
  }                                                                                           \
  extern "C" void rnnx_paralstm_bwd_##SUFFIX(                                                 \
      const T* u, const T* a, const T* p, const T* s0, const i64* lengths, const T* s,        \
      const T* gs, T* du, T* ga, T* gp, T* gs0, i64 B, i64 L, i64 H, int nthreads) {          \
    lstm_backward<T>(u, a, p, s0, lengths, s, gs, du, ga, gp, gs0, B, L, H, nthreads);        \
  }

RNNX_PARARNN(f32, float)
RNNX_PARARNN(f64, double)
