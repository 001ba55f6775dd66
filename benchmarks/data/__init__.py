"""Datasets and formats: the built-in scene generator, its writers, and readers of the real formats."""

from .builtin import builtin_data_root, cache_root, write_builtin_set
from .coco import DATASET_CATALOG, COCODetection, load_coco_annotations, resolve_dataset
from .streets import StreetSpec, render_street
from .synthetic import CATEGORIES, GENERATOR_VERSION, SceneSpec, render_scene, scene_rng
from .writers import (
    SHAPE_TO_BDD_CLASS,
    write_bdd,
    write_cityscapes,
    write_coco,
    write_image_folder,
    write_image_pool,
    write_voc,
)

__all__ = [
    "CATEGORIES",
    "DATASET_CATALOG",
    "GENERATOR_VERSION",
    "SHAPE_TO_BDD_CLASS",
    "COCODetection",
    "SceneSpec",
    "StreetSpec",
    "builtin_data_root",
    "cache_root",
    "load_coco_annotations",
    "render_scene",
    "render_street",
    "resolve_dataset",
    "scene_rng",
    "write_bdd",
    "write_builtin_set",
    "write_cityscapes",
    "write_coco",
    "write_image_folder",
    "write_image_pool",
    "write_voc",
]
