"""R50-C4 parts against Detectron2's definitions: anchors, matching, box coding, proposal ranking, losses on
hand-computed cases, mask pasting, fp32 box arithmetic under autocast, weight loading and the model's I/O."""
import math

import numpy as np
import pytest
import torch
import torchvision

from benchmarks.detection.config import get_detection_defaults
from benchmarks.detection.data import shortest_edge_size
from benchmarks.engine.solver import warmup_cosine_factor, warmup_multistep_factor
from benchmarks.modeling.anchor_generator import DefaultAnchorGenerator, generate_cell_anchors
from benchmarks.modeling.box_regression import Box2BoxTransform
from benchmarks.modeling.fast_rcnn import FastRCNNOutputLayers
from benchmarks.modeling.mask_head import mask_rcnn_loss
from benchmarks.modeling.masks import BitMasks
from benchmarks.modeling.matcher import Matcher, subsample_labels
from benchmarks.modeling.postprocessing import detector_postprocess, paste_masks_in_image
from benchmarks.modeling.rcnn import build_rcnn_c4, load_backbone_weights
from benchmarks.modeling.rpn import find_top_rpn_proposals


def tiny_cfg(mask_on=True, depth=18, num_classes=3, rois=8):
    cfg = get_detection_defaults()
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = rois
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32, 64]]
    return cfg


# ---- anchors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width", [(800, 1067), (1067, 800), (640, 853), (333, 501)])
def test_anchor_centres_lie_on_the_feature_stride_grid(height, width):
    """Real image sizes are not multiples of 16. torchvision's AnchorGenerator derives the stride from the padded
    image size // feature size (15 px for 1067 px and 67 columns), which shifts the right-most anchors ~66 px."""
    model = build_rcnn_c4(tiny_cfg(depth=18), "BN").eval()
    with torch.no_grad():
        batch, sizes = model.preprocess([torch.zeros(3, height, width, dtype=torch.uint8)])
        features = model.backbone(batch)
        anchors = model.proposal_generator.anchor_generator([features])[0]
    rows, cols = features.shape[-2:]
    assert (rows, cols) == (math.ceil(height / 16), math.ceil(width / 16))
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).view(rows, cols, -1, 2)
    grid_x = (torch.arange(cols, dtype=torch.float32) * 16)[None, :, None].expand(rows, cols, centres.shape[2])
    grid_y = (torch.arange(rows, dtype=torch.float32) * 16)[:, None, None].expand(rows, cols, centres.shape[2])
    torch.testing.assert_close(centres[..., 0], grid_x, rtol=0, atol=1e-4)
    torch.testing.assert_close(centres[..., 1], grid_y, rtol=0, atol=1e-4)


def test_cell_anchors_are_exact_and_in_detectron2_order():
    anchors = generate_cell_anchors([32, 64], [0.5, 1.0, 2.0])
    # sizes outer, aspect ratios (h / w) inner; area size**2, not rounded to integers as torchvision does
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    torch.testing.assert_close(widths * heights, torch.tensor([32.0**2] * 3 + [64.0**2] * 3))
    torch.testing.assert_close(heights / widths, torch.tensor([0.5, 1.0, 2.0] * 2))
    assert anchors[0, 2].item() == pytest.approx(math.sqrt(32**2 / 0.5) / 2, abs=1e-5)  # 22.627, not 23
    offset = DefaultAnchorGenerator([[32]], [[1.0]], [16], offset=0.5).grid_anchors(0, (1, 2))
    torch.testing.assert_close((offset[:, 0] + offset[:, 2]) / 2, torch.tensor([8.0, 24.0]))


def test_anchors_stay_float32_under_autocast():
    generator = DefaultAnchorGenerator([[32, 64]], [[0.5, 1.0, 2.0]], [16])
    features = torch.zeros(1, 4, 7, 9, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        anchors = generator([features])[0]
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors, generator([features.float()])[0], rtol=0, atol=0)


# ---- matching, sampling, box coding ----------------------------------------------------------------------------

def test_matcher_bands_and_low_quality_matches():
    iou = torch.tensor([[0.1, 0.5, 0.8, 0.0],
                        [0.2, 0.25, 0.1, 0.0]])
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)(iou)
    assert matches.tolist() == [1, 0, 0, 0]
    assert labels.tolist() == [0, -1, 1, 0]
    # the second object's best prediction (column 1, IoU 0.25 < 0.3) becomes positive; it keeps its argmax match
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [0, 1, 1, 0]
    empty_matches, empty_labels = Matcher([0.5], [0, 1])(torch.zeros(0, 5))
    assert empty_labels.tolist() == [0] * 5 and empty_matches.tolist() == [0] * 5


def test_subsample_labels_caps_positives_and_fills_with_negatives():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    torch.manual_seed(0)
    pos, neg = subsample_labels(labels, 16, 0.25, bg_label=0)
    assert len(pos) == 4 and len(neg) == 12
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos, neg = subsample_labels(torch.tensor([1, 1, 0]), 16, 0.25, bg_label=0)
    assert len(pos) == 2 and len(neg) == 1


def test_box_coding_round_trip_and_clamp():
    transform = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 3.0, 7.0]])
    dst = torch.tensor([[12.0, 18.0, 60.0, 45.0], [1.0, 2.0, 2.0, 9.0]])
    deltas = transform.get_deltas(src, dst)
    # hand-computed for the first pair: centres (30, 30) -> (36, 31.5), sizes (40, 20) -> (48, 27)
    torch.testing.assert_close(deltas[0], torch.tensor([10 * 6 / 40, 10 * 1.5 / 20, 5 * math.log(48 / 40),
                                                        5 * math.log(27 / 20)]))
    torch.testing.assert_close(transform.apply_deltas(deltas, src), dst)
    huge = transform.apply_deltas(torch.tensor([[0.0, 0.0, 1000.0, 0.0]]), src[:1])
    assert (huge[0, 2] - huge[0, 0]).item() == pytest.approx(40 * 1000 / 16, rel=1e-5)


def test_box_decoding_is_float32_under_autocast():
    """bf16 keeps 8 mantissa bits: decoding in it quantises corners of 500 px boxes by ~2 px."""
    transform = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[401.3, 377.9, 512.6, 498.2], [3.2, 7.7, 88.1, 91.4]])
    deltas = torch.tensor([[0.11, -0.07, 0.2, -0.3], [0.05, 0.02, -0.1, 0.4]]).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = transform.apply_deltas(deltas, boxes.bfloat16())
    reference = transform.apply_deltas(deltas.float(), boxes.bfloat16().float())
    assert under_amp.dtype == torch.float32
    torch.testing.assert_close(under_amp, reference, rtol=0, atol=0)
    # torchvision's BoxCoder, which the engine used before, decodes in the boxes' dtype
    coder = torchvision.models.detection._utils.BoxCoder((1.0, 1.0, 1.0, 1.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = coder.decode_single(deltas, boxes.bfloat16())
    assert (in_bf16.float() - reference).abs().max() > 0.5


def test_detections_are_float32_under_autocast():
    torch.manual_seed(0)
    model = build_rcnn_c4(tiny_cfg(), "BN").eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    image = [torch.randint(0, 255, (3, 72, 90), dtype=torch.uint8)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        detections = model(image)[0]
    assert len(detections["boxes"]) > 0
    assert detections["boxes"].dtype == detections["scores"].dtype == detections["mask_probs"].dtype == torch.float32


# ---- RPN ---------------------------------------------------------------------------------------------------------

def test_proposals_are_ranked_by_logit_not_by_its_saturated_sigmoid():
    """Two overlapping boxes with logits 20 and 30: sigmoid gives 1.0 for both in fp32 (a tie, NMS keeps the
    first); Detectron2 ranks by the logit and keeps the second."""
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.5, 0.5, 10.5, 10.5], [30.0, 30.0, 40.0, 40.0]]])
    logits = torch.tensor([[20.0, 30.0, -1.0]])
    assert torch.sigmoid(logits[0, 0]) == torch.sigmoid(logits[0, 1]) == 1.0
    kept = find_top_rpn_proposals([boxes], [logits], [(50, 50)], nms_thresh=0.7, pre_nms_topk=10,
                                  post_nms_topk=10, min_box_size=0.0, training=False)[0]
    torch.testing.assert_close(kept, boxes[0, [1, 2]])


def test_proposals_are_clipped_and_empty_ones_dropped():
    boxes = torch.tensor([[[-5.0, -5.0, 20.0, 30.0], [60.0, 10.0, 70.0, 20.0], [10.0, 10.0, 10.0, 20.0]]])
    kept = find_top_rpn_proposals([boxes], [torch.tensor([[3.0, 2.0, 1.0]])], [(25, 50)], 0.7, 10, 10, 0.0,
                                  training=False)[0]
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.0, 20.0, 25.0]]))  # the others are empty once clipped


def test_rpn_loss_normalised_by_sampling_capacity():
    rpn = build_rcnn_c4(tiny_cfg(), "BN").proposal_generator
    rpn.batch_size_per_image = 8
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0]])
    logits = torch.tensor([[2.0, -1.0], [0.0, 5.0]])
    deltas = torch.tensor([[[0.5, 0.0, 0.0, -1.0], [3.0, 3.0, 3.0, 3.0]], [[9.0] * 4, [9.0] * 4]])
    labels = [torch.tensor([1, 0]), torch.tensor([-1, -1])]  # image 2's anchors are ignored
    matched = [anchors.clone(), anchors.clone()]  # positive anchor 0 matches itself: target deltas 0
    losses = rpn.losses(anchors, logits, labels, deltas, matched)
    bce = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
    assert losses["loss_rpn_cls"].item() == pytest.approx(bce / 16, rel=1e-6)  # 8 per image x 2 images
    assert losses["loss_rpn_loc"].item() == pytest.approx(1.5 / 16, rel=1e-6)


# ---- box and mask heads ----------------------------------------------------------------------------------------

def box_predictor(num_classes=2, beta=0.0):
    return FastRCNNOutputLayers(8, num_classes, Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), beta, 0.05, 0.5, 100)


def test_fast_rcnn_losses_hand_computed():
    # two sampled RoIs, K=2 foreground classes (Detectron2's indices: 0, 1; background 2):
    # RoI 0 is class 1, RoI 1 is background
    scores = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    deltas = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.5, -0.5, 1.0, 0.0], [7.0] * 8])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    losses = box_predictor().losses(scores, deltas, proposals, torch.tensor([1, 2]), proposals.clone())
    ce_0 = -(2.0 - math.log(math.exp(0) + math.exp(1) + math.exp(2)))
    ce_1 = -(3.0 - math.log(math.exp(3) + 2 * math.exp(0)))
    assert losses["loss_cls"].item() == pytest.approx((ce_0 + ce_1) / 2, rel=1e-6)
    # L1 (beta 0) on class 1's deltas of the one foreground RoI (target deltas 0), over all sampled RoIs (2)
    assert losses["loss_box_reg"].item() == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 2, rel=1e-6)


def test_fast_rcnn_box_loss_smooth_l1_beta():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    losses = box_predictor(num_classes=1, beta=1.0).losses(torch.zeros(1, 2), torch.tensor([[0.5, 2.0, 0.0, 0.0]]),
                                                           box, torch.tensor([0]), box)
    assert losses["loss_cls"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert losses["loss_box_reg"].item() == pytest.approx(0.5 * 0.5**2 + (2.0 - 0.5), rel=1e-6)


def test_fast_rcnn_inference_thresholds_clips_and_keeps_per_class_nms():
    predictor = box_predictor()
    proposals = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [11.0, 11.0, 31.0, 31.0], [-5.0, 0.0, 20.0, 20.0]])]
    # class probabilities via logits; zero deltas keep the proposals
    scores = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.02, 0.9, 0.08]]))
    (boxes, kept_scores, classes), = predictor.inference(scores, torch.zeros(3, 8), proposals, [(40, 40)])
    # class 0: RoI 0 (0.7) suppresses RoI 1 (0.6, IoU 0.82); RoI 2's 0.02 is under 0.05.
    # class 1: RoI 2 (0.9) stays, RoI 1 (0.3) suppresses RoI 0 (0.2).
    order = kept_scores.argsort(descending=True)
    assert classes[order].tolist() == [1, 0, 1]
    torch.testing.assert_close(kept_scores[order], torch.tensor([0.9, 0.7, 0.3]))
    torch.testing.assert_close(boxes[order][0], torch.tensor([0.0, 0.0, 20.0, 20.0]))  # clipped at x = 0


def test_mask_loss_hand_computed():
    # a 4x4 GT mask whose left half is foreground; the proposal is the whole mask, M = 2
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    gt[0, :, :2] = True
    logits = torch.tensor([[[[9.0, 9.0], [9.0, 9.0]], [[2.0, -1.0], [0.5, 0.0]]]])  # 1 RoI, 2 classes
    loss = mask_rcnn_loss(logits, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], [torch.tensor([1])], [BitMasks(gt)],
                          [torch.tensor([0])])
    # target for class 1 is [[1, 0], [1, 0]]; BCE-with-logits: softplus(-x) for 1, softplus(x) for 0
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(-0.5) + softplus(0.0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mask_loss_without_foreground_is_zero_with_gradient():
    logits = torch.zeros(0, 3, 14, 14, requires_grad=True)
    loss = mask_rcnn_loss(logits, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                          [BitMasks(torch.zeros(0, 8, 8, dtype=torch.bool))], [torch.zeros(0, dtype=torch.long)])
    loss.backward()
    assert loss.item() == 0.0


# ---- pasting masks, mapping detections back ----------------------------------------------------------------------

def reference_paste(probs: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """Bilinear sample of an M x M map at each pixel centre, mapped into the box (mask cell i covers
    [x0 + i w / M, x0 + (i + 1) w / M)); outside the map's cell centres it blends with zeros, as grid_sample's
    zero padding does."""
    size = probs.shape[0]
    x0, y0, x1, y1 = box
    out = np.zeros((height, width))
    padded = np.pad(probs, 1)
    for y in range(height):
        v = (y + 0.5 - y0) / (y1 - y0) * size - 0.5
        for x in range(width):
            u = (x + 0.5 - x0) / (x1 - x0) * size - 0.5
            if not (-1 < u < size and -1 < v < size):
                continue
            iu, iv = int(np.floor(u)), int(np.floor(v))
            fu, fv = u - iu, v - iv
            corners = padded[iv + 1:iv + 3, iu + 1:iu + 3]
            out[y, x] = (corners[0, 0] * (1 - fu) * (1 - fv) + corners[0, 1] * fu * (1 - fv)
                         + corners[1, 0] * (1 - fu) * fv + corners[1, 1] * fu * fv)
    return out


def test_paste_masks_matches_an_independent_bilinear_computation():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 14, 14, generator=generator)
    boxes = torch.tensor([[10.3, 5.7, 41.9, 30.2], [0.0, 12.5, 17.25, 39.0]])  # fractional, one on the border
    pasted = paste_masks_in_image(probs, boxes, (37, 45))
    assert pasted.shape == (2, 37, 45) and pasted.dtype == torch.bool
    for i in range(2):
        expected = reference_paste(probs[i].double().numpy(), boxes[i].tolist(), 37, 45)
        decided = np.abs(expected - 0.5) > 1e-6  # pixels that sit on the threshold may go either way in float32
        assert decided.sum() > 300
        assert (pasted[i].numpy()[decided] == (expected >= 0.5)[decided]).all()


def test_paste_differs_from_torchvision_where_it_rounds_the_box():
    probs = torch.ones(1, 14, 14)
    pasted = paste_masks_in_image(probs, torch.tensor([[10.6, 10.6, 20.4, 20.4]]), (32, 32))[0]
    # pixel centres 11.5 .. 19.5 are inside the box; a map of ones falls to 0.5 half a cell outside it
    ys, xs = torch.where(pasted)
    assert (xs.min().item(), xs.max().item()) == (11, 19)
    torchvision_paste = torchvision.models.detection.roi_heads.paste_masks_in_image(
        probs[:, None], torch.tensor([[10.6, 10.6, 20.4, 20.4]]), (32, 32))[0, 0] >= 0.5
    assert not torch.equal(torchvision_paste, pasted)


def test_detector_postprocess_rescales_clips_and_drops_empty_boxes():
    detection = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 90.0], [70.0, 0.0, 90.0, 10.0]]),
                 "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2]),
                 "mask_probs": torch.ones(2, 1, 14, 14)}
    result = detector_postprocess(detection, (100, 80), (50, 40))
    # box 2 starts at x = 35 of a 40 px image, clipped to 35..40; box 1 halves and its y2 = 45 stays inside
    torch.testing.assert_close(result["boxes"], torch.tensor([[5.0, 10.0, 15.0, 45.0], [35.0, 0.0, 40.0, 5.0]]))
    assert result["masks"].shape == (2, 50, 40)
    outside = detector_postprocess({**detection, "boxes": torch.tensor([[85.0, 0.0, 95.0, 10.0]] * 2)},
                                   (100, 80), (50, 40))
    assert len(outside["boxes"]) == len(outside["masks"]) == 0


# ---- solver and resizing -------------------------------------------------------------------------------------------

def test_warmup_multistep_factor():
    kwargs = dict(steps=(10, 20), gamma=0.1, warmup_iters=4, warmup_factor=0.001)
    assert warmup_multistep_factor(0, **kwargs) == pytest.approx(0.001)
    assert warmup_multistep_factor(2, **kwargs) == pytest.approx(0.001 * 0.5 + 0.5)
    assert warmup_multistep_factor(4, **kwargs) == 1.0
    assert warmup_multistep_factor(9, **kwargs) == 1.0
    assert warmup_multistep_factor(10, **kwargs) == pytest.approx(0.1)
    assert warmup_multistep_factor(25, **kwargs) == pytest.approx(0.01)


def test_warmup_cosine_factor():
    assert warmup_cosine_factor(0, max_iter=100, warmup_iters=10, warmup_factor=0.001) == pytest.approx(0.001)
    assert warmup_cosine_factor(50, max_iter=100, warmup_iters=10, warmup_factor=0.001) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, max_iter=100, warmup_iters=10, warmup_factor=0.001) == pytest.approx(0.0)


@pytest.mark.parametrize("size, short, max_size, expected", [
    ((480, 640), 800, 1333, (800, 1067)),  # Detectron2: 640 * 800 / 480 = 1066.67 -> 1067
    ((100, 1000), 800, 1333, (133, 1333)),  # capped by the long side
    ((192, 192), 160, 384, (160, 160)),
])
def test_shortest_edge_size_matches_detectron2(size, short, max_size, expected):
    assert shortest_edge_size(*size, short, max_size) == expected


# ---- weights and structure -------------------------------------------------------------------------------------

def test_backbone_weights_load_completely_and_give_torchvision_features():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    for module in reference.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    model = build_rcnn_c4(tiny_cfg(), "BN")
    assert load_backbone_weights(model, state) == len(state)
    model.eval()
    reference.eval()
    x = torch.randn(2, 3, 64, 64)
    stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
    expected = reference.layer3(reference.layer2(reference.layer1(stem)))
    torch.testing.assert_close(model.backbone(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(model.roi_heads.res5[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_backbone_weights_frozen_bn_skips_only_batch_counters():
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    model = build_rcnn_c4(tiny_cfg(), "FrozenBN")
    counters = sum(k.endswith("num_batches_tracked") for k in state)
    assert load_backbone_weights(model, state) == len(state) - counters


def test_backbone_weights_missing_or_wrong_tensor_is_an_error():
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    model = build_rcnn_c4(tiny_cfg(), "BN")
    incomplete = dict(state)
    del incomplete["layer2.0.conv1.weight"]
    with pytest.raises(KeyError, match="not in the checkpoint"):
        load_backbone_weights(model, incomplete)
    with pytest.raises(KeyError, match="layer9"):
        load_backbone_weights(model, {**state, "layer9.weight": torch.zeros(1)})
    resnet34_model = build_rcnn_c4(tiny_cfg(depth=34), "BN")
    with pytest.raises(KeyError):
        load_backbone_weights(resnet34_model, state)


def test_freeze_at_freezes_stem_and_res2_with_frozen_bn():
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_rcnn_c4(cfg, "BN")
    assert not any(p.requires_grad for p in model.backbone.conv1.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert isinstance(model.backbone.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())


def test_roi_heads_name_selects_the_extra_norm_after_res5():
    extra = build_rcnn_c4(tiny_cfg(), "BN")
    assert isinstance(extra.roi_heads.res5.norm, torch.nn.BatchNorm2d)
    cfg = tiny_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    plain = build_rcnn_c4(cfg, "BN")
    assert not hasattr(plain.roi_heads.res5, "norm") and len(plain.roi_heads.res5) == 2  # resnet18's two blocks


def test_model_trains_and_predicts_in_original_coordinates():
    torch.manual_seed(0)
    model = build_rcnn_c4(tiny_cfg(), "BN")
    images = [torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8),
              torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)]
    masks = [torch.zeros(1, 64, 80, dtype=torch.bool), torch.zeros(2, 48, 64, dtype=torch.bool)]
    masks[0][0, 10:40, 10:50] = True
    masks[1][0, 5:20, 5:30] = True
    masks[1][1, 25:45, 30:60] = True
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 40]]), "labels": torch.tensor([1]), "masks": BitMasks(masks[0])},
        {"boxes": torch.tensor([[5.0, 5, 30, 20], [30, 25, 60, 45]]), "labels": torch.tensor([2, 3]),
         "masks": BitMasks(masks[1])},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head.deconv.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0

    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0  # an untrained model: keep every detection
    with torch.no_grad():
        detections = model(images)
    assert 0 < len(detections[0]["boxes"]) <= 100
    assert set(detections[0]["labels"].tolist()) <= {1, 2, 3}
    result = detector_postprocess(detections[0], (64, 80), (128, 160))
    assert result["masks"].shape[1:] == (128, 160) and result["masks"].dtype == torch.bool
    assert len(result["boxes"]) == len(result["masks"]) == len(detections[0]["boxes"])
    torch.testing.assert_close(result["boxes"], detections[0]["boxes"] * 2)
