#!/usr/bin/env python
"""Check transferlab's R50-C4 or R50-FPN against Detectron2's with identical weights, on a non-square image.

  /path/to/venv-with-detectron2/bin/python benchmarks/perf/detectron2_parity.py [--arch c4|fpn] [--size 800 1067]
      [--losses]

Needs Detectron2 importable in the running Python (it is never a dependency of transferlab: build it from its
source into a separate venv that also has this checkout installed) and says so plainly when it is absent.
Builds Detectron2's model from MoCo's protocol config (``configs/detectron2/coco_R_50_C4_1x_moco.yaml``, with
MoCo's ``Res5ROIHeadsExtraNorm`` registered here as MoCo's ``train_net.py`` does) and transferlab's from
``configs/detection/coco_R_50_C4_1x.yaml``, gives both the same random weights and non-trivial BN statistics,
and compares, in eval mode and float32:

With ``--arch fpn``: Detectron2's ``configs/detectron2/coco_R_50_FPN_1x_moco.yaml`` (its mask_rcnn_R_50_FPN_1x with
SyncBN in backbone, FPN and heads, 4conv1fc box head) against ``configs/detection/coco_mask_rcnn_R_50_FPN_1x.yaml``,
every norm BN (SyncBN in one process), weights mapped by ``ours_to_detectron2_fpn``; the features are p2..p6, the
anchors and RPN outputs per level, and the RoI heads Detectron2's StandardROIHeads (box head, multi-level pooler).

- the normalised, padded input batch and the res4 features (p2..p6 for FPN; from there on FPN's stages are each
  given identical inputs, see ``compare_fpn``);
- the anchors;
- the RPN's objectness logits and deltas, and the proposals after top-k, clipping and NMS;
- on the same proposals: the RoI head's class scores and box deltas, then the final detections (boxes, scores,
  classes, mask probabilities);
- the detections at the original image size (rescaled boxes, pasted masks);
- with ``--losses``: every training loss on the same image and ground truth (polygon masks), with sampling made
  deterministic by sampling every anchor and every proposal.

Prints the largest absolute difference of each and exits non-zero if any exceeds its tolerance.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

try:
    import detectron2  # noqa: F401
except ImportError:
    sys.exit("detectron2_parity.py: Detectron2 is not installed in this Python, so nothing was compared. Build it "
             "from its source into a separate venv (pip install --no-build-isolation . in a checkout of "
             "facebookresearch/detectron2), install this checkout there too, and run this script with that venv.")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import get_norm  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.postprocessing import detector_postprocess as d2_detector_postprocess  # noqa: E402
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads  # noqa: E402
from detectron2.structures import Boxes, Instances, PolygonMasks  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from benchmarks.detection.config import get_detection_defaults  # noqa: E402
from benchmarks.engine.config import load_config  # noqa: E402
from benchmarks.modeling.fpn import FPNBackbone  # noqa: E402
from benchmarks.modeling.postprocessing import detector_postprocess  # noqa: E402
from benchmarks.modeling.rcnn import build_detector, build_rcnn_c4  # noqa: E402
from converters import to_detectron2_names  # noqa: E402

FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")

# Relative to max(1, largest magnitude). float32 on the same kernels: differences come only from summation order
# (transferlab's CPU RoIAlign is a matrix product; Detectron2 calls torchvision's kernel).
TOLERANCES = {"input": 0.0, "res4": 1e-5,
              # p2..p6 come out of ~55 convolutions (res5 and the FPN's two behind res4), run channels-last here and
              # NCHW in Detectron2: runs measured 6e-6 to 1.1e-5, so 3e-5 leaves summation-order room and no more
              **dict.fromkeys(FPN_LEVELS, 3e-5),
              "anchors": 0.0, "rpn logits": 1e-5, "rpn deltas": 1e-5,
              "proposals": 1e-5, "box scores": 1e-5, "box deltas": 1e-5, "boxes": 1e-5, "scores": 1e-5,
              "classes": 0.0, "mask probs": 1e-5, "pasted masks (pixels)": 0.0, "losses": 1e-5}


if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:
    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """MoCo's detection/train_net.py head: res5 followed by an extra norm."""

        @classmethod
        def _build_res5_block(cls, cfg):
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels


def build_models(num_classes: int, overrides: list):
    ours_cfg = load_config(get_detection_defaults(), REPO / "configs/detection/coco_R_50_C4_1x.yaml",
                           ["MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes), *overrides])
    ours = build_rcnn_c4(ours_cfg, "BN")
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(str(REPO / "configs/detectron2/coco_R_50_C4_1x_moco.yaml"))
    d2_cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN",
                            "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes), *overrides])
    theirs = build_model(d2_cfg)
    return ours, theirs


def build_fpn_models(num_classes: int, overrides: list):
    """transferlab's and Detectron2's R50-FPN Mask R-CNN, every norm (backbone, FPN, heads) plain BN."""
    norms = ["MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "BN",
             "MODEL.ROI_MASK_HEAD.NORM", "BN", "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)]
    ours_cfg = load_config(get_detection_defaults(), REPO / "configs/detection/coco_mask_rcnn_R_50_FPN_1x.yaml",
                           [*norms, *overrides])
    ours = build_detector(ours_cfg, "BN")
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(str(REPO / "configs/detectron2/coco_R_50_FPN_1x_moco.yaml"))
    d2_cfg.merge_from_list(["MODEL.DEVICE", "cpu", *norms, *overrides])
    return ours, build_model(d2_cfg)


def ours_to_detectron2_fpn(state: dict) -> dict:
    """transferlab's R-FPN detector state dict in Detectron2's names: the ResNet as ``tools/convert.py --to
    detectron2`` names it under ``backbone.bottom_up.``; torchvision's FPN blocks (``inner_blocks.i`` = lateral 1x1
    of res{i+2}, ``layer_blocks.i`` = output 3x3; ``.0`` conv, ``.1`` norm) as ``fpn_lateral{i+2}`` /
    ``fpn_output{i+2}`` (with ``.norm``); the heads keep their names, which are Detectron2's."""
    out = {}
    prefix = "backbone.bottom_up."
    trunk = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out.update({prefix + k: v for k, v in to_detectron2_names(trunk).items()})
    for key, value in state.items():
        if key.endswith("num_batches_tracked") or key.startswith(prefix):
            continue
        if key.startswith("backbone.fpn."):
            block, index, part, rest = key[len("backbone.fpn."):].split(".", 3)
            name = {"inner_blocks": "fpn_lateral", "layer_blocks": "fpn_output"}[block] + str(int(index) + 2)
            out[f"backbone.{name}.{rest}" if part == "0" else f"backbone.{name}.norm.{rest}"] = value
        elif key.startswith(("proposal_generator.", "roi_heads.box_head.", "roi_heads.box_predictor.",
                             "roi_heads.mask_head.")):
            out[key] = value
        else:
            raise KeyError(f"no Detectron2 name for {key!r}")
    return out


def random_boxes(height: int, width: int, generator: torch.Generator, count: int = 64) -> torch.Tensor:
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
    extents = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3]) + 16
    return torch.cat([corners, corners + extents], dim=1)


def randomize(model, image: torch.Tensor, seed: int) -> None:
    """Random weights with realistic activations: BN statistics measured on the image (as a pretrained model's
    would be), then BN affine parameters and head biases moved off their initial values so no mismatch hides."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    batch, sizes = model.preprocess([image])
    features = model.backbone(batch)
    boxes = [random_boxes(*sizes[0], generator)]
    if isinstance(features, dict):  # FPN: the box and mask heads' BNs see pooled RoIs too
        maps = [features[name] for name in model.roi_heads.in_features]
        model.roi_heads.box_head(model.roi_heads.box_pooler(maps, boxes))
        model.roi_heads.mask_head(model.roi_heads.mask_pooler(maps, boxes))
    else:
        model.roi_heads._shared_roi_transform(features, boxes)
    model.eval()
    with torch.no_grad():
        for bn in norms:
            bn.momentum = 0.1
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)
        for name, param in model.named_parameters():
            if name.endswith("bias") and name.startswith(("proposal_generator.", "roi_heads.box_predictor.",
                                                          "roi_heads.mask_head.", "roi_heads.box_head.")):
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def ours_to_detectron2(state: dict) -> dict:
    """transferlab's detector state dict in Detectron2's names: the trunk and res5 renamed, the heads as they are."""
    out = {}
    trunk = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out.update({f"backbone.{k}": v for k, v in to_detectron2_names(trunk).items()})
    res5 = {f"layer4.{k[len('roi_heads.res5.'):]}": v for k, v in state.items()
            if k.startswith("roi_heads.res5.") and not k.startswith("roi_heads.res5.norm.")}
    out.update({f"roi_heads.{k}": v for k, v in to_detectron2_names(res5).items()})
    out.update({k: v for k, v in state.items() if k.startswith(("roi_heads.res5.norm.", "proposal_generator.",
                                                                  "roi_heads.box_predictor.", "roi_heads.mask_head."))
                and not k.endswith("num_batches_tracked")})
    return out


def max_diff(a, b) -> float:
    """Largest absolute difference relative to the larger of 1 and the largest magnitude in ``b``."""
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item()) if a.numel() else 0.0


def polygon_ground_truth(height: int, width: int, generator: torch.Generator):
    """Three objects with ellipse polygons inside a ``height`` x ``width`` image, and their boxes and classes."""
    polygons, boxes = [], []
    for _ in range(3):
        w, h = (torch.rand(2, generator=generator) * 0.3 + 0.15).tolist()
        x, y = (torch.rand(2, generator=generator) * 0.5).tolist()
        x, y, w, h = x * width, y * height, w * width, h * height
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        polygon = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1).ravel()
        polygons.append([polygon])
        boxes.append([polygon[0::2].min(), polygon[1::2].min(), polygon[0::2].max(), polygon[1::2].max()])
    return polygons, torch.tensor(boxes, dtype=torch.float32), torch.tensor([0, 3, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1067), metavar=("H", "W"),
                        help="input (resized) image size; non-square and not a multiple of 16 by default")
    parser.add_argument("--original-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="size the detections are mapped back to")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--losses", action="store_true", help="also compare the training losses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=("c4", "fpn"), default="c4", help="R50-C4 (default) or R50-FPN")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    height, width = args.size
    generator = torch.Generator().manual_seed(args.seed)
    image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
    fpn = args.arch == "fpn"
    torch.manual_seed(args.seed)  # the initial weights too, so that a run can be repeated
    ours, theirs = (build_fpn_models if fpn else build_models)(args.num_classes, [])
    randomize(ours, image, args.seed)
    theirs.eval()
    mapped = (ours_to_detectron2_fpn if fpn else ours_to_detectron2)(ours.state_dict())
    missing, unexpected = theirs.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise AssertionError(f"weights do not map one to one: missing {missing}, unexpected {unexpected}")
    print(f"{len(mapped)} tensors copied into Detectron2's model, none missing or left over")
    diffs = compare_fpn(ours, theirs, image, args) if fpn else compare_c4(ours, theirs, image, args)
    if args.losses:
        diffs["losses"] = compare_losses(ours, theirs, image, tuple(image.shape[-2:]), generator)

    failed = False
    for name, value in diffs.items():
        ok = value <= TOLERANCES[name]
        failed |= not ok
        print(f"  {name:<24} max |diff| {value:.3g}  (tolerance {TOLERANCES[name]:g}) {'ok' if ok else 'FAILED'}")
    print("(differences relative to max(1, largest magnitude); pasted masks: pixels that differ)")
    print("Detectron2 and transferlab agree" if not failed else "Detectron2 and transferlab DIFFER")
    return 1 if failed else 0


def canonical_order(scores, classes, boxes) -> torch.Tensor:
    """Detections sorted by score (to 1e-5), then class and box: scores that tie to float noise (random weights make
    many) may come out of NMS in either order, which is no disagreement."""
    keys = [boxes[:, 1].numpy(), boxes[:, 0].numpy(), classes.numpy(), -np.round(scores.numpy(), 5)]
    return torch.as_tensor(np.lexsort(keys))


def compare_detections(ours_det, d2_det, sizes, original, diffs) -> None:
    if len(ours_det["boxes"]) != len(d2_det):
        raise AssertionError(f"{len(ours_det['boxes'])} detections vs Detectron2's {len(d2_det)}")
    order = canonical_order(ours_det["scores"], ours_det["labels"] - 1, ours_det["boxes"])
    ours_det = {key: value[order] for key, value in ours_det.items()}
    d2_det = d2_det[canonical_order(d2_det.scores, d2_det.pred_classes, d2_det.pred_boxes.tensor)]
    diffs["boxes"] = max_diff(ours_det["boxes"], d2_det.pred_boxes.tensor)
    diffs["scores"] = max_diff(ours_det["scores"], d2_det.scores)
    diffs["classes"] = max_diff(ours_det["labels"] - 1, d2_det.pred_classes)
    diffs["mask probs"] = max_diff(ours_det["mask_probs"], d2_det.pred_masks)
    print(f"{len(d2_det)} detections")
    final = detector_postprocess(ours_det, sizes[0], original)
    # the paste itself on identical boxes and probabilities: exact (before Detectron2's postprocess, which scales
    # its boxes in place)
    same = detector_postprocess({**ours_det, "boxes": d2_det.pred_boxes.tensor.clone(),
                                 "mask_probs": d2_det.pred_masks.clone()}, sizes[0], original)
    d2_final = d2_detector_postprocess(d2_det, *original)
    diffs["boxes"] = max(diffs["boxes"], max_diff(final["boxes"], d2_final.pred_boxes.tensor))
    diffs["pasted masks (pixels)"] = float((same["masks"] != d2_final.pred_masks).sum())
    # end to end, pixels whose probability lies within the probabilities' float difference of 0.5 flip; random
    # mask heads put many pixels near 0.5, so this is reported, not checked (the probabilities are)
    flipped = float((final["masks"] != d2_final.pred_masks).sum())
    print(f"pasted masks end to end: {flipped:.0f} of {float(d2_final.pred_masks.sum()):.0f} mask pixels differ")


def compare_fpn(ours, theirs, image, args) -> dict:
    """Padded input, p2..p6, anchors and RPN outputs per level, proposals, the box head on the same proposals,
    detections and masks."""
    diffs = {}
    batch, sizes = ours.preprocess([image])
    d2_images = theirs.preprocess_image([{"image": image}])
    diffs["input"] = max_diff(batch, d2_images.tensor)
    features = ours.backbone(batch)
    d2_features = theirs.backbone(d2_images.tensor)
    for level in FPN_LEVELS:
        diffs[level] = max_diff(features[level], d2_features[level])
    print(f"image {tuple(image.shape[-2:])} padded to {tuple(batch.shape[-2:])}: "
          + ", ".join(f"{k} {tuple(v.shape[-2:])}" for k, v in features.items()))
    # From here each stage gets identical inputs (Detectron2's features, then the same proposals): p2..p6 differ by
    # float summation order (~7e-6: channels-last against NCHW convolutions), which is enough to swap proposals whose
    # logits tie to 1e-5 at the top-k and NMS boundaries; given the same features the RPN must agree exactly.
    features = {name: value.clone() for name, value in d2_features.items()}
    maps = [features[f] for f in ours.proposal_generator.in_features]
    d2_maps = [d2_features[f] for f in theirs.proposal_generator.in_features]
    anchors = ours.proposal_generator.anchor_generator(maps)
    d2_anchors = theirs.proposal_generator.anchor_generator(d2_maps)
    diffs["anchors"] = max(max_diff(a, b.tensor) for a, b in zip(anchors, d2_anchors))
    logits, deltas = ours.proposal_generator.rpn_head(maps)
    d2_logits, d2_deltas = theirs.proposal_generator.rpn_head(d2_maps)
    diffs["rpn logits"] = max(max_diff(a, b) for a, b in zip(logits, d2_logits))
    diffs["rpn deltas"] = max(max_diff(a, b) for a, b in zip(deltas, d2_deltas))

    proposals, _ = ours.proposal_generator(sizes, features)
    d2_proposals, _ = theirs.proposal_generator(d2_images, d2_features)
    diffs["proposals"] = max_diff(proposals[0], d2_proposals[0].proposal_boxes.tensor)
    print(f"{len(proposals[0])} proposals")

    shared = [Instances(sizes[0], proposal_boxes=Boxes(proposals[0].clone()))]
    heads, d2_heads = ours.roi_heads, theirs.roi_heads
    scores, box_deltas = heads.box_predictor(heads.box_head(heads.box_pooler(
        [features[f] for f in heads.in_features], proposals)))
    d2_scores, d2_box_deltas = d2_heads.box_predictor(d2_heads.box_head(d2_heads.box_pooler(
        [d2_features[f] for f in d2_heads.box_in_features], [shared[0].proposal_boxes])))
    diffs["box scores"] = max_diff(scores, d2_scores)
    diffs["box deltas"] = max_diff(box_deltas, d2_box_deltas)
    print(f"box class logits up to {d2_scores.abs().max().item():.4g} in magnitude")

    results, _ = heads(features, proposals, sizes)
    d2_results, _ = d2_heads(d2_images, d2_features, shared)
    compare_detections(results[0], d2_results[0], sizes, tuple(args.original_size), diffs)
    return diffs


def compare_c4(ours, theirs, image, args) -> dict:
    height, width = image.shape[-2:]
    diffs = {}
    batch, sizes = ours.preprocess([image])
    d2_images = theirs.preprocess_image([{"image": image}])
    diffs["input"] = max_diff(batch, d2_images.tensor)
    features = {"res4": ours.backbone(batch)}
    d2_features = theirs.backbone(d2_images.tensor)
    diffs["res4"] = max_diff(features["res4"], d2_features["res4"])
    print(f"image {height}x{width}: res4 {tuple(features['res4'].shape)}")
    # from here on identical inputs, as in compare_fpn: res4's float noise can swap proposals that tie to 1e-5
    features = {"res4": d2_features["res4"].clone()}

    anchors = ours.proposal_generator.anchor_generator([features["res4"]])[0]
    d2_anchors = theirs.proposal_generator.anchor_generator([d2_features["res4"]])[0].tensor
    diffs["anchors"] = max_diff(anchors, d2_anchors)
    logits, deltas = ours.proposal_generator.rpn_head([features["res4"]])
    d2_logits, d2_deltas = theirs.proposal_generator.rpn_head([d2_features["res4"]])
    diffs["rpn logits"] = max_diff(logits[0], d2_logits[0])
    diffs["rpn deltas"] = max_diff(deltas[0], d2_deltas[0])

    proposals, _ = ours.proposal_generator(sizes, features)
    d2_proposals, _ = theirs.proposal_generator(d2_images, d2_features)
    diffs["proposals"] = max_diff(proposals[0], d2_proposals[0].proposal_boxes.tensor)
    print(f"{len(proposals[0])} proposals")

    # the RoI heads on the same proposals: Detectron2's
    shared = [Instances(sizes[0], proposal_boxes=Boxes(proposals[0].clone()))]
    box_features = ours.roi_heads._shared_roi_transform(features["res4"], proposals)
    scores, box_deltas = ours.roi_heads.box_predictor(box_features.mean(dim=(2, 3)))
    d2_box_features = theirs.roi_heads._shared_roi_transform([d2_features["res4"]], [shared[0].proposal_boxes])
    d2_scores, d2_box_deltas = theirs.roi_heads.box_predictor(d2_box_features.mean(dim=[2, 3]))
    diffs["box scores"] = max_diff(scores, d2_scores)
    diffs["box deltas"] = max_diff(box_deltas, d2_box_deltas)

    results, _ = ours.roi_heads(features, proposals, sizes)
    d2_results, _ = theirs.roi_heads(d2_images, d2_features, shared)
    compare_detections(results[0], d2_results[0], sizes, tuple(args.original_size), diffs)
    return diffs


class SharedFeatures(torch.nn.Module):
    """Detectron2's backbone in place of transferlab's (copies of its features)."""

    def __init__(self, backbone):
        super().__init__()
        self.d2_backbone = [backbone]  # a list: not registered as a submodule of ours

    def forward(self, batch):
        # NCHW, as Detectron2 feeds its own backbone: the same kernels, so bit-identical features
        features = self.d2_backbone[0](batch.contiguous())
        return {name: value.clone() for name, value in features.items()}


def compare_losses(ours, theirs, image, size, generator) -> float:
    """Training losses on one image with polygon masks; every anchor and proposal sampled, so both sample the same."""
    from benchmarks.modeling.masks import PolygonMasks as OurPolygonMasks
    torch.set_grad_enabled(True)
    for model in (ours, theirs):
        model.train()
    for rpn in (ours.proposal_generator, theirs.proposal_generator):
        rpn.batch_size_per_image = 10**7
    ours.roi_heads.batch_size_per_image = theirs.roi_heads.batch_size_per_image = 10**7
    ours.roi_heads.positive_fraction = theirs.roi_heads.positive_fraction = 1.0
    polygons, boxes, classes = polygon_ground_truth(*size, generator)
    target = {"boxes": boxes, "labels": classes + 1, "masks": OurPolygonMasks(polygons, size)}
    instances = Instances(size, gt_boxes=Boxes(boxes.clone()), gt_classes=classes.clone(),
                          gt_masks=PolygonMasks([[p.copy() for p in object_polygons] for object_polygons in polygons]))
    # BN layers normalise with batch statistics in training; use their running statistics in both for an exact match
    for model in (ours, theirs):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    if isinstance(ours.backbone, FPNBackbone):
        # the same features for both, as in compare_fpn: float noise in p2..p6 changes which proposals survive
        # top-k and NMS, and so which RoIs are sampled; the features themselves are compared there
        ours_backbone, ours.backbone = ours.backbone, SharedFeatures(theirs.backbone)
    losses = ours([image], [target])
    if isinstance(ours.backbone, SharedFeatures):
        ours.backbone = ours_backbone
    with EventStorage():
        d2_losses = theirs([{"image": image, "instances": instances}])
    worst = 0.0
    for name in sorted(d2_losses):
        worst = max(worst, abs(losses[name].item() - d2_losses[name].item()) / max(1.0, abs(d2_losses[name].item())))
        print(f"  {name:<14} transferlab {losses[name].item():.6f}  Detectron2 {d2_losses[name].item():.6f}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
