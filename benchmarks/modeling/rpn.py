"""Detectron2's RPN: a 3x3 conv head shared by every feature map (one for C4, p2..p6 for FPN), anchors matched at
IoU 0.3/0.7 (plus each object's best anchors) over all maps together, 256 sampled anchors per image, and
proposals ranked by their objectness logit: the top-k of each map, NMS per map, the top-k of each image.

Ranking by the logit matters: torchvision ranks by its sigmoid, which is exactly 1.0 in fp32 above a logit
of about 16.6, so confident proposals tie and NMS keeps an arbitrary one of them.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

from .box_regression import Box2BoxTransform, clip_boxes, nonempty
from .matcher import Matcher, subsample_labels


class StandardRPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs for A objectness logits and A x 4 deltas per location."""

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, kernel_size=1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features):
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


def find_top_rpn_proposals(proposals, logits, image_sizes, nms_thresh: float, pre_nms_topk: int,
                           post_nms_topk: int, min_box_size: float, training: bool) -> list:
    """Per image: the top ``pre_nms_topk`` logits of each level, clipped, non-empty, NMS over levels separately,
    the best ``post_nms_topk``. ``proposals``/``logits``: per level, N x R x 4 and N x R."""
    topk_proposals, topk_logits, level_ids = [], [], []
    batch_idx = torch.arange(len(image_sizes), device=proposals[0].device)
    for level, (level_proposals, level_logits) in enumerate(zip(proposals, logits)):
        k = min(level_logits.shape[1], pre_nms_topk)
        level_topk, topk_idx = level_logits.topk(k, dim=1)
        topk_proposals.append(level_proposals[batch_idx[:, None], topk_idx])
        topk_logits.append(level_topk)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=level_logits.device))
    topk_proposals = torch.cat(topk_proposals, dim=1)
    topk_logits = torch.cat(topk_logits, dim=1)
    level_ids = torch.cat(level_ids)

    results = []
    for n, image_size in enumerate(image_sizes):
        boxes, scores, levels = topk_proposals[n], topk_logits[n], level_ids
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        if not valid.all():
            if training:
                raise FloatingPointError("RPN predicted boxes or scores that are Inf/NaN: training has diverged")
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes = clip_boxes(boxes, image_size)
        keep = nonempty(boxes, min_box_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_nms_topk]
        results.append(boxes[keep])
    return results


class RPN(nn.Module):
    """Proposals (per image, XYXY in the resized image, best first) and, in training, Detectron2's two losses."""

    def __init__(self, *, in_features, head: StandardRPNHead, anchor_generator, matcher: Matcher,
                 box2box_transform: Box2BoxTransform, batch_size_per_image: int, positive_fraction: float,
                 pre_nms_topk: dict, post_nms_topk: dict, nms_thresh: float, min_box_size: float,
                 smooth_l1_beta: float):
        super().__init__()
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.smooth_l1_beta = smooth_l1_beta

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: torch.Tensor, gt_boxes: list):
        """Per image: labels 1 / 0 / -1 (sampled positive, sampled negative, ignored) and each anchor's matched box."""
        labels, matched_boxes = [], []
        for boxes in gt_boxes:
            boxes = boxes.float()
            matched_idxs, label = self.anchor_matcher(box_iou(boxes, anchors))
            label = label.to(torch.int64)
            pos_idx, neg_idx = subsample_labels(label, self.batch_size_per_image, self.positive_fraction, 0)
            label.fill_(-1)
            label[pos_idx] = 1
            label[neg_idx] = 0
            labels.append(label)
            matched_boxes.append(boxes[matched_idxs] if len(boxes) else torch.zeros_like(anchors))
        return labels, matched_boxes

    def losses(self, anchors, logits, labels, deltas, matched_boxes) -> dict:
        """BCE over the sampled anchors and L1 / smooth-L1 over the positive ones, both over
        ``batch_size_per_image * images`` (Detectron2's normaliser)."""
        labels = torch.stack(labels)
        positive = labels == 1
        anchors_per_image = anchors.expand(len(labels), -1, -1)
        target_deltas = self.box2box_transform.get_deltas(anchors_per_image[positive],
                                                          torch.stack(matched_boxes)[positive])
        loc_loss = F.smooth_l1_loss(deltas[positive].float(), target_deltas, beta=self.smooth_l1_beta,
                                    reduction="sum")
        valid = labels >= 0
        cls_loss = F.binary_cross_entropy_with_logits(logits[valid].float(), labels[valid].float(), reduction="sum")
        normalizer = self.batch_size_per_image * len(labels)
        return {"loss_rpn_cls": cls_loss / normalizer, "loss_rpn_loc": loc_loss / normalizer}

    def forward(self, image_sizes, features: dict, gt_boxes=None):
        maps = [features[name] for name in self.in_features]
        anchors = self.anchor_generator(maps)
        level_logits, level_deltas = self.rpn_head(maps)
        # (N, A, H, W) -> (N, H*W*A) and (N, A*4, H, W) -> (N, H*W*A, 4): the anchors' order
        level_logits = [x.permute(0, 2, 3, 1).flatten(1) for x in level_logits]
        level_deltas = [x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                        for x in level_deltas]
        losses = {}
        if self.training:
            if gt_boxes is None:
                raise ValueError("the RPN needs ground-truth boxes in training")
            all_anchors = torch.cat(anchors)
            labels, matched_boxes = self.label_and_sample_anchors(all_anchors, gt_boxes)
            losses = self.losses(all_anchors, torch.cat(level_logits, dim=1), labels,
                                 torch.cat(level_deltas, dim=1), matched_boxes)
        with torch.no_grad():
            mode = "training" if self.training else "testing"
            proposals = [self.box2box_transform.apply_deltas(d.reshape(-1, 4), a.repeat(d.shape[0], 1))
                         .view(d.shape[0], -1, 4) for a, d in zip(anchors, level_deltas)]
            proposals = find_top_rpn_proposals(proposals, [x.detach().float() for x in level_logits], image_sizes,
                                               self.nms_thresh, self.pre_nms_topk[mode], self.post_nms_topk[mode],
                                               self.min_box_size, self.training)
        return proposals, losses
