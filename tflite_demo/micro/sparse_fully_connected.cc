// See sparse_fully_connected.h. Portable C++11; no TFLM dependency.
#include "sparse_fully_connected.h"

#include <math.h>

namespace tfprune_sparse {
namespace {

inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  const bool overflow = a == b && a == INT32_MIN;
  const int64_t ab_64 = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int32_t nudge = ab_64 >= 0 ? (1 << 30) : (1 - (1 << 30));
  const int32_t ab_x2_high32 = static_cast<int32_t>((ab_64 + nudge) / (1ll << 31));
  return overflow ? INT32_MAX : ab_x2_high32;
}

inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((1ll << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

inline int8_t Requantize(int32_t acc, const QuantParams& p, int32_t channel) {
  const int32_t c = p.num_channels == 1 ? 0 : channel;
  acc = MultiplyByQuantizedMultiplier(acc, p.multipliers[c], p.shifts[c]);
  acc += p.output_offset;
  if (acc < p.act_min) acc = p.act_min;
  if (acc > p.act_max) acc = p.act_max;
  return static_cast<int8_t>(acc);
}

}  // namespace

void QuantizeMultiplier(double real_multiplier, int32_t* quantized_multiplier, int* shift) {
  if (real_multiplier == 0.0) {
    *quantized_multiplier = 0;
    *shift = 0;
    return;
  }
  const double q = frexp(real_multiplier, shift);
  int64_t q_fixed = static_cast<int64_t>(round(q * static_cast<double>(1ll << 31)));
  if (q_fixed == (1ll << 31)) {
    q_fixed /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    q_fixed = 0;
  }
  *quantized_multiplier = static_cast<int32_t>(q_fixed);
}

int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t quantized_multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  return RoundingDivideByPOT(
      SaturatingRoundingDoublingHighMul(x * (1 << left_shift), quantized_multiplier),
      right_shift);
}

void ActivationRangeInt8(Activation activation, float output_scale, int32_t output_zero_point,
                         int32_t* act_min, int32_t* act_max) {
  const int32_t qmin = -128;
  const int32_t qmax = 127;
  // TFLite: zero_point + static_cast<int32_t>(TfLiteRound(f / scale)).
  auto quantize = [&](float f) {
    return output_zero_point + static_cast<int32_t>(roundf(f / output_scale));
  };
  int32_t lo = qmin;
  int32_t hi = qmax;
  if (activation == kActRelu) {
    lo = quantize(0.0f) > qmin ? quantize(0.0f) : qmin;
  } else if (activation == kActRelu6) {
    lo = quantize(0.0f) > qmin ? quantize(0.0f) : qmin;
    hi = quantize(6.0f) < qmax ? quantize(6.0f) : qmax;
  } else if (activation == kActReluN1To1) {
    lo = quantize(-1.0f) > qmin ? quantize(-1.0f) : qmin;
    hi = quantize(1.0f) < qmax ? quantize(1.0f) : qmax;
  }
  *act_min = lo;
  *act_max = hi;
}

bool ComputeQuantParams(float input_scale, int32_t input_zero_point, const float* filter_scales,
                        int32_t num_filter_scales, float output_scale, int32_t output_zero_point,
                        Activation activation, int32_t* multipliers, int32_t* shifts,
                        QuantParams* params) {
  if (num_filter_scales < 1 || !(output_scale > 0.0f) || !(input_scale > 0.0f)) return false;
  for (int32_t c = 0; c < num_filter_scales; ++c) {
    // kernel_util.cc: static_cast<double>(input_scale) * filter_scale / output_scale.
    const double effective = static_cast<double>(input_scale) *
                             static_cast<double>(filter_scales[c]) /
                             static_cast<double>(output_scale);
    if (effective < 0.0) return false;
    int shift = 0;
    QuantizeMultiplier(effective, &multipliers[c], &shift);
    shifts[c] = shift;
  }
  params->input_offset = -input_zero_point;
  params->output_offset = output_zero_point;
  ActivationRangeInt8(activation, output_scale, output_zero_point, &params->act_min,
                      &params->act_max);
  params->num_channels = num_filter_scales;
  params->multipliers = multipliers;
  params->shifts = shifts;
  return true;
}

bool ValidateBlockSparse(const BlockSparseWeights& w) {
  if (w.rows <= 0 || w.cols <= 0 || w.values == nullptr) return false;
  if (w.segments.size != w.rows + 1 || w.segments.At(0) != 0) return false;
  const int32_t col_blocks = (w.cols + kBlockSize - 1) / kBlockSize;
  for (int32_t r = 0; r < w.rows; ++r) {
    const int32_t begin = w.segments.At(r);
    const int32_t end = w.segments.At(r + 1);
    if (end < begin || end > w.indices.size) return false;
    for (int32_t k = begin; k < end; ++k) {
      const int32_t block = w.indices.At(k);
      if (block < 0 || block >= col_blocks) return false;
      // Values past cols (padding of the last block) must be zero: the kernel skips them.
      for (int32_t j = w.cols - block * kBlockSize; j < kBlockSize; ++j) {
        if (j >= 0 && w.values[k * kBlockSize + j] != 0) return false;
      }
    }
  }
  return w.segments.At(w.rows) == w.indices.size &&
         static_cast<int64_t>(w.indices.size) * kBlockSize == w.num_values;
}

void SparseFullyConnected(const QuantParams& params, const BlockSparseWeights& w,
                          const int32_t* bias, const int8_t* input, int32_t batches,
                          int8_t* output) {
  const int32_t input_offset = params.input_offset;
  const int32_t full_blocks = w.cols / kBlockSize;
  for (int32_t b = 0; b < batches; ++b) {
    const int8_t* x = input + b * w.cols;
    int8_t* y = output + b * w.rows;
    for (int32_t r = 0; r < w.rows; ++r) {
      int32_t acc = 0;
      const int32_t end = w.segments.At(r + 1);
      for (int32_t k = w.segments.At(r); k < end; ++k) {
        const int32_t block = w.indices.At(k);
        const int8_t* wv = w.values + k * kBlockSize;
        const int8_t* xv = x + block * kBlockSize;
        if (block < full_blocks) {
          for (int32_t j = 0; j < kBlockSize; ++j) {
            acc += static_cast<int32_t>(wv[j]) * (static_cast<int32_t>(xv[j]) + input_offset);
          }
        } else {  // last, partial block: never read past the input row
          const int32_t n = w.cols - block * kBlockSize;
          for (int32_t j = 0; j < n; ++j) {
            acc += static_cast<int32_t>(wv[j]) * (static_cast<int32_t>(xv[j]) + input_offset);
          }
        }
      }
      if (bias != nullptr) acc += bias[r];
      y[r] = Requantize(acc, params, r);
    }
  }
}

void DenseFullyConnected(const QuantParams& params, const int8_t* weights, int32_t rows,
                         int32_t cols, const int32_t* bias, const int8_t* input,
                         int32_t batches, int8_t* output) {
  const int32_t input_offset = params.input_offset;
  for (int32_t b = 0; b < batches; ++b) {
    const int8_t* x = input + b * cols;
    int8_t* y = output + b * rows;
    for (int32_t r = 0; r < rows; ++r) {
      const int8_t* wr = weights + r * cols;
      int32_t acc = 0;
      for (int32_t c = 0; c < cols; ++c) {
        acc += static_cast<int32_t>(wr[c]) * (static_cast<int32_t>(x[c]) + input_offset);
      }
      if (bias != nullptr) acc += bias[r];
      y[r] = Requantize(acc, params, r);
    }
  }
}

}  // namespace tfprune_sparse
