"""Faster / Mask R-CNN R50-C4 as the MoCo detection protocol defines it, built from torchvision parts.

Layout follows Detectron2's ``GeneralizedRCNN`` + ``Res5ROIHeadsExtraNorm``: a res2-res4 trunk (stride 16),
an RPN on res4, RoIAlign (aligned, 14x14) on res4, res5 as the per-RoI head followed by an extra norm,
and for masks a 2x deconvolution on the same res5 features. Losses and their normalisation are
Detectron2's (smooth-L1 with ``SMOOTH_L1_BETA``, RPN losses over ``batch_size_per_image * images``,
mask targets thresholded at 0.5 after an aligned crop).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import roi_align

from ..modeling.norm import freeze_module, norm_layer
from ..modeling.roi_align import RoIAlign

RESNET_BUILDERS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
    152: torchvision.models.resnet152,
}
TRUNK_STAGES = ("layer1", "layer2", "layer3")


class ResNetTrunk(nn.Module):
    """Stem + res2..res4 of a torchvision ResNet, keeping torchvision's parameter names."""

    def __init__(self, resnet: torchvision.models.ResNet, freeze_at: int):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        if freeze_at >= 1:
            self.conv1 = freeze_module(self.conv1)
            self.bn1 = freeze_module(self.bn1)
        for index, name in enumerate(TRUNK_STAGES, start=2):
            if freeze_at >= index:
                setattr(self, name, freeze_module(getattr(self, name)))
        self.out_channels = resnet.layer3[-1].conv1.in_channels

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class DetectronRPN(RegionProposalNetwork):
    """torchvision's RPN with Detectron2's loss: smooth-L1 (beta) and both terms over sampled-anchor capacity."""

    def __init__(self, *args, smooth_l1_beta: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        normalizer = self.fg_bg_sampler.batch_size_per_image * len(labels)
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled_pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        sampled_neg = torch.where(torch.cat(sampled_neg, dim=0))[0]
        sampled = torch.cat([sampled_pos, sampled_neg], dim=0)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled].float(), labels[sampled], reduction="sum"
        ) / normalizer
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[sampled_pos].float(), regression_targets[sampled_pos],
            beta=self.smooth_l1_beta, reduction="sum",
        ) / normalizer
        return objectness_loss, box_loss

    def forward(self, images, features, targets=None):
        boxes, losses = super().forward(images, features, targets)
        if losses:
            losses = {"loss_rpn_cls": losses["loss_objectness"], "loss_rpn_loc": losses["loss_rpn_box_reg"]}
        return boxes, losses


class FastRCNNPredictor(nn.Module):
    """Class scores over K+1 (background = 0) and class-specific deltas over the K foreground classes."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class MaskHeadC4(nn.Module):
    """Detectron2's C4 mask head (``MaskRCNNConvUpsampleHead`` with no convs): 2x deconv, ReLU, per-class 1x1."""

    def __init__(self, in_channels: int, conv_dim: int, num_classes: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x):
        return self.predictor(F.relu(self.deconv(x)))


def fast_rcnn_losses(class_logits, box_deltas, labels, regression_targets, smooth_l1_beta):
    """Cross-entropy over sampled RoIs, and box regression of the true class over the same count."""
    labels = torch.cat(labels, dim=0)
    regression_targets = torch.cat(regression_targets, dim=0)
    loss_cls = F.cross_entropy(class_logits.float(), labels)
    foreground = torch.where(labels > 0)[0]
    deltas = box_deltas.float().reshape(box_deltas.shape[0], -1, 4)[foreground, labels[foreground] - 1]
    loss_box = F.smooth_l1_loss(deltas, regression_targets[foreground], beta=smooth_l1_beta, reduction="sum")
    return loss_cls, loss_box / max(labels.numel(), 1)


def mask_rcnn_loss(mask_logits, proposals, matched_idxs, labels, gt_masks):
    """Per-pixel BCE of the true class's mask against the GT mask cropped to the proposal (aligned, >= 0.5)."""
    size = mask_logits.shape[-1]
    targets = []
    for boxes, idxs, masks in zip(proposals, matched_idxs, gt_masks):
        if boxes.numel() == 0:
            continue
        rois = torch.cat([idxs[:, None].to(boxes), boxes], dim=1)
        crops = roi_align(masks[:, None].to(boxes), rois, (size, size), spatial_scale=1.0, sampling_ratio=0,
                          aligned=True)
        targets.append(crops[:, 0] >= 0.5)
    labels = torch.cat(labels, dim=0)
    if labels.numel() == 0:
        return mask_logits.sum() * 0
    logits = mask_logits[torch.arange(labels.numel(), device=labels.device), labels - 1]
    return F.binary_cross_entropy_with_logits(logits.float(), torch.cat(targets).float())


class Res5ROIHeads(RoIHeads):
    """RoIAlign on res4 -> res5 (+ extra norm) shared by the box predictor and, on foreground RoIs, the mask head.

    torchvision's sampling, matching, box coding and per-class NMS are reused; the forward pass is
    Detectron2's ``Res5ROIHeads``: one res5 pass per sampled RoI in training, and at test time a second
    res5 pass on the final boxes for their masks.
    """

    def __init__(self, res5: nn.Module, out_channels: int, num_classes: int, cfg):
        box_cfg, heads_cfg = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_HEADS
        if box_cfg.POOLER_TYPE != "ROIAlignV2":
            raise NotImplementedError(
                f"ROI_BOX_HEAD.POOLER_TYPE {box_cfg.POOLER_TYPE!r}: only ROIAlignV2 is implemented")
        if len(heads_cfg.IOU_THRESHOLDS) != 1:
            raise NotImplementedError("ROI_HEADS.IOU_THRESHOLDS with an ignore band is not implemented")
        super().__init__(
            box_roi_pool=None,
            box_head=None,
            box_predictor=FastRCNNPredictor(out_channels, num_classes),
            fg_iou_thresh=heads_cfg.IOU_THRESHOLDS[0],
            bg_iou_thresh=heads_cfg.IOU_THRESHOLDS[0],
            batch_size_per_image=heads_cfg.BATCH_SIZE_PER_IMAGE,
            positive_fraction=heads_cfg.POSITIVE_FRACTION,
            bbox_reg_weights=tuple(box_cfg.BBOX_REG_WEIGHTS),
            score_thresh=heads_cfg.SCORE_THRESH_TEST,
            nms_thresh=heads_cfg.NMS_THRESH_TEST,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
        self.pooler = RoIAlign(
            box_cfg.POOLER_RESOLUTION, spatial_scale=1.0 / 16, sampling_ratio=box_cfg.POOLER_SAMPLING_RATIO,
            aligned=True
        )
        self.res5 = res5
        self.mask_head = (MaskHeadC4(out_channels, cfg.MODEL.ROI_MASK_HEAD.CONV_DIM, num_classes)
                          if cfg.MODEL.MASK_ON else None)
        self.append_gt = heads_cfg.PROPOSAL_APPEND_GT
        self.smooth_l1_beta = box_cfg.SMOOTH_L1_BETA

    def has_mask(self):
        return self.mask_head is not None

    def add_gt_proposals(self, proposals, gt_boxes):
        return super().add_gt_proposals(proposals, gt_boxes) if self.append_gt else proposals

    def _res5_features(self, features, boxes):
        return self.res5(self.pooler(features, boxes))

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
            box_features = self._res5_features(features, proposals)
            class_logits, box_deltas = self.box_predictor(box_features.mean(dim=(2, 3)))
            loss_cls, loss_box = fast_rcnn_losses(class_logits, box_deltas, labels, regression_targets,
                                                  self.smooth_l1_beta)
            losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box}
            if self.mask_head is not None:
                foreground = [torch.where(image_labels > 0)[0] for image_labels in labels]
                mask_logits = self.mask_head(box_features[torch.cat(labels) > 0])
                losses["loss_mask"] = mask_rcnn_loss(
                    mask_logits,
                    [p[fg] for p, fg in zip(proposals, foreground)],
                    [m[fg] for m, fg in zip(matched_idxs, foreground)],
                    [lab[fg] for lab, fg in zip(labels, foreground)],
                    [t["masks"] for t in targets],
                )
            return [], losses

        box_features = self._res5_features(features, proposals)
        class_logits, box_deltas = self.box_predictor(box_features.mean(dim=(2, 3)))
        background_deltas = box_deltas.new_zeros(box_deltas.shape[0], 4)
        boxes, scores, labels = self.postprocess_detections(
            class_logits.float(), torch.cat([background_deltas, box_deltas], dim=1).float(), proposals, image_shapes
        )
        results = [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]
        if self.mask_head is not None:
            mask_logits = self.mask_head(self._res5_features(features, boxes)).float()
            all_labels = torch.cat(labels)
            probs = mask_logits[torch.arange(all_labels.numel(), device=all_labels.device), all_labels - 1].sigmoid()
            for result, image_probs in zip(results, probs.split([len(b) for b in boxes])):
                result["mask_probs"] = image_probs[:, None]
        return results, {}


class GeneralizedRCNNC4(nn.Module):
    """Images (0-255, RGB, already resized) in; losses in training, detections in resized coordinates at test."""

    def __init__(self, trunk, rpn, roi_heads, pixel_mean, pixel_std, size_divisibility: int = 0):
        super().__init__()
        self.backbone = trunk
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility

    def preprocess(self, images):
        """Normalise and zero-pad to one batch tensor (padding after normalisation, as Detectron2 does)."""
        normalized = [(img.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std for img in images]
        sizes = [tuple(img.shape[-2:]) for img in normalized]
        height = max(s[0] for s in sizes)
        width = max(s[1] for s in sizes)
        if self.size_divisibility > 1:
            stride = self.size_divisibility
            height, width = (height + stride - 1) // stride * stride, (width + stride - 1) // stride * stride
        batch = normalized[0].new_zeros(len(normalized), 3, height, width)
        for slot, img in zip(batch, normalized):
            slot[:, : img.shape[1], : img.shape[2]].copy_(img)
        return ImageList(batch, sizes)

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("training needs targets")
        image_list = self.preprocess(images)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, {"res4": features}, targets)
        detections, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return detections


def postprocess_detections(detection: dict, resized_size, original_size, mask_threshold: float = 0.5) -> dict:
    """Map one image's detections back to its original resolution; masks become boolean full-image masks."""
    result = {
        "boxes": resize_boxes(detection["boxes"], list(resized_size), list(original_size)),
        "scores": detection["scores"],
        "labels": detection["labels"],
    }
    if "mask_probs" in detection:
        pasted = paste_masks_in_image(detection["mask_probs"], result["boxes"], tuple(original_size))
        result["masks"] = pasted[:, 0] >= mask_threshold
    return result


def build_rcnn_c4(cfg, norm: str) -> GeneralizedRCNNC4:
    """``norm`` is the resolved norm (see ``resolve_norm``); everything else comes from the config."""
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in RESNET_BUILDERS:
        raise ValueError(f"MODEL.RESNETS.DEPTH {depth} is not one of {sorted(RESNET_BUILDERS)}")
    if cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        raise NotImplementedError("MODEL.RESNETS.STRIDE_IN_1X1 True (MSRA/Caffe2 layout) is not implemented; "
                                  "torchvision-layout backbones put the stride in the 3x3 conv")
    resnet = RESNET_BUILDERS[depth](weights=None, norm_layer=norm_layer(norm))
    trunk = ResNetTrunk(resnet, cfg.MODEL.BACKBONE.FREEZE_AT)
    res5_channels = resnet.layer4[-1].conv1.in_channels
    res5 = nn.Sequential(OrderedDict(
        [(str(i), block) for i, block in enumerate(resnet.layer4)] + [("norm", norm_layer(norm)(res5_channels))]
    ))
    if cfg.MODEL.BACKBONE.FREEZE_AT >= 5:
        res5 = freeze_module(res5)

    rpn_cfg = cfg.MODEL.RPN
    sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
    ratios = cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS
    if len(sizes) != 1 or len(ratios) != 1:
        raise ValueError("R50-C4 has one feature map: ANCHOR_GENERATOR.SIZES and ASPECT_RATIOS take one list each")
    anchors = AnchorGenerator((tuple(sizes[0]),), (tuple(ratios[0]),))
    rpn = DetectronRPN(
        anchors,
        RPNHead(trunk.out_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=rpn_cfg.IOU_THRESHOLDS[1],
        bg_iou_thresh=rpn_cfg.IOU_THRESHOLDS[0],
        batch_size_per_image=rpn_cfg.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn_cfg.POSITIVE_FRACTION,
        pre_nms_top_n={"training": rpn_cfg.PRE_NMS_TOPK_TRAIN, "testing": rpn_cfg.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": rpn_cfg.POST_NMS_TOPK_TRAIN, "testing": rpn_cfg.POST_NMS_TOPK_TEST},
        nms_thresh=rpn_cfg.NMS_THRESH,
        smooth_l1_beta=rpn_cfg.SMOOTH_L1_BETA,
    )
    roi_heads = Res5ROIHeads(res5, res5_channels, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg)
    return GeneralizedRCNNC4(trunk, rpn, roi_heads, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)


def load_backbone_weights(model: GeneralizedRCNNC4, backbone_state: dict) -> int:
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
