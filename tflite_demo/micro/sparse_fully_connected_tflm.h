// TFLM registration of the block-sparse int8 FULLY_CONNECTED kernel.
//
//   tfprune_micro::SetSparseModel(model);   // before constructing the interpreter
//   tflite::MicroMutableOpResolver<1> resolver;
//   resolver.AddFullyConnected(tfprune_micro::Register_SPARSE_FULLY_CONNECTED());
//
// TFLM does not read a tensor's `sparsity` field, so the kernel reads it (and the
// block values) straight from the model flatbuffer in flash; SetSparseModel tells it
// which flatbuffer. FC ops whose weights are dense run the same int8 arithmetic on the
// dense weights, so one registration serves the whole model.
#ifndef TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_TFLM_H_
#define TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_TFLM_H_

#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace tfprune_micro {

// The model whose sparse weights the kernel reads (subgraph 0). Call before
// MicroInterpreter::AllocateTensors() of that model.
void SetSparseModel(const tflite::Model* model);

TFLMRegistration Register_SPARSE_FULLY_CONNECTED();

}  // namespace tfprune_micro

#endif  // TFPRUNE_TFLITE_DEMO_MICRO_SPARSE_FULLY_CONNECTED_TFLM_H_
