// tfprune TFLM demo: classifies bundled MNIST digits with
//   1. the shrunk dense int8 model on TFLM's stock kernels, and
//   2. the 1x16 block-sparse int8 model on our sparse FULLY_CONNECTED kernel,
// and bundled keyword-spotting feature frames (49 x 10 MFCCs) with
//   3. the structurally shrunk int8 DS-CNN on TFLM's stock conv kernels, and
//   4. an unstructured-pruned int8 DS-CNN whose weights are stored compressed
//      (pruning bitmasks) and expanded by TFLM's DECODE operator right before each
//      conv / FC, with the decoded tensors in the arena and then in alternate
//      decompression memory,
// checks the outputs against LiteRT's (golden, generated with the models) and prints
// the arena used, the model's flash size and the invoke time. Exit code 0 = all match.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "decode_data.h"
#include "decode_model_data.h"
#include "digits_data.h"
#include "kws_data.h"
#include "kws_model_data.h"
#include "shrunk_model_data.h"
#include "sparse_fully_connected_tflm.h"
#include "sparse_model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_time.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

// The DS-CNNs use 18-31 KB (the MLPs 3-6 KB); the app prints what each model used.
constexpr int kTensorArenaSize = 32 * 1024;
alignas(16) uint8_t g_tensor_arena[kTensorArenaSize];

// Alternate decompression memory for the DECODE model: TFLM's DECODE writes each
// decoded weight there instead of the arena. All DECODE ops reuse it from offset 0, so
// it needs only the largest single DECODE's outputs (16-byte aligned):
// `decode_model_data_alt_decompression_bytes`, computed by the exporter and checked
// against this buffer at run time. On a board it can be another RAM bank (a linker
// section); a decoded tensor that does not fit silently goes to the arena instead.
constexpr size_t kDecompressionMemorySize = 8 * 1024;
alignas(16) uint8_t g_decompression_memory[kDecompressionMemorySize];

// The model in `model_data`, or nullptr (with a message) when its schema version is
// not the one this TFLM reads.
const tflite::Model* LoadModel(const char* label, const unsigned char* model_data) {
  const tflite::Model* model = tflite::GetModel(model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("%s: schema version %d, expected %d", label, model->version(),
                TFLITE_SCHEMA_VERSION);
    return nullptr;
  }
  return model;
}

// Runs every bundled digit through one model; returns the number of mismatches with
// the golden predictions (or -1 on a setup error).
int RunModel(const char* label, const unsigned char* model_data, unsigned int model_len,
             bool sparse_kernel, const uint8_t* expected) {
  const tflite::Model* model = LoadModel(label, model_data);
  if (model == nullptr) return -1;
  tflite::MicroMutableOpResolver<1> resolver;
  if (sparse_kernel) {
    tfprune_micro::SetSparseModel(model);
    resolver.AddFullyConnected(tfprune_micro::Register_SPARSE_FULLY_CONNECTED());
  } else {
    resolver.AddFullyConnected();
  }
  tflite::MicroInterpreter interpreter(model, resolver, g_tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("%s: AllocateTensors() failed", label);
    return -1;
  }
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (input->type != kTfLiteInt8 || input->bytes != kDigitPixels || output->type != kTfLiteInt8) {
    MicroPrintf("%s: unexpected input/output tensors", label);
    return -1;
  }
  const float scale = input->params.scale;
  const int32_t zero_point = input->params.zero_point;
  int mismatches = 0;
  for (int d = 0; d < kNumDigits; ++d) {
    for (int i = 0; i < kDigitPixels; ++i) {  // pixel / 255 -> int8, as at training
      int32_t q = static_cast<int32_t>(roundf(g_digit_pixels[d][i] / 255.0f / scale)) +
                  zero_point;
      input->data.int8[i] = static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));
    }
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("%s: Invoke() failed", label);
      return -1;
    }
    int best = 0;
    for (int c = 1; c < output->dims->data[1]; ++c) {
      if (output->data.int8[c] > output->data.int8[best]) best = c;
    }
    const bool ok = best == expected[d];
    mismatches += ok ? 0 : 1;
    MicroPrintf("%s: digit %d (label %d) -> %d%s", label, d, g_digit_labels[d], best,
                ok ? "" : "  MISMATCH with LiteRT");
  }
  MicroPrintf("%s: arena used %d bytes, model flash %d bytes", label,
              static_cast<int>(interpreter.arena_used_bytes()), static_cast<int>(model_len));
  return mismatches;
}

// Microseconds between two tflite::GetCurrentTimeTicks() values.
int64_t Micros(uint32_t start, uint32_t end) {
  const uint32_t per_second = tflite::ticks_per_second();
  if (per_second == 0) return -1;  // no timer on this target
  return static_cast<int64_t>(end - start) * 1000000 / per_second;
}

// A keyword-spotting model with its bundled int8 feature frames and LiteRT's int8
// outputs for them (golden).
struct KwsCase {
  const char* label;
  const unsigned char* model_data;
  unsigned int model_len;
  const int8_t* inputs;    // [num_samples][input_size]
  const uint8_t* labels;   // [num_samples]
  const int8_t* expected;  // [num_samples][classes]
  int num_samples;
  int input_size;
  int classes;
};

// Runs the bundled feature frames through a DS-CNN on TFLM's stock kernels (+ DECODE),
// with `decompression_memory` (when not null) as TFLM's alternate decompression memory;
// returns the number of outputs that differ from LiteRT's by more than one int8 step or
// whose top class differs (or -1 on a setup error).
int RunKws(const KwsCase& c, uint8_t* decompression_memory, size_t decompression_bytes) {
  const tflite::Model* model = LoadModel(c.label, c.model_data);
  if (model == nullptr) return -1;
  // The ops of a Keras DS-CNN export (Flatten becomes SHAPE / STRIDED_SLICE / PACK /
  // RESHAPE) and TFLM_DECODE; an op missing here fails AllocateTensors() with its name.
  tflite::MicroMutableOpResolver<9> resolver;
  resolver.AddConv2D();
  resolver.AddDepthwiseConv2D();
  resolver.AddAveragePool2D();
  resolver.AddShape();
  resolver.AddStridedSlice();
  resolver.AddPack();
  resolver.AddReshape();
  resolver.AddFullyConnected();
  resolver.AddDecode();  // the custom op "TFLM_DECODE" of compressed models
  tflite::MicroInterpreter interpreter(model, resolver, g_tensor_arena, kTensorArenaSize);
  // Must outlive the interpreter; set before AllocateTensors().
  static tflite::MicroContext::AlternateMemoryRegion region;
  if (decompression_memory != nullptr) {
    region = {decompression_memory, decompression_bytes};
    if (interpreter.SetDecompressionMemory(&region, 1) != kTfLiteOk) {
      MicroPrintf("%s: SetDecompressionMemory() failed", c.label);
      return -1;
    }
  }
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("%s: AllocateTensors() failed", c.label);
    return -1;
  }
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  if (input->type != kTfLiteInt8 || static_cast<int>(input->bytes) != c.input_size ||
      output->type != kTfLiteInt8 || static_cast<int>(output->bytes) != c.classes) {
    MicroPrintf("%s: unexpected input/output tensors", c.label);
    return -1;
  }
  int mismatches = 0;
  int64_t best_us = -1;
  for (int s = 0; s < c.num_samples; ++s) {
    const int8_t* frames = c.inputs + s * c.input_size;
    const int8_t* golden_out = c.expected + s * c.classes;
    for (int i = 0; i < c.input_size; ++i) input->data.int8[i] = frames[i];
    const uint32_t start = tflite::GetCurrentTimeTicks();
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("%s: Invoke() failed", c.label);
      return -1;
    }
    const int64_t us = Micros(start, tflite::GetCurrentTimeTicks());
    if (best_us < 0 || (us >= 0 && us < best_us)) best_us = us;
    int best = 0, golden = 0, max_diff = 0;
    for (int k = 0; k < c.classes; ++k) {
      const int got = output->data.int8[k], want = golden_out[k];
      if (got > output->data.int8[best]) best = k;
      if (want > golden_out[golden]) golden = k;
      if (abs(got - want) > max_diff) max_diff = abs(got - want);
    }
    const bool ok = best == golden && max_diff <= 1;
    mismatches += ok ? 0 : 1;
    MicroPrintf("%s: sample %d (class %d) -> %d, max |TFLM - LiteRT| %d int8 steps%s", c.label,
                s, c.labels[s], best, max_diff, ok ? "" : "  MISMATCH with LiteRT");
  }
  if (decompression_memory != nullptr) {
    MicroPrintf("%s: arena used %d bytes + %d bytes of alternate decompression memory, "
                "model flash %d bytes, invoke %d us (fastest)",
                c.label, static_cast<int>(interpreter.arena_used_bytes()),
                static_cast<int>(decompression_bytes), static_cast<int>(c.model_len),
                static_cast<int>(best_us));
  } else {
    MicroPrintf("%s: arena used %d bytes, model flash %d bytes, invoke %d us (fastest)",
                c.label, static_cast<int>(interpreter.arena_used_bytes()),
                static_cast<int>(c.model_len), static_cast<int>(best_us));
  }
  return mismatches;
}

}  // namespace

int main() {
  tflite::InitializeTarget();
  const int shrunk = RunModel("shrunk dense int8 (stock FC)", shrunk_model_data,
                              shrunk_model_data_len, false, g_expected_shrunk);
  const int sparse = RunModel("sparse int8 (tfprune 1x16 FC)", sparse_model_data,
                              sparse_model_data_len, true, g_expected_sparse);
  const KwsCase kws_case = {"shrunk DS-CNN int8 (stock conv)", kws_model_data,
                            kws_model_data_len, &g_kws_inputs[0][0], g_kws_labels,
                            &g_kws_expected[0][0], kNumKwsSamples, kKwsInputSize,
                            kKwsClasses};
  const int kws = RunKws(kws_case, nullptr, 0);
  // The pruned DS-CNN twice: decoded weights in the arena, then in alternate memory.
  KwsCase decode_case = {"pruned DS-CNN int8 (DECODE, arena)", decode_model_data,
                         decode_model_data_len, &g_decode_inputs[0][0], g_decode_labels,
                         &g_decode_expected[0][0], kNumDecodeSamples, kDecodeInputSize,
                         kDecodeClasses};
  const int decode_arena = RunKws(decode_case, nullptr, 0);
  decode_case.label = "pruned DS-CNN int8 (DECODE, alternate memory)";
  int decode_alt = -1;
  if (decode_model_data_alt_decompression_bytes > kDecompressionMemorySize) {
    MicroPrintf("%s: needs %d bytes of alternate decompression memory, the app has %d",
                decode_case.label, static_cast<int>(decode_model_data_alt_decompression_bytes),
                static_cast<int>(kDecompressionMemorySize));
  } else {
    decode_alt = RunKws(decode_case, g_decompression_memory,
                        decode_model_data_alt_decompression_bytes);
  }
  if (shrunk != 0 || sparse != 0 || kws != 0 || decode_arena != 0 || decode_alt != 0) {
    MicroPrintf("FAILED (mismatches: shrunk %d, sparse %d, kws %d, decode %d / %d)", shrunk,
                sparse, kws, decode_arena, decode_alt);
    return 1;
  }
  MicroPrintf("~~~ALL TESTS PASSED~~~");
  return 0;
}
