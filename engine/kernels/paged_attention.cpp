// Decode attention straight out of the paged KV pool: one query token per sequence, its keys and values read through
// the sequence's block table, no gather into a contiguous copy first. q and out are fp32 on CPU; the KV pool is fp32
// or bf16 (read as fp32: a bf16 value is the top half of an fp32 one). The runner falls back to gather +
// scaled_dot_product_attention for any other dtype or device.
//
// Work is split over sequences. With AVX-512 and a head_dim of 16, 32, 48, 64 or 128 each query head is done in
// turn over a precomputed list of the sequence's pool rows: its scores are written contiguously, four positions
// reduced at once, and its output accumulated in registers (the rows of its KV head stay in L1/L2 for the other heads
// of the GQA group). On this machine kind that is ~20% faster per call than the general path below, which handles the
// query heads sharing a KV head together per position; what remains is reading the KV rows from L3 (~20 GB/s per
// core). Softmax is computed exactly (max-subtracted) over the whole context, which for the context lengths served
// here fits in a thread-local buffer.

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

void check_inputs(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                  const at::Tensor& block_tables, const at::Tensor& context_lens, const at::Tensor& rows,
                  const at::Tensor& out) {
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat, "q must be a CPU float32 tensor");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, "q must be [T, H, D] with unit stride in D");
  TORCH_CHECK((k_cache.scalar_type() == at::kFloat || k_cache.scalar_type() == at::kBFloat16) &&
                  v_cache.scalar_type() == k_cache.scalar_type(), "KV pool must be float32 or bfloat16, K and V alike");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes(), "KV pool must be contiguous [slots, KV, D]");
  TORCH_CHECK(k_cache.size(2) == q.size(2), "head_dim differs between q and the KV pool");
  TORCH_CHECK(q.size(1) % k_cache.size(1) == 0, "query heads must be a multiple of KV heads");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.dim() == 2 && block_tables.is_contiguous(),
              "block_tables must be contiguous int32 [B, W]");
  TORCH_CHECK(context_lens.scalar_type() == at::kInt && context_lens.is_contiguous(), "context_lens: int32 [B]");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous(), "rows: int64 [B]");
  TORCH_CHECK(block_tables.size(0) == rows.size(0) && context_lens.size(0) == rows.size(0),
              "block_tables, context_lens and rows must have one entry per sequence");
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.sizes() == q.sizes(),
              "out must be a contiguous float32 tensor shaped like q");
}

// Calls visit(t, slot) for the context positions 0..len-1 in order, walking the block table block by block (no
// division per position).
template <typename Visit>
inline void for_each_slot(const int32_t* table, int64_t len, int64_t block_size, Visit visit) {
  for (int64_t start = 0, i = 0; start < len; start += block_size, ++i) {
    const int64_t base = static_cast<int64_t>(table[i]) * block_size;
    const int64_t n = std::min(block_size, len - start);
    for (int64_t j = 0; j < n; ++j) visit(start + j, base + j);
  }
}

inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) { return static_cast<float>(x); }

#if defined(__AVX512F__)
// Sixteen pool values as fp32 lanes.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const at::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
constexpr int64_t kMaxHeads = 128;

// The lane sums of four vectors at once, [Σa, Σb, Σc, Σd]: cheaper than four separate horizontal reductions.
inline __m128 sum_lanes4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 all = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(all), _mm256_extractf128_ps(all, 1));
}
#endif

// scores[h * len + t] = q_h · key(t) for every query head h, reading each position's keys (all KV heads, one
// contiguous row of the pool) once; query head h uses KV head h / group.
template <typename KV>
inline void dot_keys(const float* query, int64_t kv_heads, int64_t group, int64_t head_dim, const KV* k_data,
                     const int32_t* table, int64_t len, int64_t block_size, float* scores) {
  const int64_t row_size = kv_heads * head_dim;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  const int64_t heads = kv_heads * group;
  if (head_dim % 16 == 0 && head_dim <= 256 && heads <= kMaxHeads) {
    const int64_t chunks = head_dim / 16;
    __m512 partial[kMaxHeads];  // per head: 16 lanes of partial sums, reduced four heads at a time
    for_each_slot(table, len, block_size, [&](int64_t t, int64_t slot) {
      const KV* row = k_data + slot * row_size;
      for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
        const KV* key = row + kvh * head_dim;
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kvh * group + g;
          const float* qh = query + h * head_dim;
          __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qh), load16(key));
          for (int64_t c = 1; c < chunks; ++c)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c), load16(key + 16 * c), acc);
          partial[h] = acc;
        }
      }
      int64_t h = 0;
      for (; h + 4 <= heads; h += 4) {
        alignas(16) float sums[4];
        _mm_store_ps(sums, sum_lanes4(partial[h], partial[h + 1], partial[h + 2], partial[h + 3]));
        for (int64_t i = 0; i < 4; ++i) scores[(h + i) * len + t] = sums[i];
      }
      for (; h < heads; ++h) scores[h * len + t] = _mm512_reduce_add_ps(partial[h]);
    });
    return;
  }
#endif
  for_each_slot(table, len, block_size, [&](int64_t t, int64_t slot) {
    const KV* row = k_data + slot * row_size;
    for (int64_t h = 0; h < kv_heads * group; ++h) {
      const KV* key = row + (h / group) * head_dim;
      const float* qh = query + h * head_dim;
      float dot = 0.f;
      for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * to_float(key[d]);
      scores[h * len + t] = dot;
    }
  });
}

#if defined(__AVX512F__)
// e^x for x <= 0 (scores minus their maximum): 2^k · e^r with r = x - k·ln2 in [-ln2/2, ln2/2] and a degree-7
// Taylor polynomial for e^r (relative error < 1e-8, below float precision).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));  // below this e^x underflows anyway
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);  // ln2 split in two for precision
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}
#endif

// In place: s = exp(s - max(s)) over n scores; returns their sum (the softmax's denominator).
inline float exp_shifted(float* s, int64_t n) {
  float peak = -std::numeric_limits<float>::infinity();
  int64_t t = 0;
#if defined(__AVX512F__)
  __m512 peak16 = _mm512_set1_ps(peak);
  for (; t + 16 <= n; t += 16) peak16 = _mm512_max_ps(peak16, _mm512_loadu_ps(s + t));
  peak = _mm512_reduce_max_ps(peak16);
#endif
  for (; t < n; ++t) peak = std::max(peak, s[t]);
  float total = 0.f;
  t = 0;
#if defined(__AVX512F__)
  const __m512 shift = _mm512_set1_ps(peak);
  __m512 sum = _mm512_setzero_ps();
  for (; t + 16 <= n; t += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + t), shift));
    _mm512_storeu_ps(s + t, e);
    sum = _mm512_add_ps(sum, e);
  }
  total = _mm512_reduce_add_ps(sum);
#endif
  for (; t < n; ++t) {
    s[t] = std::exp(s[t] - peak);
    total += s[t];
  }
  return total;
}

// In place: s = softmax(s) over n scores.
inline void softmax(float* s, int64_t n) {
  const float inv = 1.f / exp_shifted(s, n);
  for (int64_t t = 0; t < n; ++t) s[t] *= inv;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// The fast path for one sequence, head_dim = 16·C: positions are visited per query head through a precomputed list of
// pool rows, so a head's scores are written contiguously (four positions reduced at once) and its output is
// accumulated in C registers instead of memory. The softmax is left unnormalised; the output is scaled once by the
// inverse of its sum. The rows of a KV head (a few KB per sequence) stay in L1 between the heads of its group.
template <int C, typename KV>
inline void scores_of_head(const float* qh, const KV* k_data, const int64_t* rows, int64_t len, float* s) {
  __m512 q[C];
  for (int c = 0; c < C; ++c) q[c] = _mm512_loadu_ps(qh + 16 * c);
  int64_t t = 0;
  for (; t + 4 <= len; t += 4) {
    const KV* k0 = k_data + rows[t];
    const KV* k1 = k_data + rows[t + 1];
    const KV* k2 = k_data + rows[t + 2];
    const KV* k3 = k_data + rows[t + 3];
    __m512 a0 = _mm512_mul_ps(q[0], load16(k0)), a1 = _mm512_mul_ps(q[0], load16(k1));
    __m512 a2 = _mm512_mul_ps(q[0], load16(k2)), a3 = _mm512_mul_ps(q[0], load16(k3));
    for (int c = 1; c < C; ++c) {
      a0 = _mm512_fmadd_ps(q[c], load16(k0 + 16 * c), a0);
      a1 = _mm512_fmadd_ps(q[c], load16(k1 + 16 * c), a1);
      a2 = _mm512_fmadd_ps(q[c], load16(k2 + 16 * c), a2);
      a3 = _mm512_fmadd_ps(q[c], load16(k3 + 16 * c), a3);
    }
    _mm_storeu_ps(s + t, sum_lanes4(a0, a1, a2, a3));
  }
  for (; t < len; ++t) {
    const KV* k = k_data + rows[t];
    __m512 a = _mm512_mul_ps(q[0], load16(k));
    for (int c = 1; c < C; ++c) a = _mm512_fmadd_ps(q[c], load16(k + 16 * c), a);
    s[t] = _mm512_reduce_add_ps(a);
  }
}

template <int C, typename KV>
inline void weigh_values(const float* p, float inverse_sum, const KV* v_data, const int64_t* rows, int64_t len,
                         float* out) {
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    const __m512 weight = _mm512_set1_ps(p[t]);
    const KV* v = v_data + rows[t];
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(weight, load16(v + 16 * c), acc[c]);
  }
  const __m512 scale = _mm512_set1_ps(inverse_sum);
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], scale));
}

// rows[t]: the offset of position t's row in the pool, KV head 0; query head h reads KV head h / group.
template <int C, typename KV>
void attend_heads(const float* query, int64_t heads, int64_t group, int64_t head_dim, const KV* k_data,
                  const KV* v_data, const int64_t* rows, int64_t len, float* scores, float* out) {
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t kv_offset = (h / group) * head_dim;
    float* s = scores + h * len;
    scores_of_head<C, KV>(query + h * head_dim, k_data + kv_offset, rows, len, s);
    const float total = exp_shifted(s, len);
    weigh_values<C, KV>(s, 1.f / total, v_data + kv_offset, rows, len, out + h * head_dim);
  }
}

// Runs the fast path when head_dim is one it is compiled for; false otherwise.
template <typename KV>
inline bool attend_fast(const float* query, int64_t heads, int64_t group, int64_t head_dim, const KV* k_data,
                        const KV* v_data, const int64_t* rows, int64_t len, float* scores, float* out) {
  switch (head_dim) {
    case 16: attend_heads<1, KV>(query, heads, group, head_dim, k_data, v_data, rows, len, scores, out); return true;
    case 32: attend_heads<2, KV>(query, heads, group, head_dim, k_data, v_data, rows, len, scores, out); return true;
    case 48: attend_heads<3, KV>(query, heads, group, head_dim, k_data, v_data, rows, len, scores, out); return true;
    case 64: attend_heads<4, KV>(query, heads, group, head_dim, k_data, v_data, rows, len, scores, out); return true;
    case 128: attend_heads<8, KV>(query, heads, group, head_dim, k_data, v_data, rows, len, scores, out); return true;
    default: return false;
  }
}
#endif

}  // namespace

// q: [T, H, D]; k_cache, v_cache: [num_slots, KV, D]; block_tables: [B, W] block ids (slot = id * block_size +
// offset); context_lens: [B] tokens each sequence attends over (its new token included, already written to the
// pool); rows: [B] the row of q (and out) holding each sequence's query. Writes out[rows[b]] only.
void paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& block_tables, const at::Tensor& context_lens, const at::Tensor& rows,
                            at::Tensor out, int64_t block_size, double scale) {
  check_inputs(q, k_cache, v_cache, block_tables, context_lens, rows, out);
  const int64_t num_seqs = rows.size(0);
  const int64_t heads = q.size(1), head_dim = q.size(2), kv_heads = k_cache.size(1);
  const int64_t group = heads / kv_heads;
  const int64_t table_width = block_tables.size(1);
  const int64_t q_row_stride = q.stride(0), q_head_stride = q.stride(1);
  const int64_t num_slots = k_cache.size(0);
  const float* q_data = q.data_ptr<float>();
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int32_t* lens = context_lens.data_ptr<int32_t>();
  const int64_t* row_ids = rows.data_ptr<int64_t>();
  float* out_data = out.data_ptr<float>();
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t len = lens[b];
    TORCH_CHECK(len > 0 && (len + block_size - 1) / block_size <= table_width, "context length exceeds block table");
    TORCH_CHECK(row_ids[b] >= 0 && row_ids[b] < q.size(0), "row out of range");
    for (int64_t i = 0; i < (len + block_size - 1) / block_size; ++i) {
      const int64_t id = tables[b * table_width + i];
      TORCH_CHECK(id >= 0 && (id + 1) * block_size <= num_slots, "block table points outside the KV pool");
    }
  }
  const float fscale = static_cast<float>(scale);

  // One task per sequence: its K and V rows are read once, contiguously within each block, for all heads.
  auto attend = [&](const auto* k_data, const auto* v_data) {
  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> query(heads * head_dim);
    std::vector<float> acc(heads * head_dim);
    std::vector<int64_t> pool_rows;
    for (int64_t b = begin; b < end; ++b) {
      const int64_t len = lens[b];
      const int32_t* table = tables + b * table_width;
      scores.resize(heads * len);
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = q_data + row_ids[b] * q_row_stride + h * q_head_stride;
        for (int64_t d = 0; d < head_dim; ++d) query[h * head_dim + d] = src[d] * fscale;
      }
#if defined(__AVX512F__) && defined(__AVX512DQ__)
      pool_rows.resize(len);
      for_each_slot(table, len, block_size, [&](int64_t t, int64_t slot) { pool_rows[t] = slot * kv_heads * head_dim; });
      if (attend_fast(query.data(), heads, group, head_dim, k_data, v_data, pool_rows.data(), len, scores.data(),
                      out_data + row_ids[b] * heads * head_dim))
        continue;
#endif
      dot_keys(query.data(), kv_heads, group, head_dim, k_data, table, len, block_size, scores.data());
      for (int64_t h = 0; h < heads; ++h) softmax(scores.data() + h * len, len);
      // out = softmax · v
      std::fill(acc.begin(), acc.end(), 0.f);
      const int64_t row_size = kv_heads * head_dim;
      for_each_slot(table, len, block_size, [&](int64_t t, int64_t slot) {
        const auto* row = v_data + slot * row_size;
        for (int64_t h = 0; h < heads; ++h) {
          const float p = scores[h * len + t];
          const auto* value = row + (h / group) * head_dim;
          float* a = acc.data() + h * head_dim;
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) a[d] += p * to_float(value[d]);
        }
      });
      std::copy(acc.begin(), acc.end(), out_data + row_ids[b] * heads * head_dim);
    }
  });
  };
  if (k_cache.scalar_type() == at::kBFloat16)
    attend(k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>());
  else
    attend(k_cache.data_ptr<float>(), v_cache.data_ptr<float>());
}

TORCH_LIBRARY(sluice, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
        "Tensor rows, Tensor(a!) out, int block_size, float scale) -> ()");
  m.impl("paged_decode_attention", c10::DispatchKey::CPU, &paged_decode_attention);
}
