// Portable int8 FULLY_CONNECTED kernels for TFLite's 1x16 block-sparse weights.
//
// Plain C++11, no TFLM / TFLite / flatbuffers dependency, no heap, no floating point
// in the inner loops: the same file is compiled into the TFLM application (through
// sparse_fully_connected_tflm.cc) and into the host test library (host_capi.cc).
//
// Weight format (what the TFLite converter writes for int8 FC weights with 1x16 zero
// blocks, `optimizations=[DEFAULT, EXPERIMENTAL_SPARSITY]`): the weights are a
// [rows = output depth, cols = input depth] matrix stored as
//   traversal_order = [0, 1, 2], block_map = [1],
//   dim_metadata[0] = DENSE(rows)
//   dim_metadata[1] = SPARSE_CSR over column blocks: array_segments (rows + 1 entries)
//                     and array_indices (block column of each stored block); uint8,
//                     uint16 or int32 vectors, whichever the converter chose
//   dim_metadata[2] = DENSE(16)
// and the tensor's buffer holds 16 int8 values per stored block, row-major. When
// cols is not a multiple of 16 the last block of a row is padded with zeros past cols.
//
// Arithmetic is bit-exact with TFLite's reference int8 FULLY_CONNECTED: int32
// accumulation of w * (x - input_zero_point), + bias, then
// MultiplyByQuantizedMultiplier (gemmlowp double rounding, TFLite's default build),
// + output_zero_point, clamp to the fused activation's range. Multipliers and shifts
// are derived from the float scales exactly as TFLite's QuantizeMultiplier does.
#ifndef TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_H_
#define TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_H_

#include <stdint.h>

namespace tfprune_sparse {

constexpr int kBlockSize = 16;

// Element types of array_segments / array_indices, numbered like the flatbuffer union
// tflite::SparseIndexVector (Int32Vector = 1, Uint16Vector = 2, Uint8Vector = 3).
enum IndexType : int32_t { kIndexInt32 = 1, kIndexUint16 = 2, kIndexUint8 = 3 };

// Fused activations, numbered like TfLiteFusedActivation / tflite::ActivationFunctionType.
enum Activation : int32_t { kActNone = 0, kActRelu = 1, kActReluN1To1 = 2, kActRelu6 = 3 };

// A read-only view of one index vector (no copy: points into the model in flash).
struct IndexArray {
  IndexType type;
  const void* data;
  int32_t size;
  inline int32_t At(int32_t i) const {
    switch (type) {
      case kIndexUint8: return static_cast<const uint8_t*>(data)[i];
      case kIndexUint16: return static_cast<const uint16_t*>(data)[i];
      default: return static_cast<const int32_t*>(data)[i];
    }
  }
};

// Block-sparse [rows, cols] int8 weights, 1x16 blocks along cols.
struct BlockSparseWeights {
  int32_t rows;
  int32_t cols;
  IndexArray segments;    // rows + 1 entries, block offsets per row
  IndexArray indices;     // one block column (0 .. ceil(cols / 16) - 1) per block
  const int8_t* values;   // 16 * segments[rows] values
  int32_t num_values;
};

// Requantization parameters of one FULLY_CONNECTED op.
struct QuantParams {
  int32_t input_offset;    // -input_zero_point
  int32_t output_offset;   // output_zero_point
  int32_t act_min;
  int32_t act_max;
  int32_t num_channels;    // 1 (per-tensor) or rows (per-channel)
  const int32_t* multipliers;  // num_channels entries
  const int32_t* shifts;       // num_channels entries
};

// TFLite's QuantizeMultiplier (tensorflow/lite/kernels/internal/quantization_util.cc).
void QuantizeMultiplier(double real_multiplier, int32_t* quantized_multiplier, int* shift);

// TFLite's MultiplyByQuantizedMultiplier (tensorflow/lite/kernels/internal/common.h,
// the default double-rounding variant).
int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t quantized_multiplier, int shift);

// TFLite's CalculateActivationRangeQuantized for an int8 output.
void ActivationRangeInt8(Activation activation, float output_scale, int32_t output_zero_point,
                         int32_t* act_min, int32_t* act_max);

// Fills `params` (and the caller-owned `multipliers` / `shifts` arrays, num_filter_scales
// entries each) the way TFLite's FULLY_CONNECTED Prepare does: per-channel when the
// filter has one scale per output row, per-tensor when it has one scale.
// Returns false on invalid scales.
bool ComputeQuantParams(float input_scale, int32_t input_zero_point, const float* filter_scales,
                        int32_t num_filter_scales, float output_scale, int32_t output_zero_point,
                        Activation activation, int32_t* multipliers, int32_t* shifts,
                        QuantParams* params);

// Checks the sparse structure (monotonic segments, in-range block indices, value count,
// zero padding past cols). Call once at prepare time; the kernel itself trusts it.
bool ValidateBlockSparse(const BlockSparseWeights& w);

// output[b, r] for b < batches, r < w.rows; input is [batches, w.cols]. bias may be null.
void SparseFullyConnected(const QuantParams& params, const BlockSparseWeights& w,
                          const int32_t* bias, const int8_t* input, int32_t batches,
                          int8_t* output);

// The dense int8 reference loop (weights [rows, cols] row-major), for layers that were
// not stored sparse and as the baseline in benchmarks.
void DenseFullyConnected(const QuantParams& params, const int8_t* weights, int32_t rows,
                         int32_t cols, const int32_t* bias, const int8_t* input,
                         int32_t batches, int8_t* output);

}  // namespace tfprune_sparse

#endif  // TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_H_
