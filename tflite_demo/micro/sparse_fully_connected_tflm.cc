// Thin TFLM glue around the portable kernel in sparse_fully_connected.{h,cc}:
// Prepare computes the requantization parameters from the tensors' float scales
// (QuantizeMultiplier, per-channel or per-tensor) and locates the block-sparse arrays
// in the flatbuffer; Eval calls the kernel. Only int8 input / weights / output.
#include "sparse_fully_connected_tflm.h"

#include "sparse_fully_connected.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tfprune_micro {
namespace {

constexpr int kInput = 0;
constexpr int kWeights = 1;
constexpr int kBias = 2;
constexpr int kOutput = 0;

const tflite::Model* g_model = nullptr;

struct OpData {
  tfprune_sparse::QuantParams params;
  tfprune_sparse::BlockSparseWeights weights;  // valid when `sparse`
  bool sparse;
  int32_t rows;
  int32_t cols;
};

bool ReadIndexArray(tflite::SparseIndexVector type, const void* vec,
                    tfprune_sparse::IndexArray* out) {
  switch (type) {
    case tflite::SparseIndexVector_Int32Vector: {
      auto* v = static_cast<const tflite::Int32Vector*>(vec)->values();
      *out = {tfprune_sparse::kIndexInt32, v->data(), static_cast<int32_t>(v->size())};
      return true;
    }
    case tflite::SparseIndexVector_Uint16Vector: {
      auto* v = static_cast<const tflite::Uint16Vector*>(vec)->values();
      *out = {tfprune_sparse::kIndexUint16, v->data(), static_cast<int32_t>(v->size())};
      return true;
    }
    case tflite::SparseIndexVector_Uint8Vector: {
      auto* v = static_cast<const tflite::Uint8Vector*>(vec)->values();
      *out = {tfprune_sparse::kIndexUint8, v->data(), static_cast<int32_t>(v->size())};
      return true;
    }
    default:
      return false;
  }
}

// Fills data->weights from the flatbuffer if the weight tensor is 1x16 block-sparse.
TfLiteStatus ReadSparsity(TfLiteContext* context, TfLiteNode* node, OpData* data) {
  data->sparse = false;
  if (g_model == nullptr) {
    MicroPrintf("sparse FC: call tfprune_micro::SetSparseModel(model) first");
    return kTfLiteError;
  }
  const int tensor_index = node->inputs->data[kWeights];
  const tflite::Tensor* t = g_model->subgraphs()->Get(0)->tensors()->Get(tensor_index);
  TF_LITE_ENSURE(context, t->shape() != nullptr && t->shape()->size() == 2 &&
                              t->shape()->Get(0) == data->rows &&
                              t->shape()->Get(1) == data->cols);
  const tflite::SparsityParameters* sp = t->sparsity();
  if (sp == nullptr) return kTfLiteOk;  // dense weights
  const auto* order = sp->traversal_order();
  const auto* block_map = sp->block_map();
  const auto* dims = sp->dim_metadata();
  bool ok = order != nullptr && order->size() == 3 && order->Get(0) == 0 &&
            order->Get(1) == 1 && order->Get(2) == 2 && block_map != nullptr &&
            block_map->size() == 1 && block_map->Get(0) == 1 && dims != nullptr &&
            dims->size() == 3 && dims->Get(0)->format() == tflite::DimensionType_DENSE &&
            dims->Get(0)->dense_size() == data->rows &&
            dims->Get(1)->format() == tflite::DimensionType_SPARSE_CSR &&
            dims->Get(2)->format() == tflite::DimensionType_DENSE &&
            dims->Get(2)->dense_size() == tfprune_sparse::kBlockSize;
  if (!ok) {
    MicroPrintf("sparse FC: weights are sparse but not in the 1x16 block format");
    return kTfLiteError;
  }
  const tflite::DimensionMetadata* csr = dims->Get(1);
  const tflite::Buffer* buffer = g_model->buffers()->Get(t->buffer());
  TF_LITE_ENSURE(context, buffer != nullptr && buffer->data() != nullptr);
  tfprune_sparse::BlockSparseWeights& w = data->weights;
  w.rows = data->rows;
  w.cols = data->cols;
  w.values = reinterpret_cast<const int8_t*>(buffer->data()->data());
  w.num_values = static_cast<int32_t>(buffer->data()->size());
  TF_LITE_ENSURE(context, ReadIndexArray(csr->array_segments_type(), csr->array_segments(),
                                         &w.segments));
  TF_LITE_ENSURE(context, ReadIndexArray(csr->array_indices_type(), csr->array_indices(),
                                         &w.indices));
  if (!tfprune_sparse::ValidateBlockSparse(w)) {
    MicroPrintf("sparse FC: invalid block-sparse structure");
    return kTfLiteError;
  }
  data->sparse = true;
  return kTfLiteOk;
}

void* Init(TfLiteContext* context, const char* /*buffer*/, size_t /*length*/) {
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  auto* data = static_cast<OpData*>(node->user_data);
  const auto* params = static_cast<const TfLiteFullyConnectedParams*>(node->builtin_data);

  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, kInput);
  TfLiteTensor* filter = micro_context->AllocateTempInputTensor(node, kWeights);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, kOutput);
  TF_LITE_ENSURE(context, input != nullptr && filter != nullptr && output != nullptr);
  if (input->type != kTfLiteInt8 || filter->type != kTfLiteInt8 ||
      output->type != kTfLiteInt8) {
    MicroPrintf("sparse FC: only int8 input, weights and output are supported");
    return kTfLiteError;
  }
  TF_LITE_ENSURE_EQ(context, filter->dims->size, 2);
  data->rows = filter->dims->data[0];
  data->cols = filter->dims->data[1];

  const auto* affine =
      static_cast<const TfLiteAffineQuantization*>(filter->quantization.params);
  TF_LITE_ENSURE(context, affine != nullptr && affine->scale != nullptr);
  const int32_t num_scales = affine->scale->size;
  TF_LITE_ENSURE(context, num_scales == 1 || num_scales == data->rows);
  for (int32_t i = 0; i < affine->zero_point->size; ++i) {
    TF_LITE_ENSURE_EQ(context, affine->zero_point->data[i], 0);  // symmetric weights
  }
  auto* multipliers = static_cast<int32_t*>(
      context->AllocatePersistentBuffer(context, num_scales * sizeof(int32_t)));
  auto* shifts = static_cast<int32_t*>(
      context->AllocatePersistentBuffer(context, num_scales * sizeof(int32_t)));
  TF_LITE_ENSURE(context, multipliers != nullptr && shifts != nullptr);
  TF_LITE_ENSURE(context,
                 tfprune_sparse::ComputeQuantParams(
                     input->params.scale, input->params.zero_point, affine->scale->data,
                     num_scales, output->params.scale, output->params.zero_point,
                     static_cast<tfprune_sparse::Activation>(params->activation),
                     multipliers, shifts, &data->params));
  TF_LITE_ENSURE_OK(context, ReadSparsity(context, node, data));

  micro_context->DeallocateTempTfLiteTensor(input);
  micro_context->DeallocateTempTfLiteTensor(filter);
  micro_context->DeallocateTempTfLiteTensor(output);
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const auto& data = *static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, kInput);
  const TfLiteEvalTensor* bias = tflite::micro::GetEvalInput(context, node, kBias);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, kOutput);
  const int32_t batches = tflite::micro::GetTensorShape(input).FlatSize() / data.cols;
  const int32_t* bias_data = tflite::micro::GetOptionalTensorData<int32_t>(bias);
  if (data.sparse) {
    tfprune_sparse::SparseFullyConnected(data.params, data.weights, bias_data,
                                         tflite::micro::GetTensorData<int8_t>(input), batches,
                                         tflite::micro::GetTensorData<int8_t>(output));
  } else {
    const TfLiteEvalTensor* filter = tflite::micro::GetEvalInput(context, node, kWeights);
    tfprune_sparse::DenseFullyConnected(data.params, tflite::micro::GetTensorData<int8_t>(filter),
                                        data.rows, data.cols, bias_data,
                                        tflite::micro::GetTensorData<int8_t>(input), batches,
                                        tflite::micro::GetTensorData<int8_t>(output));
  }
  return kTfLiteOk;
}

}  // namespace

void SetSparseModel(const tflite::Model* model) { g_model = model; }

TFLMRegistration Register_SPARSE_FULLY_CONNECTED() {
  return tflite::micro::RegisterOp(Init, Prepare, Eval);
}

}  // namespace tfprune_micro
