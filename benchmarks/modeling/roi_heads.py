"""Detectron2's ``Res5ROIHeads`` (MoCo's ``Res5ROIHeadsExtraNorm`` when res5 ends in a norm).

RoIAlign on res4, res5 per RoI, average pooling, the box predictor; for masks the mask head runs on the
same res5 features of the foreground RoIs in training, and on a second res5 pass over the final boxes at
test time.
"""
import torch
from torch import nn
from torchvision.ops import box_iou

from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import mask_rcnn_inference, mask_rcnn_loss
from .matcher import Matcher, subsample_labels


class Res5ROIHeads(nn.Module):
    def __init__(self, *, in_feature: str, pooler: nn.Module, res5: nn.Module, box_predictor: FastRCNNOutputLayers,
                 mask_head: nn.Module | None, matcher: Matcher, batch_size_per_image: int, positive_fraction: float,
                 proposal_append_gt: bool):
        super().__init__()
        self.in_feature = in_feature
        self.pooler = pooler
        self.res5 = res5
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
            losses = self.box_predictor.losses(
                scores, deltas, torch.cat([s["proposal_boxes"] for s in sampled]),
                torch.cat([s["gt_classes"] for s in sampled]), torch.cat([s["gt_boxes"] for s in sampled]))
            if self.mask_head is not None:
                foreground = [(s["gt_classes"] >= 0) & (s["gt_classes"] < self.num_classes) for s in sampled]
                mask_logits = self.mask_head(box_features[torch.cat(foreground)])
                losses["loss_mask"] = mask_rcnn_loss(
                    mask_logits,
                    [s["proposal_boxes"][fg] for s, fg in zip(sampled, foreground)],
                    [s["gt_classes"][fg] for s, fg in zip(sampled, foreground)],
                    [t["masks"] for t in targets],
                    [s["gt_indices"][fg] for s, fg in zip(sampled, foreground)],
                )
            return [], losses

        box_features = self._shared_roi_transform(x, proposals)
        scores, deltas = self.box_predictor(box_features.mean(dim=(2, 3)))
        detections = self.box_predictor.inference(scores, deltas, proposals, image_sizes)
        results = [{"boxes": boxes, "scores": det_scores, "labels": classes + 1}
                   for boxes, det_scores, classes in detections]
        if self.mask_head is not None:
            mask_logits = self.mask_head(self._shared_roi_transform(x, [r["boxes"] for r in results]))
            for result, probs in zip(results, mask_rcnn_inference(mask_logits, [r["labels"] - 1 for r in results])):
                result["mask_probs"] = probs
        return results, {}
