// Host-only C API over sparse_fully_connected.{h,cc}, loaded with ctypes by
// tests/demo_micro_test.py and bench/micro_bench.py. Not part of the MCU build.
//
// A "layer" keeps pointers to the caller's arrays (weights, indices, bias): nothing is
// copied, as on the microcontroller where they point into the model in flash.
#include <chrono>
#include <new>
#include <vector>

#include "sparse_fully_connected.h"

using namespace tfprune_sparse;

namespace {

struct Layer {
  bool sparse;
  BlockSparseWeights sparse_weights;
  const int8_t* dense_weights;
  int32_t rows;
  int32_t cols;
  const int32_t* bias;
  std::vector<int32_t> multipliers;
  std::vector<int32_t> shifts;
  QuantParams params;

  void Run(const int8_t* input, int32_t batches, int8_t* output) const {
    if (sparse) {
      SparseFullyConnected(params, sparse_weights, bias, input, batches, output);
    } else {
      DenseFullyConnected(params, dense_weights, rows, cols, bias, input, batches, output);
    }
  }
};

}  // namespace

extern "C" {

// Returns a layer handle, or null if the parameters or the sparse structure are
// invalid. For a dense layer pass segments/indices = null; `values` is then the
// [rows, cols] weight matrix.
void* tfp_layer_create(int32_t rows, int32_t cols, const int8_t* values, int32_t num_values,
                       int32_t segments_type, const void* segments, int32_t num_segments,
                       int32_t indices_type, const void* indices, int32_t num_indices,
                       const int32_t* bias, float input_scale, int32_t input_zero_point,
                       const float* filter_scales, int32_t num_filter_scales,
                       float output_scale, int32_t output_zero_point, int32_t activation) {
  Layer* layer = new (std::nothrow) Layer();
  if (layer == nullptr) return nullptr;
  layer->sparse = segments != nullptr;
  layer->rows = rows;
  layer->cols = cols;
  layer->bias = bias;
  layer->dense_weights = values;
  layer->sparse_weights = BlockSparseWeights{
      rows, cols,
      IndexArray{static_cast<IndexType>(segments_type), segments, num_segments},
      IndexArray{static_cast<IndexType>(indices_type), indices, num_indices},
      values, num_values};
  if (num_filter_scales != 1 && num_filter_scales != rows) {
    delete layer;
    return nullptr;
  }
  layer->multipliers.resize(num_filter_scales);
  layer->shifts.resize(num_filter_scales);
  bool ok = ComputeQuantParams(input_scale, input_zero_point, filter_scales, num_filter_scales,
                               output_scale, output_zero_point,
                               static_cast<Activation>(activation), layer->multipliers.data(),
                               layer->shifts.data(), &layer->params);
  if (ok && layer->sparse) ok = ValidateBlockSparse(layer->sparse_weights);
  if (ok && !layer->sparse) ok = num_values == rows * cols;
  if (!ok) {
    delete layer;
    return nullptr;
  }
  return layer;
}

void tfp_layer_destroy(void* layer) { delete static_cast<Layer*>(layer); }

// Copies the computed per-channel (or per-tensor) multipliers and shifts out.
int32_t tfp_layer_quant(const void* layer, int32_t* multipliers, int32_t* shifts) {
  const Layer* l = static_cast<const Layer*>(layer);
  for (int32_t i = 0; i < l->params.num_channels; ++i) {
    multipliers[i] = l->multipliers[i];
    shifts[i] = l->shifts[i];
  }
  return l->params.num_channels;
}

void tfp_layer_run(const void* layer, const int8_t* input, int32_t batches, int8_t* output) {
  static_cast<const Layer*>(layer)->Run(input, batches, output);
}

// Runs a chain of layers (an MLP) sample by sample. `scratch` must hold 2 * the widest
// layer. `output` is [num_samples, rows of the last layer].
void tfp_chain_run(void* const* layers, int32_t num_layers, const int8_t* inputs,
                   int32_t num_samples, int8_t* scratch, int32_t scratch_half, int8_t* output) {
  const Layer* first = static_cast<const Layer*>(layers[0]);
  const Layer* last = static_cast<const Layer*>(layers[num_layers - 1]);
  for (int32_t s = 0; s < num_samples; ++s) {
    const int8_t* x = inputs + s * first->cols;
    for (int32_t i = 0; i < num_layers; ++i) {
      const Layer* l = static_cast<const Layer*>(layers[i]);
      int8_t* y = (i == num_layers - 1) ? output + s * last->rows
                                         : scratch + (i % 2) * scratch_half;
      l->Run(x, 1, y);
      x = y;
    }
  }
}

// Wall-clock nanoseconds per sample of tfp_chain_run: the fastest of `repeats` passes
// over all samples (the minimum is robust to other processes sharing the CPU).
double tfp_chain_time_ns(void* const* layers, int32_t num_layers, const int8_t* inputs,
                         int32_t num_samples, int8_t* scratch, int32_t scratch_half,
                         int8_t* output, int32_t repeats) {
  tfp_chain_run(layers, num_layers, inputs, num_samples, scratch, scratch_half, output);
  double best = -1.0;
  for (int32_t r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    tfp_chain_run(layers, num_layers, inputs, num_samples, scratch, scratch_half, output);
    const auto stop = std::chrono::steady_clock::now();
    const double ns = std::chrono::duration<double, std::nano>(stop - start).count();
    if (best < 0.0 || ns < best) best = ns;
  }
  return best / num_samples;
}

}  // extern "C"
