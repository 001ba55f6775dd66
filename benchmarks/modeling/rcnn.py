"""``GeneralizedRCNN`` with an R-C4 backbone (Faster / Mask R-CNN as the MoCo detection protocol runs them).

Images come in as 0-255 tensors in ``INPUT.FORMAT`` channel order, already resized; they are normalised
and zero-padded into one batch (padding after normalisation, as Detectron2 does). Training returns the
losses, inference the detections in the resized images' coordinates (``postprocessing`` maps them back).
Module names are Detectron2's (``proposal_generator.rpn_head``, ``roi_heads.box_predictor``,
``roi_heads.mask_head``), except the trunk, which keeps torchvision's names.
"""
import torch
from torch import nn

from .anchor_generator import DefaultAnchorGenerator
from .backbone import build_resnet_c4
from .box_regression import Box2BoxTransform
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import MaskRCNNConvUpsampleHead
from .matcher import Matcher
from .roi_align import RoIAlign
from .roi_heads import Res5ROIHeads
from .rpn import RPN, StandardRPNHead

C4_FEATURE = "res4"


class GeneralizedRCNN(nn.Module):
    def __init__(self, backbone, proposal_generator, roi_heads, pixel_mean, pixel_std):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def preprocess(self, images):
        """Normalise and zero-pad to the largest image (C4 needs no size divisibility); returns (batch, sizes).

        On CPUs the batch is channels-last: oneDNN's convolutions run about 15% faster in that layout, and the
        convolutions keep it. GPUs keep Detectron2's NCHW.
        """
        normalized = [(img.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std for img in images]
        sizes = [tuple(img.shape[-2:]) for img in normalized]
        batch = normalized[0].new_zeros(len(normalized), 3, max(s[0] for s in sizes), max(s[1] for s in sizes))
        for slot, img in zip(batch, normalized):
            slot[:, : img.shape[1], : img.shape[2]].copy_(img)
        if batch.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("training needs targets")
        batch, image_sizes = self.preprocess(images)
        features = {C4_FEATURE: self.backbone(batch)}
        gt_boxes = [t["boxes"] for t in targets] if self.training else None
        proposals, rpn_losses = self.proposal_generator(image_sizes, features, gt_boxes)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return detections


def build_rcnn_c4(cfg, norm: str) -> GeneralizedRCNN:
    """The detector a validated config describes; ``norm`` is the norm that runs here (``norm.resolve_norm``)."""
    model_cfg = cfg.MODEL
    trunk, res5, res5_channels = build_resnet_c4(
        model_cfg.RESNETS.DEPTH, norm, model_cfg.BACKBONE.FREEZE_AT,
        extra_norm=model_cfg.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm")

    rpn_cfg = model_cfg.RPN
    anchors = DefaultAnchorGenerator(model_cfg.ANCHOR_GENERATOR.SIZES, model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS,
                                     [trunk.stride], model_cfg.ANCHOR_GENERATOR.OFFSET)
    rpn = RPN(
        in_feature=C4_FEATURE,
        head=StandardRPNHead(trunk.out_channels, anchors.num_anchors[0]),
        anchor_generator=anchors,
        matcher=Matcher(rpn_cfg.IOU_THRESHOLDS, [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(rpn_cfg.BBOX_REG_WEIGHTS),
        batch_size_per_image=rpn_cfg.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn_cfg.POSITIVE_FRACTION,
        pre_nms_topk={"training": rpn_cfg.PRE_NMS_TOPK_TRAIN, "testing": rpn_cfg.PRE_NMS_TOPK_TEST},
        post_nms_topk={"training": rpn_cfg.POST_NMS_TOPK_TRAIN, "testing": rpn_cfg.POST_NMS_TOPK_TEST},
        nms_thresh=rpn_cfg.NMS_THRESH,
        min_box_size=model_cfg.PROPOSAL_GENERATOR.MIN_SIZE,
        smooth_l1_beta=rpn_cfg.SMOOTH_L1_BETA,
    )

    heads_cfg, box_cfg = model_cfg.ROI_HEADS, model_cfg.ROI_BOX_HEAD
    num_classes = heads_cfg.NUM_CLASSES
    roi_heads = Res5ROIHeads(
        in_feature=C4_FEATURE,
        pooler=RoIAlign(box_cfg.POOLER_RESOLUTION, spatial_scale=1.0 / trunk.stride,
                        sampling_ratio=box_cfg.POOLER_SAMPLING_RATIO, aligned=True),
        res5=res5,
        box_predictor=FastRCNNOutputLayers(
            res5_channels, num_classes, Box2BoxTransform(box_cfg.BBOX_REG_WEIGHTS), box_cfg.SMOOTH_L1_BETA,
            heads_cfg.SCORE_THRESH_TEST, heads_cfg.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE),
        mask_head=(MaskRCNNConvUpsampleHead(res5_channels, model_cfg.ROI_MASK_HEAD.CONV_DIM, num_classes)
                   if model_cfg.MASK_ON else None),
        matcher=Matcher(heads_cfg.IOU_THRESHOLDS, [0, 1], allow_low_quality_matches=False),
        batch_size_per_image=heads_cfg.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads_cfg.POSITIVE_FRACTION,
        proposal_append_gt=heads_cfg.PROPOSAL_APPEND_GT,
    )
    return GeneralizedRCNN(trunk, rpn, roi_heads, model_cfg.PIXEL_MEAN, model_cfg.PIXEL_STD)


def load_backbone_weights(model: GeneralizedRCNN, backbone_state: dict) -> int:
    """Copy a canonical (torchvision-named) backbone into the trunk and res5; returns how many tensors loaded.

    Every checkpoint tensor must land somewhere and every trunk/res5 tensor of the model must be covered,
    except the extra res5 norm (new in the detector) and BN batch counters that FrozenBN does not keep.
    """
    model_state = model.state_dict()
    targets = {}
    for key in backbone_state:
        target = "roi_heads.res5." + key[len("layer4."):] if key.startswith("layer4.") else "backbone." + key
        if target not in model_state:
            if key.endswith("num_batches_tracked"):
                continue
            raise KeyError(f"backbone tensor {key!r} has no place in the detector (looked for {target!r})")
        if model_state[target].shape != backbone_state[key].shape:
            raise ValueError(f"backbone tensor {key!r} has shape {tuple(backbone_state[key].shape)}, "
                             f"the detector's {target!r} has {tuple(model_state[target].shape)}")
        targets[target] = backbone_state[key]
    uncovered = [k for k in model_state
                 if (k.startswith("backbone.") or k.startswith("roi_heads.res5."))
                 and not k.startswith("roi_heads.res5.norm.") and k not in targets]
    if uncovered:
        raise KeyError(f"{len(uncovered)} backbone tensors of the detector are not in the checkpoint, "
                       f"e.g. {uncovered[:5]}")
    model.load_state_dict(targets, strict=False)
    return len(targets)
