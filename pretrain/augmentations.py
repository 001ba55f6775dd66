"""MoCo's augmentation policies (as in facebookresearch/moco main_moco.py), parameterised by crop size.

Every random draw goes through torch's RNG, so ``SeededSamples`` makes the views a function of the
sample's stream position: same views after a resume, with any number of workers.
"""
import torch
from PIL import Image, ImageFilter
from torchvision import transforms

# ImageNet statistics on 0-1 RGB, the normalisation of every MoCo/torchvision checkpoint.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GaussianBlur:
    """PIL Gaussian blur with sigma uniform in ``sigma_range`` (MoCo v2 / SimCLR), drawn from torch's RNG."""

    def __init__(self, sigma_range=(0.1, 2.0)):
        self.sigma_range = sigma_range

    def __call__(self, image: Image.Image) -> Image.Image:
        sigma = torch.empty(()).uniform_(*self.sigma_range).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self):
        return f"{type(self).__name__}(sigma_range={self.sigma_range})"


class TwoCrops:
    """Two independent views of one image: the query's and the key's."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return [self.transform(image), self.transform(image)]

    def __repr__(self):
        return f"{type(self).__name__}({self.transform!r})"


def mocov1_augmentation(crop_size: int = 224, min_scale: float = 0.2) -> transforms.Compose:
    """He et al. 2020, Sec. 3.3: crop, grayscale p 0.2, colour jitter 0.4 (hue 0.4 too), flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0)),
        transforms.RandomGrayscale(p=0.2),
        transforms.ColorJitter(0.4, 0.4, 0.4, 0.4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def mocov2_augmentation(crop_size: int = 224, min_scale: float = 0.2) -> transforms.Compose:
    """Chen et al. 2020 ("Improved Baselines"): v1's policy plus blur, jitter p 0.8 with hue 0.1."""
    return transforms.Compose([
        transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
