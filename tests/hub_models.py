"""Tiny offline configs of every keras_hub 0.32 backbone class, shared by
tests/keras_hub_test.py and bench/hub_conformance.py (one table, two users).

`TINY[name]` builds `keras_hub.models.<name>` from its constructor at the smallest size
that builds: random weights, no preset, nothing downloaded. `NOT_BUILDABLE[name]` says
why a class is not in `TINY`. `data(model, n, seed)` returns inputs in the structure the
backbone expects (dict of token_ids / padding_mask / images / ..., or an array).
"""
import importlib

import numpy as np

VOCAB = 64
SEQ = 8
IMG = 32
AUDIO = 1152

_TEXT = dict(vocabulary_size=VOCAB, num_layers=1, hidden_dim=16, intermediate_dim=32)
_DEC = dict(_TEXT, num_query_heads=2, num_key_value_heads=1)


def _hub():
  import keras_hub  # pylint: disable=g-import-not-at-top
  return keras_hub


def _src(module, name):
  """A class of keras_hub's source tree (encoders that keras_hub.models does not export)."""
  return getattr(importlib.import_module(f"keras_hub.src.models.{module}"), name)


def _resnet_kwargs(image_shape=(IMG, IMG, 3)):
  return dict(input_conv_filters=[64], input_conv_kernel_sizes=[3],
              stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
              stackwise_num_strides=[1, 2], block_type="basic_block",
              image_shape=image_shape)


def _mit_kwargs():
  return dict(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 1],
              layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
              layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2],
              hidden_dims=[8, 16], image_shape=(IMG, IMG, 3))


def _vision_kwargs():
  return dict(image_shape=(IMG, IMG, 3), patch_size=8, num_layers=1, num_heads=2,
              hidden_dim=16, mlp_dim=32)


def _kw(name):
  """The constructor kwargs of backbone `name` (only for the plain ones)."""
  t, d = _TEXT, _DEC
  return {
      # ---- text encoders
      "AlbertBackbone": dict(t, num_heads=2, embedding_dim=8, max_sequence_length=16),
      "BertBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "DistilBertBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "RobertaBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "XLMRobertaBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "DebertaV3Backbone": dict(t, num_heads=2, max_sequence_length=16, bucket_size=4),
      "ElectraBackbone": dict(vocab_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16,
                              embedding_dim=8, intermediate_dim=32, max_sequence_length=16),
      "FNetBackbone": dict(t, max_sequence_length=16),
      "ESMBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "ESM2Backbone": dict(t, num_heads=2, max_sequence_length=16),
      "RoformerV2Backbone": dict(t, num_heads=2, head_size=8, max_wavelength=100),
      "XLNetBackbone": dict(t, num_heads=2),
      # ---- encoder-decoders
      "BartBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "T5Backbone": dict(t, num_heads=2, key_value_dim=8),
      "EdRecBackbone": dict(vocab_size=VOCAB, num_layers_enc=1, num_layers_dec=1,
                            hidden_dim=16, intermediate_dim=32, num_heads=2),
      "WhisperBackbone": dict(t, num_heads=2, num_mels=8, max_encoder_sequence_length=16,
                              max_decoder_sequence_length=16),
      "MoonshineBackbone": dict(vocabulary_size=VOCAB, filter_dim=16, encoder_num_layers=1,
                                decoder_num_layers=1, hidden_dim=16, intermediate_dim=32,
                                encoder_num_heads=2, decoder_num_heads=2),
      "T5GemmaBackbone": dict(
          vocabulary_size=VOCAB, encoder_hidden_dim=16, encoder_intermediate_dim=32,
          encoder_num_layers=1, encoder_num_attention_heads=2,
          encoder_num_key_value_heads=1, encoder_head_dim=8,
          encoder_layer_types=["full_attention"], decoder_hidden_dim=16,
          decoder_intermediate_dim=32, decoder_num_layers=1,
          decoder_num_attention_heads=2, decoder_num_key_value_heads=1,
          decoder_head_dim=8, decoder_layer_types=["full_attention"]),
      "T5Gemma2Backbone": dict(
          vocabulary_size=VOCAB, encoder_hidden_dim=16, encoder_intermediate_dim=32,
          encoder_num_layers=1, encoder_num_attention_heads=2,
          encoder_num_key_value_heads=1, encoder_head_dim=8,
          encoder_layer_types=["full_attention"], decoder_hidden_dim=16,
          decoder_intermediate_dim=32, decoder_num_layers=1,
          decoder_num_attention_heads=2, decoder_num_key_value_heads=1,
          decoder_head_dim=8, decoder_layer_types=["full_attention"]),
      # ---- decoder-only LMs
      "GPT2Backbone": dict(t, num_heads=2, max_sequence_length=16),
      "GPTNeoXBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "OPTBackbone": dict(t, num_heads=2, max_sequence_length=16),
      "BloomBackbone": dict(t, num_heads=2),
      "FalconBackbone": dict(t, num_attention_heads=2),
      "GemmaBackbone": dict(d, head_dim=8),
      "Gemma3Backbone": dict(d, head_dim=8, image_size=IMG, vision_encoder=None),
      "Gemma4Backbone": dict(d, head_dim=8, image_size=IMG, vision_encoder=None),
      "LlamaBackbone": dict(d),
      "Llama3Backbone": dict(d),
      "MistralBackbone": dict(d),
      "MixtralBackbone": dict(d, num_experts=2),
      "GptOssBackbone": dict(d, num_experts=2),
      "Phi3Backbone": dict(d),
      "QwenBackbone": dict(d),
      "Qwen2Backbone": dict(d),
      "Qwen3Backbone": dict(d, head_dim=8),
      "QwenMoeBackbone": dict(d, moe_intermediate_dim=16, shared_expert_intermediate_dim=16,
                              num_experts=2, top_k=1),
      "Qwen3MoeBackbone": dict(d, moe_intermediate_dim=16, num_experts=2, top_k=1),
      "Qwen3_5Backbone": dict(d, head_dim=8),
      "Qwen3_5MoeBackbone": dict(
          vocabulary_size=VOCAB, num_layers=1, num_query_heads=2, num_key_value_heads=1,
          head_dim=8, hidden_dim=16, moe_intermediate_dim=16,
          shared_expert_intermediate_size=16, num_experts=2, top_k=1),
      "SmolLMBackbone": dict(
          vocabulary_size=VOCAB, hidden_dim=16, intermediate_dim=32, num_layers=1,
          num_attention_heads=2, num_key_value_heads=1, attention_bias=False,
          attention_dropout=0.0, rope_layer_enabled_list=[True],
          layer_types=["attention"], mlp_bias=False, layer_norm_epsilon=1e-6,
          max_position_embeddings=32, rope_theta=10000.0, partial_rotary_factor=1.0),
      "SmolLM3Backbone": dict(
          vocabulary_size=VOCAB, hidden_dim=16, intermediate_dim=32, num_layers=1,
          num_attention_heads=2, num_key_value_heads=1, attention_bias=False,
          attention_dropout=0.0, rope_layer_enabled_list=[True],
          layer_types=["attention"], mlp_bias=False, layer_norm_epsilon=1e-6,
          max_position_embeddings=32, rope_theta=10000.0, partial_rotary_factor=1.0),
      "RWKV7Backbone": dict(hidden_size=16, head_size=8, num_layers=1,
                            vocabulary_size=VOCAB, intermediate_dim=32),
      "Gemma3nBackbone": dict(
          text_vocab_size=VOCAB, text_hidden_size=16, num_hidden_layers=1,
          pad_token_id=0, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
          intermediate_size=[32], hidden_activation="gelu_approximate",
          layer_types=["full_attention"], sliding_window=8, rope_theta=10000.0,
          max_position_embeddings=32, vocab_size_per_layer_input=VOCAB,
          hidden_size_per_layer_input=4, altup_num_inputs=2, laurel_rank=4),
      # ---- vision
      "ResNetBackbone": _resnet_kwargs(),
      "VGGBackbone": dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                          image_shape=(IMG, IMG, 3)),
      "DenseNetBackbone": dict(stackwise_num_repeats=[1, 1], growth_rate=4,
                               image_shape=(IMG, IMG, 3)),
      "XceptionBackbone": dict(stackwise_conv_filters=[[8, 16], [16, 16]],
                               stackwise_pooling=[True, False],
                               image_shape=(IMG, IMG, 3)),
      "CSPNetBackbone": dict(stem_filters=8, stem_kernel_size=3, stem_strides=1,
                             stackwise_depth=[1, 1], stackwise_strides=[1, 2],
                             stackwise_num_filters=[8, 16], block_type="dark_block",
                             stage_type="csp",
                             expand_ratio=[2.0], bottle_ratio=[0.5], block_ratio=[1.0],
                             image_shape=(IMG, IMG, 3)),
      "MobileNetBackbone": dict(
          stackwise_expansion=[[16], [24]], stackwise_num_blocks=[1, 1],
          stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
          stackwise_num_strides=[[2], [1]], stackwise_se_ratio=[[None], [0.25]],
          stackwise_activation=[["relu"], ["hard_swish"]], stackwise_padding=[[1], [1]],
          output_num_filters=32, depthwise_filters=8, depthwise_stride=1,
          depthwise_residual=False, last_layer_filter=32, input_num_filters=8,
          image_shape=(IMG, IMG, 3), squeeze_and_excite=0.5),
      "EfficientNetBackbone": dict(
          stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
          stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
          stackwise_expansion_ratios=[1, 2], stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
          stackwise_strides=[1, 2], stackwise_block_types=["fused", "unfused"],
          width_coefficient=1.0, depth_coefficient=1.0, image_shape=(IMG, IMG, 3)),
      "HGNetV2Backbone": dict(
          depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
          hidden_act="relu", use_learnable_affine_block=False,
          stackwise_stage_filters=[(8, 8, 16, 1, 1, 3), (16, 8, 32, 1, 1, 3)],
          apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
          image_shape=(IMG, IMG, 3)),
      "MobileNetV5Backbone": dict(
          stackwise_block_types=[["er"], ["uir"]], stackwise_num_blocks=[1, 1],
          stackwise_num_filters=[[8], [16]], stackwise_strides=[[2], [2]],
          stackwise_act_layers=[["relu"], ["relu"]], stackwise_exp_ratios=[[2.0], [2.0]],
          stackwise_se_ratios=[[0.0], [0.0]], stackwise_dw_kernel_sizes=[[0], [3]],
          stackwise_dw_start_kernel_sizes=[[0], [0]],
          stackwise_dw_end_kernel_sizes=[[0], [0]], stackwise_exp_kernel_sizes=[[3], [0]],
          stackwise_pw_kernel_sizes=[[1], [0]], stackwise_num_heads=[[0], [0]],
          stackwise_key_dims=[[0], [0]], stackwise_value_dims=[[0], [0]],
          stackwise_kv_strides=[[0], [0]], stackwise_use_cpe=[[False], [False]],
          use_msfa=False, stem_size=8, image_shape=(IMG, IMG, 3)),
      "MiTBackbone": _mit_kwargs(),
      "ViTBackbone": _vision_kwargs(),
      "DeiTBackbone": dict(image_shape=(IMG, IMG, 3), patch_size=8, num_layers=1,
                           num_heads=2, hidden_dim=16, intermediate_dim=32),
      "DINOV2Backbone": dict(patch_size=8, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, image_shape=(IMG, IMG, 3)),
      "DINOV3Backbone": dict(patch_size=8, num_layers=1, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, image_shape=(IMG, IMG, 3)),
      "SwinTransformerBackbone": dict(image_shape=(IMG, IMG, 3), embed_dim=8,
                                      depths=[1, 1], num_heads=[1, 2], window_size=4,
                                      patch_size=4),
      "ViTDetBackbone": dict(hidden_size=16, num_layers=1, intermediate_dim=32,
                             num_heads=2, global_attention_layer_indices=[0],
                             image_shape=(IMG, IMG, 3), patch_size=8, window_size=2),
      "VideoPrismBackbone": dict(num_frames=2, patch_size=8, hidden_dim=16,
                                 intermediate_dim=32, num_heads=2, num_spatial_layers=1,
                                 num_temporal_layers=1, num_auxiliary_layers=0,
                                 image_shape=(IMG, IMG, 3)),
      # ---- multimodal / generative
      "PaliGemmaBackbone": dict(d, image_size=IMG, head_dim=8, vit_patch_size=8,
                                vit_num_layers=1, vit_num_heads=2, vit_hidden_dim=16,
                                vit_intermediate_dim=32),
      "FluxBackbone": dict(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2,
                           depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10_000,
                           use_bias=True, guidance_embed=True, image_shape=(16, 16),
                           text_shape=(SEQ, 16), image_ids_shape=(16, 3),
                           text_ids_shape=(SEQ, 3), y_shape=(16,)),
  }.get(name)


def _composite(name):
  """Builders of the backbones made of other backbones / encoders (tiny parts)."""
  hub = _hub()
  m = hub.models
  if name == "DeepLabV3Backbone":
    return m.DeepLabV3Backbone(image_encoder=m.ResNetBackbone(**_resnet_kwargs()),
                               spatial_pyramid_pooling_key="P3", upsampling_size=4,
                               dilation_rates=[1, 2], projection_filters=8)
  if name == "RetinaNetBackbone":
    return m.RetinaNetBackbone(
        image_encoder=m.ResNetBackbone(**dict(
            _resnet_kwargs(), stackwise_num_filters=[64, 8, 16],
            stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2])),
        min_level=3, max_level=4, use_p5=False, image_shape=(IMG, IMG, 3))
  if name == "SegFormerBackbone":
    return m.SegFormerBackbone(image_encoder=m.MiTBackbone(**_mit_kwargs()),
                               projection_filters=8)
  if name == "BASNetBackbone":
    return m.BASNetBackbone(
        image_encoder=m.ResNetBackbone(**dict(
            _resnet_kwargs(image_shape=(None, None, 3)), stackwise_num_filters=[64, 8, 8, 8],
            stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2])),
        num_classes=1, image_shape=(IMG, IMG, 3))
  if name in ("CLIPBackbone", "MetaCLIP2Backbone"):
    text_encoder = _src("clip.clip_text_encoder", "CLIPTextEncoder")
    vision_encoder = _src("clip.clip_vision_encoder", "CLIPVisionEncoder")
    return getattr(m, name)(
        vision_encoder=vision_encoder(patch_size=8, hidden_dim=16, num_layers=1,
                                      num_heads=2, intermediate_dim=32,
                                      intermediate_activation="quick_gelu",
                                      image_shape=(IMG, IMG, 3)),
        text_encoder=text_encoder(vocabulary_size=VOCAB, embedding_dim=16,
                                  hidden_dim=16, num_layers=1, num_heads=2,
                                  intermediate_dim=32,
                                  intermediate_activation="quick_gelu",
                                  max_sequence_length=SEQ),
        projection_dim=8)
  if name == "SigLIPBackbone":
    text_encoder = _src("siglip.siglip_text_encoder", "SigLIPTextEncoder")
    vision_encoder = _src("siglip.siglip_vision_encoder", "SigLIPVisionEncoder")
    return m.SigLIPBackbone(
        vision_encoder=vision_encoder(patch_size=8, hidden_dim=16, num_layers=1,
                                      num_heads=2, intermediate_dim=32,
                                      image_shape=(IMG, IMG, 3)),
        text_encoder=text_encoder(vocabulary_size=VOCAB, embedding_dim=16,
                                  hidden_dim=16, num_layers=1, num_heads=2,
                                  intermediate_dim=32, max_sequence_length=SEQ))
  if name == "BLIP2Backbone":
    model = m.BLIP2Backbone(
        vision_encoder=_src("blip2.blip2_vision_encoder", "BLIP2VisionEncoder")(
            image_size=IMG, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, use_patch_bias=True, use_class_token=True,
            use_mha_bias=True, use_mlp_bias=True, dropout_rate=0.0,
            layer_norm_epsilon=1e-6, initializer_range=0.02),
        qformer=_src("blip2.blip2_qformer", "BLIP2QFormer")(
            num_query_tokens=2, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, vision_dim=16, cross_attention_frequency=1, dropout=0.0,
            layer_norm_epsilon=1e-6),
        language_model=_src("blip2.blip2_custom_opt", "BLIP2CustomOPT")(
            vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, num_query_tokens=2, dropout=0.0, max_sequence_length=16,
            qformer_hidden_dim=16))
    # The learned query tokens start at zeros (a trained model's are not): random ones,
    # or every layer that reads them sees only zeros.
    for w in model.weights:
      if w.path.endswith("query_tokens"):
        w.assign(np.random.default_rng(0).normal(0.0, 0.02, w.shape).astype(w.dtype))
    return model
  if name == "DFineBackbone":
    stages = ["stage1", "stage2"]
    hgnet = m.HGNetV2Backbone(**dict(
        _kw("HGNetV2Backbone"), use_learnable_affine_block=True, out_features=stages))
    return m.DFineBackbone(
        backbone=hgnet, decoder_in_channels=[16, 16], encoder_hidden_dim=16,
        num_denoising=0, num_labels=4, hidden_dim=16, learn_initial_query=False,
        num_queries=4, anchor_image_size=(IMG, IMG), feat_strides=[4, 8],
        num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1],
        num_attention_heads=2, encoder_ffn_dim=32, num_encoder_layers=1,
        hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1, num_decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=8, num_lqe_layers=1, out_features=stages,
        image_shape=(IMG, IMG, 3), seed=0)
  if name == "DepthAnythingBackbone":
    # Four DINOv2 layers feed the four reassemble stages (factor 0.5 needs >= 8x8 patches).
    encoder = m.DINOV2Backbone(patch_size=4, num_layers=4, hidden_dim=16, num_heads=2,
                               intermediate_dim=32, layer_scale_init_value=1.0,
                               num_register_tokens=0, image_shape=(IMG, IMG, 3),
                               position_embedding_shape=(IMG, IMG, 3),
                               apply_layernorm=True, name="image_encoder")
    return m.DepthAnythingBackbone(
        image_encoder=encoder, reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8, head_hidden_dim=8,
        head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"])
  if name == "PARSeqBackbone":
    return m.PARSeqBackbone(
        image_encoder=m.ViTBackbone(**dict(_vision_kwargs(), use_class_token=False,
                                           name="image_encoder")),
        vocabulary_size=VOCAB, max_label_length=SEQ, decoder_hidden_dim=16,
        num_decoder_layers=1, num_decoder_heads=2, decoder_mlp_dim=32, dropout_rate=0.0,
        attention_dropout=0.0)
  if name == "SAMBackbone":
    # Patch 4 on IMG: an (IMG/4)^2 embedding; the mask input is IMG x IMG (4x that).
    return m.SAMBackbone(
        image_encoder=m.ViTDetBackbone(**dict(_kw("ViTDetBackbone"), patch_size=4,
                                              num_output_channels=8)),
        prompt_encoder=_src("sam.sam_prompt_encoder", "SAMPromptEncoder")(
            hidden_size=8, image_embedding_size=(IMG // 4, IMG // 4),
            input_image_size=(IMG, IMG), mask_in_channels=8),
        mask_decoder=_src("sam.sam_mask_decoder", "SAMMaskDecoder")(
            num_layers=1, hidden_size=8, intermediate_dim=16, num_heads=2, embedding_dim=8,
            num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=8))
  if name == "SAM3PromptableConceptBackbone":
    s, shape = "sam3.sam3_", (28, 28, 3)  # patch 14: a 2x2 grid (the upstream test's size)
    return m.SAM3PromptableConceptBackbone(
        vision_encoder=_src(s + "vision_encoder", "SAM3VisionEncoder")(
            image_shape=shape, patch_size=14, num_layers=1, hidden_dim=16,
            intermediate_dim=32, num_heads=2, fpn_hidden_dim=16,
            fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(42, 42, 3),
            window_size=2, global_attn_indexes=[0]),
        text_encoder=_src(s + "text_encoder", "SAM3TextEncoder")(
            vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1,
            num_heads=2, intermediate_dim=32, max_sequence_length=SEQ),
        geometry_encoder=_src(s + "geometry_encoder", "SAM3GeometryEncoder")(
            num_layers=1, hidden_dim=16, intermediate_dim=32, num_heads=2, roi_size=7),
        detr_encoder=_src(s + "detr_encoder", "SAM3DetrEncoder")(
            num_layers=1, hidden_dim=16, intermediate_dim=32, num_heads=2),
        detr_decoder=_src(s + "detr_decoder", "SAM3DetrDecoder")(
            image_shape=shape, patch_size=14, num_layers=1, hidden_dim=16,
            intermediate_dim=32, num_heads=2, num_queries=4),
        mask_decoder=_src(s + "mask_decoder", "SAM3MaskDecoder")(
            num_upsampling_stages=3, hidden_dim=16, num_heads=2))
  if name == "StableDiffusion3Backbone":
    # The VAE's GroupNorm has 32 groups (>= 32 filters); 4 levels: latents are IMG / 8.
    clip = _src("clip.clip_text_encoder", "CLIPTextEncoder")
    clip_kw = dict(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=1,
                   num_heads=2, intermediate_dim=32, intermediate_output_index=0,
                   max_sequence_length=SEQ)
    return m.StableDiffusion3Backbone(
        mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=1, mmdit_num_heads=2,
        mmdit_position_size=32, mmdit_qk_norm=None, mmdit_dual_attention_indices=None,
        vae=_src("vae.vae_backbone", "VAEBackbone")(
            [32] * 4, [1] * 4, [32] * 4, [1] * 4, sampler_method="mode", name="vae"),
        clip_l=clip(**clip_kw, intermediate_activation="quick_gelu", name="clip_l"),
        clip_g=clip(**clip_kw, intermediate_activation="gelu", name="clip_g"),
        image_shape=(IMG, IMG, 3))
  return None


COMPOSITE = ("DeepLabV3Backbone", "RetinaNetBackbone", "SegFormerBackbone",
             "BASNetBackbone", "CLIPBackbone", "MetaCLIP2Backbone", "SigLIPBackbone",
             "BLIP2Backbone", "DFineBackbone", "DepthAnythingBackbone", "PARSeqBackbone",
             "SAMBackbone", "SAM3PromptableConceptBackbone", "StableDiffusion3Backbone")

# Classes with no tiny offline build here, and why.
NOT_BUILDABLE = {
    "FeaturePyramidBackbone": "abstract base class (no layers of its own)",
}


def guide_custom_layer():
  """A model around a custom layer written the way the Keras guides write them: its
  sublayers are created in `__init__`, built on first call, no `build()`."""
  import keras  # pylint: disable=g-import-not-at-top

  @keras.saving.register_keras_serializable(package="tfprune_tests")
  class GuideBlock(keras.layers.Layer):
    """Dense -> ReLU -> Dense, sublayers made in __init__ (keras.io guide style)."""

    def __init__(self, units=16, out=4, **kwargs):
      super().__init__(**kwargs)
      self.units, self.out = units, out
      self.hidden = keras.layers.Dense(units, activation="relu")
      self.proj = keras.layers.Dense(out)

    def call(self, x):
      return self.proj(self.hidden(x))

    def get_config(self):
      return dict(super().get_config(), units=self.units, out=self.out)

  inp = keras.Input((12,), name="features")
  x = keras.layers.Dense(16, activation="relu", name="stem")(inp)
  return keras.Model(inp, GuideBlock(name="guide_block")(x), name="guide_custom_layer")


# Models that are not keras_hub backbones but go through the same steps.
def bert_text_classifier():
  """keras_hub's `BertTextClassifier` task model (no preprocessor) on the tiny BERT."""
  hub = _hub()
  backbone = hub.models.BertBackbone(**_kw("BertBackbone"))
  return hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)


EXTRA = {"GuideCustomLayer": guide_custom_layer, "BertTextClassifier": bert_text_classifier}


def names():
  """Every `keras_hub.models.*Backbone` class name, sorted."""
  hub = _hub()
  return sorted(n for n in dir(hub.models) if n.endswith("Backbone") and n != "Backbone")


def build(name):
  """Builds backbone `name` at its tiny size (raises if it does not build)."""
  if name in EXTRA:
    return EXTRA[name]()
  if name in NOT_BUILDABLE:
    raise ValueError(f"not buildable offline: {NOT_BUILDABLE[name]}")
  if name in COMPOSITE:
    return _composite(name)
  kwargs = _kw(name)
  if kwargs is None:
    raise ValueError(f"no tiny config for {name}")
  return getattr(_hub().models, name)(**kwargs)


def _special(name, spec, n, rng):
  """Inputs the generic rules of `_one` get wrong: SAM / SAM3 prompts (points, boxes,
  labels, masks) in their valid ranges, StableDiffusion3's per-batch scalars; None for any
  other input."""
  if name in ("num_steps", "guidance_scale"):  # SD3 reads row 0 only: one value a batch
    return np.full((n,), 4 if name == "num_steps" else 2.0, spec.dtype)
  if name == "boxes" and spec.shape[-1] == 5:
    # SAM3: rows (batch index, cx, cy, w, h), normalized. Index 0 (as in keras_hub's
    # docstring) is the only one valid at every batch size, single samples included;
    # so sample i > 0 of a batch pools image 0's features and differs from itself run
    # alone. n - 1 boxes: keras_hub 0.32's SAM3GeometryEncoder broadcasts its
    # (batch, prompts) mask against (queries, keys), which only runs when
    # batch == boxes + 1 (or batch == 1); its no-box path fails on shapes.
    k = max(n - 1, 1)
    return np.concatenate([np.zeros((n, k, 1)), rng.uniform(0.3, 0.7, (n, k, 2)),
                           rng.uniform(0.1, 0.3, (n, k, 2))], -1).astype("float32")
  if name == "box_labels":
    return np.ones((n, max(n - 1, 1)), "int32")  # positive boxes (see "boxes")
  if name == "points":  # SAM: two points in pixels, one foreground, one background
    return rng.uniform(0, IMG, (n, 2, 2)).astype("float32")
  if name == "labels":
    return np.tile(np.array([[1.0, 0.0]], "float32"), (n, 1))
  if name == "boxes" and tuple(spec.shape[-2:]) == (2, 2):  # SAM: one (x0, y0, x1, y1)
    lo = rng.uniform(0, IMG / 2, (n, 1, 1, 2))
    return np.concatenate([lo, lo + rng.uniform(IMG / 8, IMG / 2, (n, 1, 1, 2))],
                          2).astype("float32")
  if name == "masks" and len(spec.shape) == 5:  # SAM: one low-res mask logit map each
    return rng.standard_normal((n, 1, IMG, IMG, 1)).astype("float32")
  return None


def _one(spec, n, rng, vocab, seq=None):
  """Random data for one symbolic input `spec` (a KerasTensor)."""
  import keras  # pylint: disable=g-import-not-at-top
  name = spec.name.split(":")[0]
  special = _special(name, spec, n, rng)
  if special is not None:
    return special
  if len(spec.shape) == 4:  # images: None height / width -> IMG
    seq = IMG
  shape = tuple((seq or SEQ) if d is None else d for d in spec.shape[1:])
  dtype = keras.backend.standardize_dtype(spec.dtype)
  if "mask" in name:
    x = np.ones((n,) + shape, dtype)
    if len(shape) == 1 and shape[0] > 2:
      x[:, -2:] = 0
    return x
  if dtype.startswith("int") or dtype == "bool":
    if "segment" in name:
      hi = 2
    elif "position" in name:
      return np.broadcast_to(np.arange(shape[-1]), (n,) + shape).astype(dtype).copy()
    else:
      hi = vocab
    return rng.integers(1 if hi > 2 else 0, hi, size=(n,) + shape).astype(dtype)
  return rng.standard_normal((n,) + shape).astype(dtype)


def data(model, n, seed=0, vocab=VOCAB):
  """Inputs for `model` in its own structure (dict / list / array)."""
  rng = np.random.default_rng(seed)
  inputs = model.input
  if isinstance(inputs, dict):
    # Moonshine reads raw audio: its strided convs need >= ~1100 samples.
    audio = "encoder_input_values" in inputs
    return {k: _one(v, n, rng, vocab, AUDIO if audio and k.startswith("encoder_") else SEQ)
            for k, v in inputs.items()}
  if isinstance(inputs, (list, tuple)):
    return [_one(v, n, rng, vocab) for v in inputs]
  return _one(inputs, n, rng, vocab)


def flat_outputs(y):
  """Every output tensor of a model call, in a fixed order, as numpy arrays."""
  if isinstance(y, dict):
    return [np.asarray(y[k]) for k in sorted(y)]
  if isinstance(y, (list, tuple)):
    return [a for v in y for a in flat_outputs(v)]
  return [np.asarray(y)]

