"""R50-FPN against Detectron2's definitions: level assignment, anchors per level, proposal selection per level and
per image, padded FPN shapes, initialisation, Faster/Mask R-CNN FPN forward and backward, backbone weight loading,
config validation and one end-to-end run of the task (ResNet-18 and tiny inputs throughout, for speed)."""
import json
import math

import pytest
import torch
import torchvision

from benchmarks.detection.config import get_detection_defaults, validate_detection_config
from benchmarks.engine.config import ConfigError, load_config
from benchmarks.modeling import rpn as rpn_module
from benchmarks.modeling.fpn import FPNBackbone
from benchmarks.modeling.masks import BitMasks
from benchmarks.modeling.poolers import ROIPooler, assign_boxes_to_levels
from benchmarks.modeling.rcnn import build_detector, load_backbone_weights
from benchmarks.modeling.roi_align import RoIAlign
from benchmarks.modeling.rpn import find_top_rpn_proposals

from .conftest import REPO
from .test_detection_engine import run_tool

FPN_MASK = REPO / "configs/detection/coco_mask_rcnn_R_50_FPN_1x.yaml"
FPN_FASTER = REPO / "configs/detection/coco_faster_rcnn_R_50_FPN_1x.yaml"


def fpn_cfg(*overrides, path=FPN_MASK, depth=18, norm="BN"):
    """The shipped FPN recipe on ResNet-18 with 3 classes and 16 RoIs per image; heads' norms as ``norm``."""
    return load_config(get_detection_defaults(), path, [
        "MODEL.RESNETS.DEPTH", str(depth), "MODEL.ROI_HEADS.NUM_CLASSES", "3",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
        "TEST.DETECTIONS_PER_IMAGE", "20",
        "MODEL.FPN.NORM", norm, "MODEL.ROI_BOX_HEAD.NORM", norm, "MODEL.ROI_MASK_HEAD.NORM", norm, *overrides])


def two_images():
    images = [torch.randint(0, 255, (3, 100, 133), dtype=torch.uint8),
              torch.randint(0, 255, (3, 90, 72), dtype=torch.uint8)]
    masks = [torch.zeros(1, 100, 133, dtype=torch.bool), torch.zeros(2, 90, 72, dtype=torch.bool)]
    masks[0][0, 10:70, 20:110] = True
    masks[1][0, 5:40, 5:40] = True
    masks[1][1, 40:85, 30:70] = True
    targets = [
        {"boxes": torch.tensor([[20.0, 10, 110, 70]]), "labels": torch.tensor([1]), "masks": BitMasks(masks[0])},
        {"boxes": torch.tensor([[5.0, 5, 40, 40], [30, 40, 70, 85]]), "labels": torch.tensor([2, 3]),
         "masks": BitMasks(masks[1])},
    ]
    return images, targets


# ---- level assignment and pooling --------------------------------------------------------------------------------

def test_assign_boxes_to_levels_hand_computed():
    """level = floor(4 + log2(sqrt(area) / 224 + 1e-8)) clamped to [2, 5], returned from 2 (FPN eq. 1)."""
    def square(side):
        return [0.0, 0.0, float(side), float(side)]
    boxes = torch.tensor([square(224), square(223), square(112), square(111), square(448), square(447),
                          square(10), square(2000), [0.0, 0.0, 448.0, 112.0]])
    # 224 -> 4 exactly; 223 -> log2 < 0 -> 3; 112 -> 3 (the eps keeps log2(0.5) from rounding below -1); 111 -> 2;
    # 448 -> 5; 447 -> 4; 10 -> clamped to 2; 2000 -> clamped to 5; 448 x 112 has sqrt(area) 224 -> 4
    expected = torch.tensor([4, 3, 3, 2, 5, 4, 2, 5, 4]) - 2
    split = [boxes[:4], boxes[4:]]  # two images: the result is over their concatenation
    assert assign_boxes_to_levels(split, 2, 5).tolist() == expected.tolist()


def test_multilevel_pooler_equals_roi_align_on_each_box_level():
    """The one-matrix CPU pooler gives, RoI by RoI, what torchvision's RoIAlign gives on the RoI's level.

    Tolerance 1e-5: the same bilinear weights summed in another order (a sparse matrix product vs the kernel's
    loop), float32 features of magnitude ~1."""
    torch.manual_seed(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    features = [torch.randn(2, 8, 128 // s, 96 // s) for s in (4, 8, 16, 32)]
    boxes = [torch.tensor([[3.0, 5.0, 40.0, 30.0], [10.0, 0.0, 160.0, 110.0], [0.0, 0.0, 300.0, 250.0]]),
             torch.tensor([[50.0, 60.0, 52.0, 61.0], [7.5, 7.5, 90.25, 70.0]])]
    pooled = ROIPooler(7, scales, 0)(features, boxes)
    levels = assign_boxes_to_levels(boxes, 2, 5)
    assert set(levels.tolist()) == {0, 1, 2}  # several levels really are mixed in one image
    row = 0
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes:
            level = levels[row].item()
            reference = torchvision.ops.roi_align(features[level][image:image + 1], [box[None]], 7, scales[level],
                                                  0, aligned=True)
            torch.testing.assert_close(pooled[row:row + 1], reference, rtol=0, atol=1e-5)
            row += 1


def test_multilevel_pooler_gradient_matches_torchvision():
    """Backward through the sparse product equals torchvision's RoIAlign backward (tolerance as above)."""
    torch.manual_seed(1)
    scales = [1 / 4, 1 / 8]
    features = [torch.randn(2, 4, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(),
                torch.randn(2, 4, 8, 8, requires_grad=True)]  # the layout does not matter, only speed
    boxes = [torch.tensor([[2.0, 3.0, 20.0, 30.0], [0.0, 0.0, 100.0, 130.0]]), torch.tensor([[5.0, 5.0, 50.0, 40.0]])]
    weights = torch.randn(3, 4, 5, 5)
    (ROIPooler(5, scales, 2)(features, boxes) * weights).sum().backward()
    ours = [f.grad.clone() for f in features]
    for f in features:
        f.grad = None
    levels = assign_boxes_to_levels(boxes, 2, 3).tolist()
    assert levels == [0, 1, 0]
    images = [0, 0, 1]
    flat = torch.cat(boxes)
    total = sum((torchvision.ops.roi_align(features[level][images[i]:images[i] + 1], [flat[i:i + 1]], 5,
                                           scales[level], 2, aligned=True) * weights[i:i + 1]).sum()
                for i, level in enumerate(levels))
    total.backward()
    for mine, theirs in zip(ours, features):
        torch.testing.assert_close(mine, theirs.grad, rtol=0, atol=1e-5)


def test_single_level_pooler_is_the_c4_roi_align():
    pooler = ROIPooler(7, [1 / 16], 0)
    assert isinstance(pooler.single, RoIAlign)
    with pytest.raises(ValueError, match="consecutive"):
        ROIPooler(7, [1 / 4, 1 / 16], 0)


# ---- backbone, anchors, RPN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(100, 133), (133, 100)])
def test_fpn_features_on_odd_sized_images_are_padded_to_32(height, width):
    model = build_detector(fpn_cfg(), "BN").eval()
    with torch.no_grad():
        batch, sizes = model.preprocess([torch.zeros(3, height, width, dtype=torch.uint8)])
        features = model.backbone(batch)
    padded = (math.ceil(height / 32) * 32, math.ceil(width / 32) * 32)
    assert tuple(batch.shape[-2:]) == padded and sizes == [(height, width)]
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    for level, name in enumerate(features, start=2):
        stride = 2 ** level
        # p6 is max-pool(kernel 1, stride 2) of p5: ceil of half of p5
        expected = (math.ceil(padded[0] / stride), math.ceil(padded[1] / stride))
        assert features[name].shape == (1, 256, *expected), name


def test_fpn_initialisation_is_detectron2s_c2_xavier_fill():
    """kaiming_uniform(a=1): |w| <= sqrt(3 / fan_in), std sqrt(1 / fan_in); zero bias without norm, none with."""
    plain = build_detector(fpn_cfg(norm=""), "BN").backbone.fpn
    for conv in [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)]:
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= math.sqrt(3 / fan_in) + 1e-7
        # 3 sigma of the std estimate over >= 16k weights is under 3%; 10% leaves room and still fails other inits
        assert conv.weight.std().item() == pytest.approx(math.sqrt(1 / fan_in), rel=0.1)
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    normed = build_detector(fpn_cfg(norm="BN"), "BN").backbone.fpn
    assert all(m.bias is None for m in normed.modules() if isinstance(m, torch.nn.Conv2d))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in normed.modules()) == 8


def test_anchors_one_size_per_level_on_strides_4_to_64():
    model = build_detector(fpn_cfg(), "BN").eval()
    features = [torch.zeros(1, 1, 64 // s, 96 // s) for s in (4, 8, 16, 32, 64)]
    anchors = model.proposal_generator.anchor_generator(features)
    for level, (level_anchors, feature) in enumerate(zip(anchors, features)):
        stride, size = 4 * 2 ** level, 32 * 2 ** level
        rows, cols = feature.shape[-2:]
        assert level_anchors.shape == (rows * cols * 3, 4)
        widths = level_anchors[:, 2] - level_anchors[:, 0]
        heights = level_anchors[:, 3] - level_anchors[:, 1]
        # exact sizes in float32 arithmetic: relative 1e-6 is a few ulps
        torch.testing.assert_close(widths * heights, torch.full_like(widths, float(size**2)), rtol=1e-6, atol=0)
        torch.testing.assert_close((heights / widths)[:3], torch.tensor([0.5, 1.0, 2.0]), rtol=1e-6, atol=0)
        centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2
        # offset 0: the first centre is the image's corner, the last the last cell's corner
        torch.testing.assert_close(centres[0], torch.zeros(2), rtol=0, atol=1e-4)
        torch.testing.assert_close(centres[-1], torch.tensor([(cols - 1) * stride, (rows - 1) * stride],
                                                             dtype=torch.float32), rtol=0, atol=1e-4)


def test_top_k_per_level_nms_per_level_and_top_k_per_image():
    """Level 0 holds boxes A (logit 5), A' (4, IoU 0.81 with A) and B (3); level 1 holds A'' (2, same box as A) and
    C (1), D (0.5). pre-NMS top-2 per level keeps A, A' | A'', C; NMS per level drops A' but not A'' (another level);
    post-NMS top-3 per image keeps A, A'', C. The second image gets its own selection."""
    a, a2, b = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [20.0, 20.0, 30.0, 30.0]
    c, d = [40.0, 0.0, 50.0, 10.0], [0.0, 40.0, 10.0, 50.0]
    level0 = torch.tensor([[a, a2, b], [b, a, a2]])
    level1 = torch.tensor([[a, c, d], [c, d, a]])
    logits0 = torch.tensor([[5.0, 4.0, 3.0], [1.0, 2.0, 3.0]])
    logits1 = torch.tensor([[2.0, 1.0, 0.5], [0.0, 4.0, 5.0]])
    kept = find_top_rpn_proposals([level0, level1], [logits0, logits1], [(60, 60), (60, 60)], nms_thresh=0.7,
                                  pre_nms_topk=2, post_nms_topk=3, min_box_size=0.0, training=True)
    torch.testing.assert_close(kept[0], torch.tensor([a, a, c]))
    # image 2: level 0 top-2 is a2 (3), a (2), NMS keeps a2; level 1 top-2 is a (5), d (4); ranked 5, 4, 3
    torch.testing.assert_close(kept[1], torch.tensor([a, d, a2]))


def test_rpn_uses_training_and_testing_top_k(monkeypatch):
    """Base-RCNN-FPN: 2000 per level / 1000 per image in training, 1000 / 1000 at test."""
    calls = []
    original = rpn_module.find_top_rpn_proposals

    def spy(proposals, logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk, min_box_size, training):
        calls.append((len(proposals), pre_nms_topk, post_nms_topk, training))
        return original(proposals, logits, image_sizes, nms_thresh, pre_nms_topk, post_nms_topk, min_box_size,
                        training)
    monkeypatch.setattr(rpn_module, "find_top_rpn_proposals", spy)
    cfg = load_config(get_detection_defaults(), FPN_FASTER, [  # the 2fc head of Base-RCNN-FPN: cheaper on 1000 RoIs
        "MODEL.RESNETS.DEPTH", "18", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.ROI_BOX_HEAD.NUM_CONV", "0",
        "MODEL.ROI_BOX_HEAD.NUM_FC", "2", "TEST.DETECTIONS_PER_IMAGE", "20"])
    model = build_detector(cfg, "BN")
    images, targets = two_images()
    model.train()
    model(images, targets)
    model.eval()
    with torch.no_grad():
        model(images)
    assert calls == [(5, 2000, 1000, True), (5, 1000, 1000, False)]


# ---- the detectors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask_on", [False, True])
def test_fpn_detector_trains_and_predicts(mask_on):
    torch.manual_seed(0)
    model = build_detector(fpn_cfg("MODEL.MASK_ON", str(mask_on)), "BN")
    assert isinstance(model.backbone, FPNBackbone)
    images, targets = two_images()
    model.train()
    losses = model(images, targets)
    expected = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} | ({"loss_mask"} if mask_on else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    trained = ["backbone.bottom_up.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
               "backbone.fpn.layer_blocks.3.0.weight", "roi_heads.box_head.conv1.weight",
               "roi_heads.box_head.fc1.weight", "proposal_generator.rpn_head.conv.weight",
               "roi_heads.box_predictor.cls_score.weight"]
    if mask_on:
        trained += ["roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head.predictor.weight"]
    parameters = dict(model.named_parameters())
    for name in trained:
        assert parameters[name].grad is not None and parameters[name].grad.abs().sum() > 0, name

    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0  # an untrained model: keep every detection
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert 0 < len(detection["boxes"]) <= 20
        assert (detection["boxes"][:, 2] <= image.shape[2]).all() and (detection["boxes"][:, 3] <= image.shape[1]).all()
        assert set(detection["labels"].tolist()) <= {1, 2, 3}
        if mask_on:
            assert detection["mask_probs"].shape == (len(detection["boxes"]), 1, 28, 28)
        else:
            assert "mask_probs" not in detection


def test_box_and_mask_heads_have_detectron2s_structure():
    model = build_detector(fpn_cfg(), "BN")
    names = set(model.state_dict())
    assert {"roi_heads.box_head.conv4.norm.weight", "roi_heads.box_head.fc1.weight",
            "roi_heads.mask_head.mask_fcn4.norm.running_var", "roi_heads.mask_head.deconv.weight"} <= names
    assert "roi_heads.box_head.conv1.bias" not in names and "roi_heads.box_head.fc2.weight" not in names
    assert model.roi_heads.box_predictor.cls_score.in_features == 1024
    two_fc = build_detector(fpn_cfg("MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2"), "BN")
    assert two_fc.roi_heads.box_head.fc1.in_features == 256 * 7 * 7
    assert not any(name.startswith("roi_heads.box_head.conv") for name in two_fc.state_dict())


def test_freeze_at_freezes_the_stem_and_stages_including_res5():
    model = build_detector(fpn_cfg("MODEL.BACKBONE.FREEZE_AT", "5"), "BN")
    bottom_up = model.backbone.bottom_up
    assert not any(p.requires_grad for p in bottom_up.parameters())
    assert isinstance(bottom_up.layer4[0].bn1, torchvision.ops.FrozenBatchNorm2d)
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    model = build_detector(fpn_cfg("MODEL.BACKBONE.FREEZE_AT", "2"), "BN")
    assert not any(p.requires_grad for p in model.backbone.bottom_up.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.bottom_up.layer2.parameters())


def test_backbone_weights_cover_every_fpn_bottom_up_tensor(resnet18):
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")}
    model = build_detector(fpn_cfg(), "BN")
    assert load_backbone_weights(model, state) == len(state)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone.bottom_up(x)
        expected = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x))))
        for index, stage in enumerate(("layer1", "layer2", "layer3", "layer4"), start=2):
            expected = getattr(resnet18, stage)(expected)
            torch.testing.assert_close(features[f"res{index}"], expected, rtol=0, atol=0)
    incomplete = {k: v for k, v in state.items() if k != "layer4.1.conv2.weight"}
    with pytest.raises(KeyError, match="not in the checkpoint"):
        load_backbone_weights(model, incomplete)
    with pytest.raises(KeyError, match="fpn_lateral2"):
        load_backbone_weights(model, {**state, "fpn_lateral2.weight": torch.zeros(1)})
    wrong = {**state, "layer4.0.conv1.weight": torch.zeros(3, 3, 3, 3)}
    with pytest.raises(ValueError, match="shape"):
        load_backbone_weights(model, wrong)


# ---- config validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["coco_mask_rcnn_R_50_FPN_1x.yaml", "coco_faster_rcnn_R_50_FPN_1x.yaml",
                                  "coco_mask_rcnn_R_50_FPN_demo.yaml", "coco_faster_rcnn_R_50_FPN_demo.yaml"])
def test_shipped_fpn_configs_validate_and_say_the_protocol(name):
    cfg = load_config(get_detection_defaults(), REPO / "configs/detection" / name, [])
    validate_detection_config(cfg, world_size=1)
    assert cfg.MODEL.RESNETS.NORM == cfg.MODEL.FPN.NORM == cfg.MODEL.ROI_BOX_HEAD.NORM == "SyncBN"
    assert cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)


FPN_CASES = [
    ("MODEL.FPN.NORM", "LN", ConfigError, "one of '', 'GN'"),
    ("MODEL.FPN.FUSE_TYPE", "avg", NotImplementedError, "sums top-down and lateral"),
    ("MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"], NotImplementedError, "other stage sets"),
    ("MODEL.FPN.IN_FEATURES", ["res5", "res4"], ConfigError, "R50-FPN reads"),
    ("MODEL.RESNETS.OUT_FEATURES", ["res4"], ConfigError, "must equal MODEL.FPN.IN_FEATURES"),
    ("MODEL.RPN.IN_FEATURES", ["p3", "p2"], ConfigError, "finest first"),
    ("MODEL.RPN.IN_FEATURES", ["res4"], ConfigError, "FPN levels"),
    ("MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p4"], ConfigError, "consecutive FPN levels"),
    ("MODEL.ROI_HEADS.NAME", "Res5ROIHeads", ConfigError, "R50-FPN takes 'StandardROIHeads'"),
    ("MODEL.ROI_BOX_HEAD.NAME", "", ConfigError, "R50-FPN takes 'FastRCNNConvFCHead'"),
    ("MODEL.ROI_BOX_HEAD.NUM_FC", -1, ConfigError, "an integer >= 0"),
    ("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNPointRendHead", ConfigError, "one of 'MaskRCNNConvUpsampleHead'"),
    ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIPool", NotImplementedError, "aligned RoIAlign"),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128]], ConfigError, "one list per map or one list for all"),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512, 640]], ConfigError, "same number"),
]


@pytest.mark.parametrize(("key", "value", "error", "text"), FPN_CASES, ids=[f"{c[0]}={c[1]!r}" for c in FPN_CASES])
def test_bad_fpn_values_are_refused_by_name(key, value, error, text):
    cfg = load_config(get_detection_defaults(), FPN_MASK, [])
    cfg.defrost()
    *parents, leaf = key.split(".")
    node = cfg
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(error, match=key.replace(".", r"\.")) as raised:
        validate_detection_config(cfg, world_size=1)
    assert text in str(raised.value)


@pytest.mark.parametrize("override", [["MODEL.FPN.NORM", "BN"], ["MODEL.ROI_BOX_HEAD.NUM_FC", "2"],
                                      ["MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "28"],
                                      ["MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']"]])
def test_fpn_keys_set_on_c4_are_errors_not_ignored(override):
    cfg = load_config(get_detection_defaults(), REPO / "configs/detection/coco_R_50_C4_1x.yaml", override)
    with pytest.raises(ConfigError, match="read only by R50-FPN"):
        validate_detection_config(cfg, world_size=1)


def test_gn_needs_widths_divisible_by_its_groups():
    cfg = load_config(get_detection_defaults(), FPN_MASK, ["MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "100"])
    with pytest.raises(ConfigError, match="MODEL.FPN.OUT_CHANNELS 100: must be a multiple of 32"):
        validate_detection_config(cfg, world_size=1)
    cfg = load_config(get_detection_defaults(), FPN_MASK, ["MODEL.FPN.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM", "GN",
                                                           "MODEL.ROI_MASK_HEAD.NORM", "GN"])
    validate_detection_config(cfg, world_size=1)
    gn = build_detector(fpn_cfg(norm="GN"), "BN")
    assert isinstance(gn.roi_heads.box_head.conv1.norm, torch.nn.GroupNorm)
    assert isinstance(gn.backbone.fpn.inner_blocks[0][1], torch.nn.GroupNorm)


# ---- end to end ---------------------------------------------------------------------------------------------------

def tiny_fpn_config(tmp_path, demo):
    """The FPN demo recipe shrunk to ResNet-18, 64 px inputs and a handful of RoIs: the same code paths, fast."""
    config = tmp_path / "tiny_R_18_FPN.yaml"
    config.write_text(f"""\
_BASE_: "{REPO / 'configs/detection' / demo}"
MODEL:
  RESNETS:
    DEPTH: 18
  ROI_HEADS:
    BATCH_SIZE_PER_IMAGE: 8
  RPN:
    BATCH_SIZE_PER_IMAGE: 32
    PRE_NMS_TOPK_TRAIN: 200
    POST_NMS_TOPK_TRAIN: 50
    PRE_NMS_TOPK_TEST: 200
    POST_NMS_TOPK_TEST: 20
INPUT:
  MIN_SIZE_TRAIN: (56, 64)
  MAX_SIZE_TRAIN: 128
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 128
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  WARMUP_ITERS: 2
  STEPS: (2,)
  MAX_ITER: 3
  CHECKPOINT_PERIOD: 0
TEST:
  PRECISE_BN:
    NUM_ITER: 1
  DIAGNOSIS:
    ENABLED: False
""")
    return config


def test_transfer_tool_runs_faster_rcnn_fpn(tiny_coco_root, tmp_path):
    config = tiny_fpn_config(tmp_path, "coco_faster_rcnn_R_50_FPN_demo.yaml")
    output = tmp_path / "run"
    result = run_tool("tools/transfer.py", "--task", "coco_fasterrcnn_fpn", "--config", str(config), "--data-root",
                      str(tiny_coco_root), "--weights", "none", "--output", str(output), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (output / "log.txt").read_text()
    assert "R18-FPN Faster R-CNN" in log
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == {"bbox"} and metrics["bbox"].keys() >= {"AP", "AP50", "AP75"}
    trained = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    assert any("loss_rpn_cls" in event for event in trained)


@pytest.mark.parametrize("task, demo, model, types", [
    ("coco_maskrcnn_fpn", "coco_mask_rcnn_R_50_FPN_demo.yaml", "R18-FPN Mask R-CNN", {"bbox", "segm"}),
    ("coco_fasterrcnn_fpn", "coco_faster_rcnn_R_50_FPN_demo.yaml", "R18-FPN Faster R-CNN", {"bbox"})])
def test_fpn_task_under_torchrun(task, demo, model, types, tiny_coco_root, tmp_path):
    """Two gloo processes: SyncBN in backbone, FPN and heads; the task's AP types."""
    config = tiny_fpn_config(tmp_path, demo)
    output = tmp_path / "ddp"
    result = run_tool("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/transfer.py",
                      "--task", task, "--config", str(config), "--data-root", str(tiny_coco_root),
                      "--weights", "none", "--output", str(output), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (output / "log.txt").read_text()
    assert model in log and "naiveSyncBN" in log
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == types and all(metrics[kind].keys() >= {"AP", "AP50", "AP75"} for kind in types)
