"""YAML configs with ``_BASE_`` inheritance and ``KEY VALUE`` overrides, as Detectron2 users know them."""
from pathlib import Path

import yaml
from fvcore.common.config import CfgNode


class ConfigError(ValueError):
    pass


def load_config(defaults: CfgNode, config_file=None, overrides=()) -> CfgNode:
    """Defaults, then the file (with its ``_BASE_`` chain), then ``KEY VALUE`` pairs; unknown keys are errors."""
    cfg = defaults.clone()
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg.merge_from_file(str(path))
        except KeyError as err:
            raise ConfigError(f"{path}: {err.args[0] if err.args else err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    overrides = list(overrides)
    for key in overrides[0::2]:
        if key.startswith("--"):
            raise ConfigError(f"{key} comes after the KEY VALUE overrides; give options first and the overrides "
                              "last (everything after the first KEY is read as overrides, as in Detectron2)")
    if len(overrides) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number: {overrides}")
    for key in overrides[0::2]:
        _check_key_exists(cfg, key)
    try:
        cfg.merge_from_list(overrides)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"bad override: {err.args[0] if err.args else err}") from None
    cfg.freeze()
    return cfg


def _check_key_exists(cfg: CfgNode, full_key: str) -> None:
    """yacs reports unknown keys with ``assert``, which ``python -O`` strips; check them ourselves."""
    node = cfg
    for part in full_key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            raise ConfigError(f"bad override: unknown config key {full_key!r}")
        node = node[part]
