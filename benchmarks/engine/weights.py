"""Pretrained backbones for the transfer tasks: read through converters, checked against the model's depth."""
import logging

from converters import load_backbone

logger = logging.getLogger("transferlab")


def read_pretrained_backbone(model_cfg, model_name: str):
    """``(state_dict, meta)`` of ``MODEL.WEIGHTS`` (any layout ``converters.load_backbone`` reads), or None for
    ``none``, the random-init baseline; a backbone of another depth than ``MODEL.RESNETS.DEPTH`` is an error, and
    pretraining pixel statistics other than ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` a warning."""
    weights, depth = model_cfg.WEIGHTS, model_cfg.RESNETS.DEPTH
    if weights == "none":
        logger.info("MODEL.WEIGHTS none: the backbone starts from random initialization (the scratch baseline)")
        return None
    state_dict, meta = load_backbone(weights)
    expected_arch = f"resnet{depth}"
    if meta["arch"] != expected_arch:
        raise ValueError(f"{weights} holds a {meta['arch']} backbone but the {model_name} is built on {expected_arch} "
                         f"(MODEL.RESNETS.DEPTH {depth})")
    for key, value in (("pixel_mean", model_cfg.PIXEL_MEAN), ("pixel_std", model_cfg.PIXEL_STD)):
        if meta.get(key) is not None and [round(v, 3) for v in meta[key]] != [round(v, 3) for v in value]:
            logger.warning("The backbone was pretrained with %s %s, the %s normalizes with MODEL.%s %s",
                           key, meta[key], model_name, key.upper(), list(value))
    return state_dict, meta


def describe_source(weights: str, meta: dict) -> str:
    method = f", method {meta['method']}" if meta.get("method") else ""
    return f"{weights} ({meta.get('source_format', '?')} format, {meta['arch']}{method})"
