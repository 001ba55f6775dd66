"""DeepLab-v3 R50-D8 as mmseg builds it (names, dilations, output stride, loss), mmseg's poly schedule, its
training transforms, and whole vs sliding-window inference."""
import math

import numpy as np
import pytest
import torch
import torchvision

from benchmarks.engine.config import load_config
from benchmarks.engine.solver import poly_lr
from benchmarks.engine.validation import ConfigError
from benchmarks.modeling.deeplab import build_deeplabv3, load_backbone_weights, segmentation_loss
from benchmarks.segmentation.config import get_segmentation_defaults, validate_segmentation_config
from benchmarks.segmentation.inference import Segmenter
from benchmarks.segmentation.transforms import photometric_distortion, random_crop, random_resize, rescale_size

from .conftest import REPO


@pytest.fixture(scope="module")
def deeplab():
    torch.manual_seed(0)
    return build_deeplabv3(get_segmentation_defaults().MODEL, "BN")


def test_parameter_names_are_mmsegs(deeplab):
    """The names an mmseg DeepLab-v3 R50-D8 checkpoint with the basic stem holds (ConvModule .conv/.bn)."""
    names = set(deeplab.state_dict())
    for name in ("backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer3.5.bn3.weight",
                 "backbone.layer4.0.downsample.0.weight", "decode_head.image_pool.1.conv.weight",
                 "decode_head.image_pool.1.bn.bias", "decode_head.aspp_modules.0.conv.weight",
                 "decode_head.aspp_modules.3.bn.running_mean", "decode_head.bottleneck.conv.weight",
                 "decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "auxiliary_head.convs.0.conv.weight",
                 "auxiliary_head.convs.0.bn.weight", "auxiliary_head.conv_seg.bias"):
        assert name in names, name
    assert not any("conv.bias" in name for name in names)  # ConvModule convs have no bias before a norm
    # mmseg's model zoo lists 68.1M parameters for DeepLab-v3 R50-D8 (its deep stem has 19k more)
    assert sum(p.numel() for p in deeplab.parameters()) == pytest.approx(68.09e6, rel=1e-3)


def test_dilations_and_strides_follow_contract_dilation(deeplab):
    def three_by_three(stage):
        return [(m.dilation[0], m.stride[0]) for name, m in stage.named_modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert three_by_three(deeplab.backbone.layer2) == [(1, 2)] + [(1, 1)] * 3
    assert three_by_three(deeplab.backbone.layer3) == [(1, 1)] + [(2, 1)] * 5  # first block: dilation 2 // 2
    assert three_by_three(deeplab.backbone.layer4) == [(2, 1)] + [(4, 1)] * 2
    assert [m.conv.dilation[0] for m in deeplab.decode_head.aspp_modules] == [1, 12, 24, 36]
    assert deeplab.decode_head.aspp_modules[0].conv.kernel_size == (1, 1)


def test_output_stride_8_and_logits_at_input_size(deeplab):
    deeplab.train()
    x = torch.randn(2, 3, 72, 104)  # not multiples of 8, as real crops of resized images are not
    res4, res5 = deeplab.backbone(x)
    assert res4.shape == (2, 1024, 9, 13) and res5.shape == (2, 2048, 9, 13)
    logits, aux = deeplab(x)
    assert logits.shape == aux.shape == (2, 19, 72, 104)
    deeplab.eval()
    assert deeplab(x)[1] is None  # the auxiliary head only trains


def test_loss_is_mmsegs_mean_over_all_pixels_ignored_ones_included():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2 classes, 1, 2]
    labels = torch.tensor([[[0, 255]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1)) / 2  # one labelled pixel, divided by both pixels
    assert segmentation_loss(logits, labels, 255).item() == pytest.approx(expected, rel=1e-6)


def test_poly_lr_is_mmengines_polylr():
    """mmengine's chained PolyLR (eta_min 1e-4, power 0.9, end 40000) stepped by hand."""
    lr, base, eta, power, end = 0.01, 0.01, 1e-4, 0.9, 40000
    total = end - 1
    for step in range(1, 300):
        lr = (lr - eta) * (1 - 1 / (total - step + 1)) ** power + eta
    assert poly_lr(299, base, end, power, eta) == pytest.approx(lr, rel=1e-12)
    assert poly_lr(0, base, end, power, eta) == base
    assert poly_lr(end - 1, base, end, power, eta) == pytest.approx(eta)


def test_backbone_loads_every_canonical_tensor(deeplab):
    resnet = torchvision.models.resnet50(weights=None)
    state = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    assert load_backbone_weights(deeplab, state) == len(state)
    assert torch.equal(deeplab.backbone.conv1.weight, resnet.conv1.weight)
    with pytest.raises(KeyError, match="not in the checkpoint"):
        load_backbone_weights(deeplab, {k: v for k, v in state.items() if not k.startswith("conv1")})
    with pytest.raises(KeyError, match="no place"):
        load_backbone_weights(deeplab, {**state, "stem.0.weight": torch.zeros(1)})


def test_rescale_size_keeps_ratio_as_mmcv():
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert rescale_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert rescale_size(720, 1280, (2048, 1024)) == (1024, 1820)  # short side binds: 1024/720
    assert rescale_size(1067, 800, (2048, 1024)) == (1366, 1024)  # portrait: 1024/800, rounded half up


def test_random_crop_redraws_until_no_class_dominates():
    """8x8 crops of a 40x40 label whose right half is class 1: a crop holds both classes below 75% only if it
    straddles the edge with 3-5 columns of each (3 of 33 column offsets, 9%); with cat_max_ratio's 10 re-draws
    1 - (30/33)^11 = 65% (measured with seed 0: 8% and 66%)."""
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 1
    image = np.zeros((40, 40, 3), np.uint8)

    def balanced_share(cat_max_ratio):
        torch.manual_seed(0)
        balanced = 0
        for _ in range(300):
            _, crop = random_crop(image, label, (8, 8), cat_max_ratio, 255)
            assert crop.shape == (8, 8)
            counts = np.bincount(crop.ravel(), minlength=2)
            balanced += counts.min() > 0 and counts.max() / counts.sum() < 0.75
        return balanced / 300

    assert balanced_share(1.0) < 0.2 and balanced_share(0.75) > 0.5
    _, whole = random_crop(image, label, (64, 64), 0.75, 255)  # larger than the image: kept whole
    assert whole.shape == (40, 40)


def test_random_resize_ratio_and_photometric_distortion_stay_in_range():
    torch.manual_seed(1)
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    label = np.random.default_rng(1).integers(0, 19, (64, 128), dtype=np.uint8)
    resized, resized_label = random_resize(image, label, (256, 128), (0.5, 2.0))
    assert resized.shape[:2] == resized_label.shape and 32 <= resized.shape[0] <= 256
    assert set(np.unique(resized_label)) <= set(np.unique(label))  # nearest: no new label values
    torch.manual_seed(2)
    first = photometric_distortion(image)
    torch.manual_seed(2)
    assert first.dtype == np.uint8 and np.array_equal(first, photometric_distortion(image))


def test_sliding_windows_equal_whole_image_when_one_window_covers_it(deeplab):
    deeplab.eval()
    segmenter = Segmenter(deeplab, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], (64, 64), 255, 0.4).eval()
    image = torch.randint(0, 256, (3, 48, 80), dtype=torch.uint8)
    whole = segmenter.predict(image, (80, 48))
    assert whole.shape == (19, 48, 80)
    one_window = segmenter.predict(image, (80, 48), "slide", (48, 80), (48, 80))
    torch.testing.assert_close(one_window, whole)
    # overlapping windows: every pixel covered, the average of the windows' logits
    overlapping = segmenter.predict(image, (80, 48), "slide", (48, 48), (32, 32))
    assert overlapping.shape == whole.shape and torch.isfinite(overlapping).all()


def test_training_batch_is_padded_to_the_crop_size_with_ignored_labels(deeplab):
    deeplab.train()
    segmenter = Segmenter(deeplab, [0.0] * 3, [1.0] * 3, (48, 64), 255, 0.4)
    images = [torch.randint(0, 256, (3, 40, 64), dtype=torch.uint8), torch.randint(0, 256, (3, 48, 56),
                                                                                 dtype=torch.uint8)]
    labels = [torch.randint(0, 19, (40, 64)), torch.randint(0, 19, (48, 56))]
    losses = segmenter(images, labels)
    assert set(losses) == {"loss_sem_seg", "loss_aux"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert deeplab.backbone.conv1.weight.grad is not None


def test_config_rules_refuse_what_the_model_cannot_build():
    cfg = get_segmentation_defaults()
    validate_segmentation_config(cfg, world_size=4)
    for key, value, message in [("MODEL.RESNETS.DEPTH", 18, "BasicBlock"),
                                ("MODEL.DECODE_HEAD.DILATIONS", (6, 12), "start with 1"),
                                ("SOLVER.IMS_PER_BATCH", 1, "at least 2 images"),
                                ("TEST.SLIDE_STRIDE", (600, 600), "must not exceed")]:
        bad = cfg.clone()
        bad.merge_from_list([key, value])
        with pytest.raises(ConfigError, match=message):
            validate_segmentation_config(bad, world_size=1)


def test_shipped_segmentation_configs_pass():
    for config in sorted((REPO / "configs" / "segmentation").glob("*.yaml")):
        validate_segmentation_config(load_config(get_segmentation_defaults(), config), world_size=1)
