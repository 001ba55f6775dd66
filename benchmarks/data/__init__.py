"""Datasets and formats: the built-in scene generator, its writers, and readers of the real formats.

The names below are imported on first use: ``coco_json`` (what the diagnosis reads) needs neither torch nor cv2.
"""

from converters.lazy import lazy_exports

_EXPORTS = {
    "CATEGORIES": "synthetic",
    "DATASET_CATALOG": "coco",
    "GENERATOR_VERSION": "synthetic",
    "SHAPE_TO_BDD_CLASS": "writers",
    "COCODetection": "coco",
    "SceneSpec": "synthetic",
    "StreetSpec": "streets",
    "builtin_data_root": "builtin",
    "cache_root": "builtin",
    "load_coco_annotations": "coco_json",
    "render_scene": "synthetic",
    "render_street": "streets",
    "resolve_dataset": "coco",
    "scene_rng": "synthetic",
    "write_bdd": "writers",
    "write_builtin_set": "builtin",
    "write_cityscapes": "writers",
    "write_coco": "writers",
    "write_image_folder": "writers",
    "write_image_pool": "writers",
    "write_voc": "writers",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
