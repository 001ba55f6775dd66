# mmsegmentation 1.x: DeepLab-v3 R50-D8 on Cityscapes 512x1024, 40k iterations, 4 GPUs x 2 images, with the basic
# 7x7 stem of self-supervised (torchvision-style) ResNet-50 checkpoints. This is the recipe transferlab's
# `--task cityscapes_deeplabv3` runs (configs/segmentation/cityscapes_deeplabv3_R_50_D8_40k.yaml), for users who
# run mmseg themselves.
#
#   python tools/convert.py CHECKPOINT work/r50_mmseg.pth --to mmseg        # in transferlab: backbone.* tensors
#   cp deeplabv3_r50-d8_basic-stem_4xb2-40k_cityscapes-512x1024.py mmsegmentation/configs/deeplabv3/
#   bash tools/dist_train.sh configs/deeplabv3/deeplabv3_r50-d8_basic-stem_4xb2-40k_cityscapes-512x1024.py 4 \
#       --cfg-options model.backbone.init_cfg.checkpoint=/abs/path/work/r50_mmseg.pth
#
# mmseg's default ResNetV1c has a deep stem (stem.0 ... stem.8) that would load nothing from such a checkpoint
# (mmengine only logs the missing keys); type='ResNet' with deep_stem=False has conv1/bn1, which load.
# A fine-tuned transferlab model exported with `tools/convert.py RUN/model_final.pth OUT.pth --to mmseg` holds the
# whole network (backbone, decode_head, auxiliary_head) under these names: test it with mmseg's tools/test.py.
_base_ = './deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    pretrained=None,  # the base config's open-mmlab://resnet50_v1c, which excludes init_cfg
    backbone=dict(
        type='ResNet',
        depth=50,
        deep_stem=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='Pretrained', checkpoint='set model.backbone.init_cfg.checkpoint', prefix='backbone.')),
)
