// tfprune TFLM demo: classifies bundled MNIST digits with
//   1. the shrunk dense int8 model on TFLM's stock kernels, and
//   2. the 1x16 block-sparse int8 model on our sparse FULLY_CONNECTED kernel,
// checks the predictions against LiteRT's (golden, generated with the models) and
// prints the arena used and the model's flash size. Exit code 0 = all match.
#include <math.h>
#include <stdint.h>

#include "digits_data.h"
#include "shrunk_model_data.h"
#include "sparse_fully_connected_tflm.h"
#include "sparse_model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

constexpr int kTensorArenaSize = 16 * 1024;
alignas(16) uint8_t g_tensor_arena[kTensorArenaSize];

// Runs every bundled digit through one model; returns the number of mismatches with
// the golden predictions (or -1 on a setup error).
int RunModel(const char* label, const unsigned char* model_data, unsigned int model_len,
             bool sparse_kernel, const uint8_t* expected) {
  const tflite::Model* model = tflite::GetModel(model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("%s: schema version %d, expected %d", label, model->version(),
                TFLITE_SCHEMA_VERSION);
    return -1;
  }
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

}  // namespace

int main() {
  tflite::InitializeTarget();
  const int shrunk = RunModel("shrunk dense int8 (stock FC)", shrunk_model_data,
                              shrunk_model_data_len, false, g_expected_shrunk);
  const int sparse = RunModel("sparse int8 (tfprune 1x16 FC)", sparse_model_data,
                              sparse_model_data_len, true, g_expected_sparse);
  if (shrunk != 0 || sparse != 0) {
    MicroPrintf("FAILED (mismatches: shrunk %d, sparse %d)", shrunk, sparse);
    return 1;
  }
  MicroPrintf("~~~ALL TESTS PASSED~~~");
  return 0;
}
