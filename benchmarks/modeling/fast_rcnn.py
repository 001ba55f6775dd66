"""Detectron2's ``FastRCNNOutputLayers``: class scores and class-specific box deltas, their losses and inference.

Class indices are Detectron2's: foreground classes 0..K-1 and background K (the last score column), so
the predictor's weights have Detectron2's layout. The dataset's labels (1..K) are converted at the edges.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from .box_regression import Box2BoxTransform, clip_boxes


class FastRCNNOutputLayers(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, box2box_transform: Box2BoxTransform,
                 smooth_l1_beta: float, test_score_thresh: float, test_nms_thresh: float, test_topk_per_image: int):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)

    def losses(self, scores, deltas, proposal_boxes, gt_classes, gt_boxes) -> dict:
        """Mean cross-entropy over the sampled RoIs; box regression of the true class over the same count."""
        if gt_classes.numel() == 0:
            zero = scores.sum() * 0.0 + deltas.sum() * 0.0
            return {"loss_cls": zero, "loss_box_reg": zero}
        loss_cls = F.cross_entropy(scores.float(), gt_classes, reduction="mean")
        foreground = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes), as_tuple=True)[0]
        fg_deltas = deltas.view(-1, self.num_classes, 4)[foreground, gt_classes[foreground]].float()
        targets = self.box2box_transform.get_deltas(proposal_boxes[foreground], gt_boxes[foreground])
        loss_box = F.smooth_l1_loss(fg_deltas, targets, beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box / max(gt_classes.numel(), 1)}

    def inference(self, scores, deltas, proposals: list, image_sizes) -> list:
        """Per image: ``(boxes, scores, classes)`` after the score threshold, per-class NMS and the top-k."""
        num_per_image = [len(p) for p in proposals]
        boxes = self.box2box_transform.apply_deltas(deltas, torch.cat(proposals)) if proposals else deltas
        probs = F.softmax(scores.float(), dim=-1)
        return [self._inference_single_image(b, p, size) for b, p, size in
                zip(boxes.split(num_per_image), probs.split(num_per_image), image_sizes)]

    def _inference_single_image(self, boxes, scores, image_size):
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        if not valid.all():
            boxes, scores = boxes[valid], scores[valid]
        scores = scores[:, :-1]
        boxes = clip_boxes(boxes.view(-1, self.num_classes, 4), image_size)
        keep_mask = scores > self.test_score_thresh
        indices = keep_mask.nonzero()
        boxes, scores, classes = boxes[keep_mask], scores[keep_mask], indices[:, 1]
        keep = batched_nms(boxes, scores, classes, self.test_nms_thresh)
        if self.test_topk_per_image >= 0:
            keep = keep[:self.test_topk_per_image]
        return boxes[keep], scores[keep], classes[keep]
