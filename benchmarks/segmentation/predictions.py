"""Predictions in the Cityscapes benchmark format, and colour overlays a person can look at.

A prediction is a single-channel 8-bit PNG of labelIds (not trainIds: cityscapesscripts ``helpers/labels.py``
asks for the regular ids, and mmseg's ``CityscapesMetric._convert_to_label_id`` maps trainIds back through
``trainId2label`` before writing). cityscapesscripts' ``evalPixelLevelSemanticLabeling.getPrediction`` finds the
prediction of ``<city>_<seq>_<frame>_gtFine_labelIds.png`` as the one file matching ``<city>_<seq>_<frame>*.png``
anywhere under the results root, so the name keeps the image's ``<city>_<seq>_<frame>_leftImg8bit`` stem, as
mmseg's ``CityscapesMetric.process`` names it (mmseg writes them flat, mode 'P'; we write mode 'L' under one
directory per city, which the recursive search finds the same way). Overlays go to a sibling directory, never
under ``predictions/``, where their names would match the same pattern twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cityscapes import (
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    IMAGE_SUFFIX,
    LABEL_ID_TO_TRAIN_ID,
    NUM_CLASSES,
    TRAIN_ID_TO_LABEL_ID,
    parse_cityscapes_name,
    read_label_png,
)

__all__ = ["colorize", "overlay", "prediction_path", "read_prediction", "write_overlay", "write_prediction"]

_PALETTE = np.zeros((256, 3), np.uint8)  # trainId -> colour; ignore (255) stays black
_PALETTE[:NUM_CLASSES] = CITYSCAPES_PALETTE


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _stem_and_city(stem_info) -> tuple[str, str]:
    """``(stem, city)`` of a dataset info dict (``stem``, ``city``) or of any Cityscapes file name."""
    if isinstance(stem_info, dict):
        stem = stem_info["stem"]
        city = stem_info.get("city") or parse_cityscapes_name(f"{stem}{IMAGE_SUFFIX}")["city"]
        return stem, city
    info = parse_cityscapes_name(Path(str(stem_info)).name)
    return info["stem"], info["city"]


def prediction_path(stem_info, out_dir) -> Path:
    """``out_dir/predictions/<city>/<city>_<seq>_<frame>_leftImg8bit.png``."""
    stem, city = _stem_and_city(stem_info)
    return Path(out_dir) / "predictions" / city / f"{stem}{IMAGE_SUFFIX}"


def _train_ids(pred_trainids) -> np.ndarray:
    pred = _numpy(pred_trainids)
    if pred.ndim != 2:
        raise ValueError(f"a prediction is an HxW map of trainIds, got shape {pred.shape}")
    if pred.size and (pred.min() < 0 or pred.max() >= NUM_CLASSES):
        raise ValueError(f"prediction trainIds must be in 0..{NUM_CLASSES - 1}, got {pred.min()}..{pred.max()}")
    return pred.astype(np.uint8)


def write_prediction(pred_trainids, stem_info, out_dir) -> Path:
    """Write an HxW trainId prediction as the labelIds PNG cityscapesscripts evaluates; return its path."""
    path = prediction_path(stem_info, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(TRAIN_ID_TO_LABEL_ID[_train_ids(pred_trainids)]).save(path)  # uint8 HxW: mode L
    return path


def read_prediction(path) -> np.ndarray:
    """The trainIds (uint8 HxW) of a labelIds prediction PNG; ids without a train class become 255."""
    return LABEL_ID_TO_TRAIN_ID[read_label_png(path)]


def colorize(train_ids) -> np.ndarray:
    """RGB (HxWx3 uint8) of a trainId map in the Cityscapes palette; ignore (255) is black."""
    return _PALETTE[_numpy(train_ids).astype(np.uint8)]


def overlay(image, train_ids, alpha: float = 0.5) -> np.ndarray:
    """The image (HxWx3 or 3xHxW uint8 RGB) blended with the palette colours of ``train_ids``; ignored pixels show
    the image alone."""
    image, ids = _numpy(image), _numpy(train_ids).astype(np.uint8)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[1:] == ids.shape:
        image = image.transpose(1, 2, 0)  # a dataset's 3xHxW tensor
    if image.shape != (*ids.shape, 3):
        raise ValueError(f"image {image.shape} is not the HxWx3 or 3xHxW of the label map {ids.shape}")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(ids).astype(np.float32)
    blended = np.where((ids == IGNORE_INDEX)[..., None], image, blended)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def write_overlay(image, pred_trainids, stem_info, out_dir, label=None, alpha: float = 0.5) -> Path:
    """Write ``out_dir/overlays/<city>/<stem>_overlay.png``: the image with the prediction's colours, and below it
    the ground truth's when ``label`` (trainIds, 255 ignore) is given; return its path."""
    stem, city = _stem_and_city(stem_info)
    panels = [overlay(image, _train_ids(pred_trainids), alpha)]
    if label is not None:
        panels.append(overlay(image, label, alpha))
    path = Path(out_dir) / "overlays" / city / f"{stem}_overlay.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels, axis=0)).save(path)
    return path
