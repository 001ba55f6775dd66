"""``GeneralizedRCNN`` with an R-C4 or R-FPN backbone (Faster / Mask R-CNN as the MoCo and SL-MLP detection
protocols run them); ``build_detector`` picks one by ``MODEL.BACKBONE.NAME`` as Detectron2 does.

Images come in as 0-255 tensors in ``INPUT.FORMAT`` channel order, already resized; they are normalised
and zero-padded into one batch (padding after normalisation, as Detectron2 does; to a multiple of 32 for FPN).
Training returns the losses, inference the detections in the resized images' coordinates (``postprocessing``
maps them back). Module names are Detectron2's (``proposal_generator.rpn_head``, ``roi_heads.box_predictor``,
``roi_heads.box_head``, ``roi_heads.mask_head``), except the ResNet, which keeps torchvision's names, and the
FPN, which keeps ``torchvision.ops.FeaturePyramidNetwork``'s.
"""
import torch
from torch import nn

from ..engine.distributed import current_device
from .anchor_generator import DefaultAnchorGenerator, broadcast_per_level
from .backbone import build_resnet_bottom_up, build_resnet_c4
from .box_head import FastRCNNConvFCHead
from .box_regression import Box2BoxTransform
from .fast_rcnn import FastRCNNOutputLayers
from .fpn import FPNBackbone
from .mask_head import MaskRCNNConvUpsampleHead
from .matcher import Matcher
from .norm import resolve_head_norm
from .poolers import ROIPooler
from .roi_align import RoIAlign
from .roi_heads import Res5ROIHeads, StandardROIHeads
from .rpn import RPN, StandardRPNHead

C4_FEATURE = "res4"
C4_BACKBONE = "build_resnet_backbone"
FPN_BACKBONE = "build_resnet_fpn_backbone"


class GeneralizedRCNN(nn.Module):
    def __init__(self, backbone, proposal_generator, roi_heads, pixel_mean, pixel_std, size_divisibility: int = 0):
        super().__init__()
        self.backbone = backbone
        self.size_divisibility = size_divisibility
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def preprocess(self, images):
        """Normalise and zero-pad to the largest image, rounded up to ``size_divisibility`` (0 for C4, 32 for
        FPN); returns (batch, sizes).

        On CPUs the batch is channels-last: oneDNN's convolutions run about 15% faster in that layout, and the
        convolutions keep it. GPUs keep Detectron2's NCHW.
        """
        normalized = [(img.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std for img in images]
        sizes = [tuple(img.shape[-2:]) for img in normalized]
        height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if self.size_divisibility > 1:
            stride = self.size_divisibility
            height, width = -(-height // stride) * stride, -(-width // stride) * stride
        batch = normalized[0].new_zeros(len(normalized), 3, height, width)
        for slot, img in zip(batch, normalized):
            slot[:, : img.shape[1], : img.shape[2]].copy_(img)
        if batch.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("training needs targets")
        batch, image_sizes = self.preprocess(images)
        features = self.backbone(batch)
        if isinstance(features, torch.Tensor):  # the C4 trunk returns res4 alone
            features = {C4_FEATURE: features}
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

    anchors = DefaultAnchorGenerator(model_cfg.ANCHOR_GENERATOR.SIZES, model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS,
                                     [trunk.stride], model_cfg.ANCHOR_GENERATOR.OFFSET)
    rpn = build_rpn(cfg, [C4_FEATURE], anchors, trunk.out_channels)
    mask_cfg = model_cfg.ROI_MASK_HEAD
    mask_norm = resolve_head_norm(mask_cfg.NORM, current_device())
    roi_heads = Res5ROIHeads(
        in_feature=C4_FEATURE,
        pooler=RoIAlign(model_cfg.ROI_BOX_HEAD.POOLER_RESOLUTION, spatial_scale=1.0 / trunk.stride,
                        sampling_ratio=model_cfg.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO, aligned=True),
        res5=res5,
        **roi_heads_common(cfg, res5_channels, (lambda: MaskRCNNConvUpsampleHead(
            res5_channels, mask_cfg.CONV_DIM, model_cfg.ROI_HEADS.NUM_CLASSES, mask_cfg.NUM_CONV, mask_norm))),
    )
    return GeneralizedRCNN(trunk, rpn, roi_heads, model_cfg.PIXEL_MEAN, model_cfg.PIXEL_STD)


def build_rpn(cfg, in_features, anchors: DefaultAnchorGenerator, channels: int) -> RPN:
    """The RPN over ``in_features``; one head for every map, so every map must have as many anchors per cell."""
    rpn_cfg = cfg.MODEL.RPN
    if len(set(anchors.num_anchors)) != 1:
        raise ValueError(f"the RPN head is shared by every feature map, so each needs the same number of anchors per "
                         f"location; MODEL.ANCHOR_GENERATOR gives {anchors.num_anchors}")
    return RPN(
        in_features=in_features,
        head=StandardRPNHead(channels, anchors.num_anchors[0]),
        anchor_generator=anchors,
        matcher=Matcher(rpn_cfg.IOU_THRESHOLDS, [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(rpn_cfg.BBOX_REG_WEIGHTS),
        batch_size_per_image=rpn_cfg.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn_cfg.POSITIVE_FRACTION,
        pre_nms_topk={"training": rpn_cfg.PRE_NMS_TOPK_TRAIN, "testing": rpn_cfg.PRE_NMS_TOPK_TEST},
        post_nms_topk={"training": rpn_cfg.POST_NMS_TOPK_TRAIN, "testing": rpn_cfg.POST_NMS_TOPK_TEST},
        nms_thresh=rpn_cfg.NMS_THRESH,
        min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
        smooth_l1_beta=rpn_cfg.SMOOTH_L1_BETA,
    )


def roi_heads_common(cfg, box_features: int, make_mask_head) -> dict:
    """The box predictor on ``box_features``-wide features, the mask head when MASK_ON, matching and sampling."""
    heads_cfg, box_cfg = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    return dict(
        box_predictor=FastRCNNOutputLayers(
            box_features, heads_cfg.NUM_CLASSES, Box2BoxTransform(box_cfg.BBOX_REG_WEIGHTS), box_cfg.SMOOTH_L1_BETA,
            heads_cfg.SCORE_THRESH_TEST, heads_cfg.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE),
        mask_head=make_mask_head() if cfg.MODEL.MASK_ON else None,
        matcher=Matcher(heads_cfg.IOU_THRESHOLDS, [0, 1], allow_low_quality_matches=False),
        batch_size_per_image=heads_cfg.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads_cfg.POSITIVE_FRACTION,
        proposal_append_gt=heads_cfg.PROPOSAL_APPEND_GT,
    )


def build_rcnn_fpn(cfg, norm: str) -> GeneralizedRCNN:
    """R-FPN Faster/Mask R-CNN (Detectron2's Base-RCNN-FPN); ``norm`` is the backbone's resolved norm, the FPN's
    and heads' norms are resolved here the same way."""
    model_cfg = cfg.MODEL
    device = current_device()
    fpn_cfg = model_cfg.FPN
    bottom_up = build_resnet_bottom_up(model_cfg.RESNETS.DEPTH, norm, model_cfg.BACKBONE.FREEZE_AT,
                                       model_cfg.RESNETS.OUT_FEATURES)
    backbone = FPNBackbone(bottom_up, fpn_cfg.IN_FEATURES, fpn_cfg.OUT_CHANNELS,
                           resolve_head_norm(fpn_cfg.NORM, device))

    rpn_features = list(model_cfg.RPN.IN_FEATURES)
    anchor_cfg = model_cfg.ANCHOR_GENERATOR
    anchors = DefaultAnchorGenerator(broadcast_per_level(anchor_cfg.SIZES, len(rpn_features)),
                                     broadcast_per_level(anchor_cfg.ASPECT_RATIOS, len(rpn_features)),
                                     [backbone.strides[name] for name in rpn_features], anchor_cfg.OFFSET)
    rpn = build_rpn(cfg, rpn_features, anchors, backbone.out_channels)

    heads_cfg, box_cfg, mask_cfg = model_cfg.ROI_HEADS, model_cfg.ROI_BOX_HEAD, model_cfg.ROI_MASK_HEAD
    scales = [1.0 / backbone.strides[name] for name in heads_cfg.IN_FEATURES]
    box_head = FastRCNNConvFCHead(backbone.out_channels, box_cfg.POOLER_RESOLUTION, box_cfg.NUM_CONV,
                                  box_cfg.CONV_DIM, box_cfg.NUM_FC, box_cfg.FC_DIM,
                                  resolve_head_norm(box_cfg.NORM, device))
    mask_norm = resolve_head_norm(mask_cfg.NORM, device)
    roi_heads = StandardROIHeads(
        in_features=heads_cfg.IN_FEATURES,
        box_pooler=ROIPooler(box_cfg.POOLER_RESOLUTION, scales, box_cfg.POOLER_SAMPLING_RATIO),
        box_head=box_head,
        mask_pooler=(ROIPooler(mask_cfg.POOLER_RESOLUTION, scales, mask_cfg.POOLER_SAMPLING_RATIO)
                     if model_cfg.MASK_ON else None),
        **roi_heads_common(cfg, box_head.output_size, (lambda: MaskRCNNConvUpsampleHead(
            backbone.out_channels, mask_cfg.CONV_DIM, heads_cfg.NUM_CLASSES, mask_cfg.NUM_CONV, mask_norm))),
    )
    return GeneralizedRCNN(backbone, rpn, roi_heads, model_cfg.PIXEL_MEAN, model_cfg.PIXEL_STD,
                           size_divisibility=backbone.size_divisibility)


DETECTOR_BUILDERS = {C4_BACKBONE: build_rcnn_c4, FPN_BACKBONE: build_rcnn_fpn}


def build_detector(cfg, norm: str) -> GeneralizedRCNN:
    """The detector a validated config describes, by ``MODEL.BACKBONE.NAME`` (R50-C4 or R50-FPN); ``norm`` is the
    backbone norm that runs here (``norm.resolve_norm``)."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in DETECTOR_BUILDERS:
        raise NotImplementedError(f"MODEL.BACKBONE.NAME {name!r}: only {', '.join(DETECTOR_BUILDERS)} are built")
    return DETECTOR_BUILDERS[name](cfg, norm)


def describe_detector(cfg) -> str:
    """``R50-FPN Mask R-CNN``-style name of the configured detector, for logs."""
    arch = "FPN" if cfg.MODEL.BACKBONE.NAME == FPN_BACKBONE else "C4"
    return f"R{cfg.MODEL.RESNETS.DEPTH}-{arch} {'Mask' if cfg.MODEL.MASK_ON else 'Faster'} R-CNN"


def load_backbone_weights(model: GeneralizedRCNN, backbone_state: dict) -> int:
    """Copy a canonical (torchvision-named) backbone into the ResNet of the detector; returns how many tensors loaded.

    C4: the stem and res2..res4 go to ``backbone.``, res5 to ``roi_heads.res5.``; FPN: all of it to
    ``backbone.bottom_up.``. Every checkpoint tensor must land somewhere and every ResNet tensor of the model must
    be covered, except the extra res5 norm (new in the detector) and BN batch counters that FrozenBN does not keep.
    """
    model_state = model.state_dict()
    fpn = isinstance(model.backbone, FPNBackbone)
    resnet_prefixes = ("backbone.bottom_up.",) if fpn else ("backbone.", "roi_heads.res5.")

    def place(key: str) -> str:
        if fpn:
            return "backbone.bottom_up." + key
        return "roi_heads.res5." + key[len("layer4."):] if key.startswith("layer4.") else "backbone." + key

    targets = {}
    for key in backbone_state:
        target = place(key)
        if target not in model_state:
            if key.endswith("num_batches_tracked"):
                continue
            raise KeyError(f"backbone tensor {key!r} has no place in the detector (looked for {target!r})")
        if model_state[target].shape != backbone_state[key].shape:
            raise ValueError(f"backbone tensor {key!r} has shape {tuple(backbone_state[key].shape)}, "
                             f"the detector's {target!r} has {tuple(model_state[target].shape)}")
        targets[target] = backbone_state[key]
    uncovered = [k for k in model_state
                 if k.startswith(resnet_prefixes) and not k.startswith("roi_heads.res5.norm.") and k not in targets]
    if uncovered:
        raise KeyError(f"{len(uncovered)} backbone tensors of the detector are not in the checkpoint, "
                       f"e.g. {uncovered[:5]}")
    model.load_state_dict(targets, strict=False)
    return len(targets)
