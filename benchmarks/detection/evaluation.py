"""COCO-style evaluation reporting what Detectron2's COCOEvaluator reports (in percent).

Two backends give the same numbers: faster-coco-eval (C++; the default when installed) and pycocotools, the
reference (``TEST.COCO_BACKEND pycocotools``). A test holds them to identical AP/AP50/AP75/APs/APm/APl.
"""
import contextlib
import copy
import importlib.util
import io
import logging
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..engine.distributed import gather_object, is_main_process
from ..modeling.postprocessing import detector_postprocess

logger = logging.getLogger("transferlab")

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
COCO_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def resolve_coco_backend(backend: str = "auto") -> str:
    """``auto`` is faster-coco-eval when it is installed, else pycocotools; a named backend must be installed."""
    if backend not in COCO_BACKENDS:
        raise ValueError(f"COCO evaluation backend must be one of {', '.join(COCO_BACKENDS)}, got {backend!r}")
    installed = importlib.util.find_spec("faster_coco_eval") is not None
    if backend == "faster_coco_eval" and not installed:
        raise ModuleNotFoundError("COCO backend faster_coco_eval is not installed (pip install faster-coco-eval); "
                                  "TEST.COCO_BACKEND pycocotools uses the reference implementation")
    if backend == "auto":
        return "faster_coco_eval" if installed else "pycocotools"
    return backend


def _coco_evaluator(coco_gt: COCO, records: list, iou_type: str, backend: str):
    """An evaluated, accumulated and summarised evaluator of ``backend``; its summary goes to the log."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        if backend == "faster_coco_eval":
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster

            # it converts polygons and results in place unless told to copy; coco_gt.dataset is the dataset's own
            gt = FasterCOCO(coco_gt.dataset, use_deepcopy=True)
            evaluator = COCOeval_faster(gt, gt.loadRes(records), iou_type, print_function=print)
        else:
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(records), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.info("%s %s:\n%s", backend, iou_type, printed.getvalue().rstrip())
    return evaluator


def detections_to_coco_json(detection: dict, image_id: int, contiguous_to_coco: dict) -> list:
    """One image's detections (original resolution) as COCO result records; masks as compressed RLE."""
    boxes = detection["boxes"].float().cpu()
    if len(boxes) == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = detection["scores"].float().cpu().tolist()
    labels = detection["labels"].cpu().tolist()
    records = [
        {"image_id": int(image_id), "category_id": contiguous_to_coco[label], "bbox": box, "score": score}
        for box, score, label in zip(xywh, scores, labels)
    ]
    if "masks" in detection:
        masks = detection["masks"].cpu().numpy().astype(np.uint8)
        for record, mask in zip(records, masks):
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            record["segmentation"] = rle
    return records


@torch.no_grad()
def run_inference(model, loader, device, contiguous_to_coco: dict, amp_dtype=None) -> list:
    """Detections of every rank's shard as one list of COCO result records on the main process; ``None`` on the
    others."""
    model.eval()
    records, start, timed, timed_images = [], time.perf_counter(), 0.0, 0
    progress = tqdm(loader, desc="inference", disable=not is_main_process(), dynamic_ncols=True, leave=False)
    for images, original_sizes, image_ids in progress:
        tic = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model([img.to(device) for img in images])
        for output, image, original_size, image_id in zip(outputs, images, original_sizes, image_ids):
            detection = detector_postprocess(output, image.shape[-2:], original_size)
            records.extend(detections_to_coco_json(detection, image_id, contiguous_to_coco))
        if timed_images >= 2:  # the first images pay for allocator and kernel warm-up
            timed += time.perf_counter() - tic
        timed_images += len(images)
    if timed_images > 2:
        logger.info("Inference: %d images in %.1f s on this process (%.3f s / image after warm-up)",
                    timed_images, time.perf_counter() - start, timed / (timed_images - 2))
    shards = gather_object(records)
    return [record for shard in shards for record in shard] if shards is not None else None


def evaluate_coco(coco_gt: COCO, results: list, iou_types=("bbox",), backend: str = "auto") -> dict:
    """AP, AP50, AP75, APs, APm, APl (percent, NaN where COCOeval gives -1) and per-class AP per IoU type.

    No detections at all give NaN for every metric with a warning, as Detectron2's COCOEvaluator reports it
    (an AP of 0 would read as a measured result).
    """
    if not results:
        logger.warning("No detections from the model: every metric is NaN")
        return {iou_type: {name: float("nan") for name in COCO_METRICS} for iou_type in iou_types}
    backend = resolve_coco_backend(backend)
    metrics = {}
    for iou_type in iou_types:
        records = results
        if iou_type == "segm":
            # the segm area (hence APs/m/l) must come from the mask, not from the box as loadRes would take it
            records = copy.deepcopy(results)
            for record in records:
                record.pop("bbox", None)
        evaluator = _coco_evaluator(coco_gt, records, iou_type, backend)
        stats = {
            name: float(value * 100) if value >= 0 else float("nan")
            for name, value in zip(COCO_METRICS, evaluator.stats[: len(COCO_METRICS)])
        }
        precision = evaluator.eval["precision"]  # [iou, recall, category, area, max_dets]
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            name = coco_gt.cats[category_id]["name"]
            stats[f"AP-{name}"] = float(values.mean() * 100) if values.size else float("nan")
        metrics[iou_type] = stats
    return metrics


def results_table(metrics: dict, names=COCO_METRICS) -> str:
    """The metrics as a markdown table, one row per IoU type, the way papers print them."""
    lines = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for iou_type, stats in metrics.items():
        lines.append(f"| {iou_type} | " + " | ".join(f"{stats[name]:.2f}" for name in names) + " |")
    return "\n".join(lines)
