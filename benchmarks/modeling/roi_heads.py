"""Detectron2's RoI heads: ``Res5ROIHeads`` (R50-C4; MoCo's ``Res5ROIHeadsExtraNorm`` when res5 ends in a norm)
and ``StandardROIHeads`` (R50-FPN).

C4: RoIAlign on res4, res5 per RoI, average pooling, the box predictor; for masks the mask head runs on the
same res5 features of the foreground RoIs in training, and on a second res5 pass over the final boxes at
test time. FPN: multi-level RoIAlign (7x7) into the box head and predictor; the mask branch pools its own
14x14 features, from the foreground proposals in training and from the final boxes at test time.
"""
import torch
from torch import nn
from torchvision.ops import box_iou

from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import mask_rcnn_inference, mask_rcnn_loss
from .matcher import Matcher, subsample_labels


class ROIHeads(nn.Module):
    """What both heads share: proposal matching and sampling, the box predictor, the mask loss and inference.

    ``leading`` modules are registered first (C4's pooler and res5), which keeps the parameter order, and so the
    order of optimizer state in checkpoints, what it was before the heads shared this class.
    """

    def __init__(self, *, leading: dict, box_predictor: FastRCNNOutputLayers, mask_head: nn.Module | None,
                 matcher: Matcher, batch_size_per_image: int, positive_fraction: float, proposal_append_gt: bool):
        super().__init__()
        for name, module in leading.items():
            setattr(self, name, module)
        self.box_predictor = box_predictor
        self.mask_head = mask_head
        self.proposal_matcher = matcher
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.num_classes = box_predictor.num_classes

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: list, targets: list) -> list:
        """Per image: the sampled RoIs with their class (K = background), matched box and matched object index."""
        sampled = []
        for boxes, target in zip(proposals, targets):
            gt_boxes = target["boxes"].float()
            gt_classes = target["labels"] - 1  # dataset labels 1..K -> Detectron2's 0..K-1
            if self.proposal_append_gt:
                boxes = torch.cat([boxes, gt_boxes])
            matched_idxs, matched_labels = self.proposal_matcher(box_iou(gt_boxes, boxes))
            if len(gt_boxes):
                classes = gt_classes[matched_idxs]
                classes[matched_labels == 0] = self.num_classes
                classes[matched_labels == -1] = -1
            else:
                classes = torch.full_like(matched_idxs, self.num_classes)
            pos_idx, neg_idx = subsample_labels(classes, self.batch_size_per_image, self.positive_fraction,
                                                self.num_classes)
            index = torch.cat([pos_idx, neg_idx])
            sampled.append({
                "proposal_boxes": boxes[index],
                "gt_classes": classes[index],
                "gt_boxes": gt_boxes[matched_idxs[index]] if len(gt_boxes) else boxes[index],
                "gt_indices": matched_idxs[index],
            })
        return sampled

    def foreground(self, sampled: list) -> list:
        """Per image, which sampled RoIs are foreground (the mask branch trains on those only)."""
        return [(s["gt_classes"] >= 0) & (s["gt_classes"] < self.num_classes) for s in sampled]

    def box_losses(self, scores, deltas, sampled: list) -> dict:
        return self.box_predictor.losses(
            scores, deltas, torch.cat([s["proposal_boxes"] for s in sampled]),
            torch.cat([s["gt_classes"] for s in sampled]), torch.cat([s["gt_boxes"] for s in sampled]))

    def mask_loss(self, mask_logits, sampled: list, foreground: list, targets: list):
        return mask_rcnn_loss(
            mask_logits,
            [s["proposal_boxes"][fg] for s, fg in zip(sampled, foreground)],
            [s["gt_classes"][fg] for s, fg in zip(sampled, foreground)],
            [t["masks"] for t in targets],
            [s["gt_indices"][fg] for s, fg in zip(sampled, foreground)],
        )

    def detections(self, scores, deltas, proposals: list, image_sizes) -> list:
        """Per image ``{"boxes", "scores", "labels"}`` with the dataset's labels 1..K."""
        detections = self.box_predictor.inference(scores, deltas, proposals, image_sizes)
        return [{"boxes": boxes, "scores": det_scores, "labels": classes + 1}
                for boxes, det_scores, classes in detections]

    @staticmethod
    def attach_masks(results: list, mask_logits) -> None:
        for result, probs in zip(results, mask_rcnn_inference(mask_logits, [r["labels"] - 1 for r in results])):
            result["mask_probs"] = probs


class Res5ROIHeads(ROIHeads):
    def __init__(self, *, in_feature: str, pooler: nn.Module, res5: nn.Module, **kwargs):
        super().__init__(leading={"pooler": pooler, "res5": res5}, **kwargs)
        self.in_feature = in_feature

    def _shared_roi_transform(self, features, boxes: list):
        x = self.pooler(features, boxes)
        if x.device.type == "cpu":  # res5 in the CPU's faster layout, as the trunk (GeneralizedRCNN.preprocess)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.res5(x)

    def forward(self, features: dict, proposals: list, image_sizes, targets=None):
        x = features[self.in_feature]
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training")
            sampled = self.label_and_sample_proposals(proposals, targets)
            box_features = self._shared_roi_transform(x, [s["proposal_boxes"] for s in sampled])
            scores, deltas = self.box_predictor(box_features.mean(dim=(2, 3)))
            losses = self.box_losses(scores, deltas, sampled)
            if self.mask_head is not None:
                foreground = self.foreground(sampled)
                mask_logits = self.mask_head(box_features[torch.cat(foreground)])
                losses["loss_mask"] = self.mask_loss(mask_logits, sampled, foreground, targets)
            return [], losses

        box_features = self._shared_roi_transform(x, proposals)
        scores, deltas = self.box_predictor(box_features.mean(dim=(2, 3)))
        results = self.detections(scores, deltas, proposals, image_sizes)
        if self.mask_head is not None:
            self.attach_masks(results, self.mask_head(self._shared_roi_transform(x, [r["boxes"] for r in results])))
        return results, {}


class StandardROIHeads(ROIHeads):
    """Detectron2's ``StandardROIHeads``: separate poolers and heads for boxes and masks on the FPN levels."""

    def __init__(self, *, in_features, box_pooler: nn.Module, box_head: nn.Module, mask_pooler: nn.Module | None,
                 **kwargs):
        super().__init__(leading={"box_pooler": box_pooler, "box_head": box_head, "mask_pooler": mask_pooler},
                         **kwargs)
        self.in_features = list(in_features)

    def forward(self, features: dict, proposals: list, image_sizes, targets=None):
        maps = [features[name] for name in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training")
            sampled = self.label_and_sample_proposals(proposals, targets)
            box_features = self.box_head(self.box_pooler(maps, [s["proposal_boxes"] for s in sampled]))
            scores, deltas = self.box_predictor(box_features)
            losses = self.box_losses(scores, deltas, sampled)
            if self.mask_head is not None:
                foreground = self.foreground(sampled)
                mask_features = self.mask_pooler(maps, [s["proposal_boxes"][fg] for s, fg in zip(sampled, foreground)])
                losses["loss_mask"] = self.mask_loss(self.mask_head(mask_features), sampled, foreground, targets)
            return [], losses

        scores, deltas = self.box_predictor(self.box_head(self.box_pooler(maps, proposals)))
        results = self.detections(scores, deltas, proposals, image_sizes)
        if self.mask_head is not None:
            self.attach_masks(results, self.mask_head(self.mask_pooler(maps, [r["boxes"] for r in results])))
        return results, {}
