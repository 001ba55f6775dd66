"""R50-C4 parts: losses against hand-computed cases, resizing/flip geometry, weight loading, the model's I/O."""
import math

import pytest
import torch
import torchvision

from benchmarks.detection.config import get_detection_defaults
from benchmarks.detection.data import hflip_sample, resize_sample, shortest_edge_size
from benchmarks.detection.rcnn_c4 import (
    DetectronRPN,
    build_rcnn_c4,
    fast_rcnn_losses,
    load_backbone_weights,
    mask_rcnn_loss,
    postprocess_detections,
)
from benchmarks.engine.solver import warmup_cosine_factor, warmup_multistep_factor


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


def test_fast_rcnn_losses_hand_computed():
    # two sampled RoIs, K=2 foreground classes: RoI 0 is class 2, RoI 1 is background
    class_logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    box_deltas = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.5, -0.5, 1.0, 0.0], [7.0] * 8])
    labels = [torch.tensor([2, 0])]
    targets = [torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])]
    loss_cls, loss_box = fast_rcnn_losses(class_logits, box_deltas, labels, targets, smooth_l1_beta=0.0)
    ce_0 = -(2.0 - math.log(math.exp(0) + math.exp(1) + math.exp(2)))
    ce_1 = -(3.0 - math.log(math.exp(3) + 2 * math.exp(0)))
    assert loss_cls.item() == pytest.approx((ce_0 + ce_1) / 2, rel=1e-6)
    # L1 (beta 0) on class 2's deltas of the one foreground RoI, divided by all sampled RoIs (2)
    assert loss_box.item() == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 2, rel=1e-6)


def test_fast_rcnn_box_loss_smooth_l1_beta():
    class_logits = torch.zeros(1, 2)
    loss_cls, loss_box = fast_rcnn_losses(class_logits, torch.tensor([[0.5, 2.0, 0.0, 0.0]]),
                                          [torch.tensor([1])], [torch.zeros(1, 4)], smooth_l1_beta=1.0)
    assert loss_cls.item() == pytest.approx(math.log(2), rel=1e-6)
    assert loss_box.item() == pytest.approx(0.5 * 0.5**2 + (2.0 - 0.5), rel=1e-6)


def test_mask_loss_hand_computed():
    # a 4x4 GT mask whose left half is foreground; the proposal is the whole mask, M = 2
    gt = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt[0, :, :2] = 1
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]])  # 1 RoI, 2 classes
    loss = mask_rcnn_loss(logits, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], [torch.tensor([0])],
                          [torch.tensor([1])], [gt])
    # target for class 1 is [[1, 0], [1, 0]]; BCE-with-logits: softplus(-x) for 1, softplus(x) for 0
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(-0.5) + softplus(0.0)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mask_loss_without_foreground_is_zero_with_gradient():
    logits = torch.zeros(0, 3, 14, 14, requires_grad=True)
    loss = mask_rcnn_loss(logits, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)],
                          [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, 8, 8)])
    loss.backward()
    assert loss.item() == 0.0


def test_rpn_loss_normalised_by_sampling_capacity():
    cfg = tiny_cfg()
    rpn = build_rcnn_c4(cfg, "BN").rpn
    assert isinstance(rpn, DetectronRPN)
    rpn.fg_bg_sampler.batch_size_per_image = 8  # every labelled anchor below is sampled
    objectness = torch.tensor([[2.0], [-1.0], [0.0], [5.0]])
    deltas = torch.tensor([[0.5, 0.0, 0.0, -1.0], [3.0, 3.0, 3.0, 3.0], [9.0] * 4, [9.0] * 4])
    labels = [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, -1.0])]  # image 2's anchors are ignored
    targets = [torch.zeros(2, 4), torch.zeros(2, 4)]
    loss_cls, loss_loc = rpn.compute_loss(objectness, deltas, labels, targets)
    bce = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
    assert loss_cls.item() == pytest.approx(bce / 16, rel=1e-6)  # 8 per image x 2 images
    assert loss_loc.item() == pytest.approx(1.5 / 16, rel=1e-6)


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


def test_resize_and_flip_keep_boxes_on_their_masks():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    masks = torch.zeros(1, 40, 60, dtype=torch.uint8)
    masks[0, 10:20, 5:25] = 1
    target = {"boxes": torch.tensor([[5.0, 10.0, 25.0, 20.0]]), "labels": torch.tensor([1]), "masks": masks}
    image, target = resize_sample(image, target, (80, 120))
    image, target = hflip_sample(image, target)
    ys, xs = torch.where(target["masks"][0] > 0)
    mask_box = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert target["boxes"][0].tolist() == pytest.approx(mask_box)
    assert target["boxes"][0].tolist() == pytest.approx([120 - 50, 20, 120 - 10, 40])


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


def test_model_trains_and_predicts_in_original_coordinates():
    torch.manual_seed(0)
    model = build_rcnn_c4(tiny_cfg(), "BN")
    images = [torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8),
              torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)]
    masks = [torch.zeros(1, 64, 80, dtype=torch.uint8), torch.zeros(2, 48, 64, dtype=torch.uint8)]
    masks[0][0, 10:40, 10:50] = 1
    masks[1][0, 5:20, 5:30] = 1
    masks[1][1, 25:45, 30:60] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 40]]), "labels": torch.tensor([1]), "masks": masks[0]},
        {"boxes": torch.tensor([[5.0, 5, 30, 20], [30, 25, 60, 45]]), "labels": torch.tensor([2, 3]),
         "masks": masks[1]},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head.deconv.weight.grad is not None
    assert model.backbone.conv1.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        detections = model(images)
    result = postprocess_detections(detections[0], (64, 80), (128, 160))
    assert result["masks"].shape[1:] == (128, 160) and result["masks"].dtype == torch.bool
    assert len(result["boxes"]) == len(result["masks"]) <= 100
    torch.testing.assert_close(result["boxes"], detections[0]["boxes"] * 2)
