// Decode attention straight out of the paged KV pool: one query token per sequence, its keys and values read through
// the sequence's block table, no gather into a contiguous copy first. fp32 on CPU; the runner falls back to
// gather + scaled_dot_product_attention for any other dtype or device.
//
// Work is split over (sequence, KV head) pairs; the query heads that share a KV head (GQA) are handled together so
// each key and value row is loaded once for all of them. Softmax is computed exactly (max-subtracted) over the whole
// context, which for the context lengths served here fits in a thread-local buffer.

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
  TORCH_CHECK(k_cache.scalar_type() == at::kFloat && v_cache.scalar_type() == at::kFloat, "KV pool must be float32");
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

// scores[t] = q · key(t) for the `group` query heads sharing one KV head, keys read through the block table.
inline void dot_keys(const float* query, int64_t group, int64_t head_dim, const float* k_data, const int32_t* table,
                     int64_t len, int64_t block_size, int64_t kv_heads, int64_t kvh, float* scores) {
#if defined(__AVX512F__)
  if (head_dim % 16 == 0 && head_dim <= 256) {
    const int64_t chunks = head_dim / 16;
    for (int64_t t = 0; t < len; ++t) {
      const int64_t slot = static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
      const float* key = k_data + (slot * kv_heads + kvh) * head_dim;
      __m512 k_vec[16];
      for (int64_t c = 0; c < chunks; ++c) k_vec[c] = _mm512_loadu_ps(key + 16 * c);
      for (int64_t g = 0; g < group; ++g) {
        const float* qg = query + g * head_dim;
        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qg), k_vec[0]);
        for (int64_t c = 1; c < chunks; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qg + 16 * c), k_vec[c], acc);
        scores[g * len + t] = _mm512_reduce_add_ps(acc);
      }
    }
    return;
  }
#endif
  for (int64_t t = 0; t < len; ++t) {
    const int64_t slot = static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
    const float* key = k_data + (slot * kv_heads + kvh) * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = query + g * head_dim;
      float dot = 0.f;
      for (int64_t d = 0; d < head_dim; ++d) dot += qg[d] * key[d];
      scores[g * len + t] = dot;
    }
  }
}

// In place: s = softmax(s) over n scores.
inline void softmax(float* s, int64_t n) {
  float peak = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) peak = std::max(peak, s[t]);
  float total = 0.f;
  for (int64_t t = 0; t < n; ++t) {
    s[t] = expf(s[t] - peak);
    total += s[t];
  }
  const float inv = 1.f / total;
  for (int64_t t = 0; t < n; ++t) s[t] *= inv;
}

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
  const float* k_data = k_cache.data_ptr<float>();
  const float* v_data = v_cache.data_ptr<float>();
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

  at::parallel_for(0, num_seqs * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> query(group * head_dim);
    std::vector<float> acc(group * head_dim);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, kvh = task % kv_heads;
      const int64_t len = lens[b];
      const int32_t* table = tables + b * table_width;
      scores.resize(group * len);
      for (int64_t g = 0; g < group; ++g) {
        const float* src = q_data + row_ids[b] * q_row_stride + (kvh * group + g) * q_head_stride;
        for (int64_t d = 0; d < head_dim; ++d) query[g * head_dim + d] = src[d] * fscale;
      }
      dot_keys(query.data(), group, head_dim, k_data, table, len, block_size, kv_heads, kvh, scores.data());
      for (int64_t g = 0; g < group; ++g) softmax(scores.data() + g * len, len);
      // out = softmax · v
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t t = 0; t < len; ++t) {
        const int64_t slot = static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
        const float* value = v_data + (slot * kv_heads + kvh) * head_dim;
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * len + t];
          float* a = acc.data() + g * head_dim;
#pragma omp simd
          for (int64_t d = 0; d < head_dim; ++d) a[d] += p * value[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float* dst = out_data + (row_ids[b] * heads + kvh * group + g) * head_dim;
        std::copy(acc.begin() + g * head_dim, acc.begin() + (g + 1) * head_dim, dst);
      }
    }
  });
}

TORCH_LIBRARY(sluice, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
        "Tensor rows, Tensor(a!) out, int block_size, float scale) -> ()");
  m.impl("paged_decode_attention", c10::DispatchKey::CPU, &paged_decode_attention);
}
