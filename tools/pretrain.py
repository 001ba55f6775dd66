#!/usr/bin/env python
"""Pretrain a ResNet backbone and write canonical checkpoints: MoCo v1/v2, Exemplar v1/v2, SL, SL-MLP, HPT stages
and BN recalibration (HPT's "Base"), one recipe each in configs/pretrain/.

Examples:
  python tools/pretrain.py --config configs/pretrain/demo.yaml
  python tools/pretrain.py --method sl --config configs/pretrain/demo.yaml --output work/pretrain/sl_demo
  python tools/pretrain.py --config configs/pretrain/hpt_r50.yaml --init moco_v2_800ep.pth --data-root /data/target
  python tools/pretrain.py --config configs/pretrain/mocov2_r50.yaml --data-root /data/imagenet/train
  torchrun --nproc_per_node 8 tools/pretrain.py --config configs/pretrain/mocov2_r50.yaml \\
      --data-root /data/imagenet/train SOLVER.IMS_PER_BATCH 256
  python tools/pretrain.py --config configs/pretrain/mocov2_r50.yaml --resume   # continue work/pretrain/mocov2_r50
"""
import argparse
import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and its name would shadow the `pretrain` package.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import torch.distributed as dist  # noqa: E402

from benchmarks.engine.cli import input_directory, output_directory, run_tool  # noqa: E402
from benchmarks.engine.config import load_config  # noqa: E402
from benchmarks.engine.distributed import init_distributed  # noqa: E402
from pretrain.config import get_defaults  # noqa: E402
from pretrain.train import train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Under torchrun, SOLVER.IMS_PER_BATCH stays the global batch: each process loads its share. "
               "The output directory receives config.yaml (the fully resolved config), log.txt, "
               "model_<iter>.pth every SOLVER.CHECKPOINT_PERIOD iterations and last.pth.")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/pretrain/mocov2_r50.yaml")
    parser.add_argument("--method", help="pretraining method, sets METHOD (mocov1, mocov2, exemplar_v1, "
                                         "exemplar_v2, sl, slmlp, hpt, bn_recalibrate); default: the config's")
    parser.add_argument("--init", help="base checkpoint, any format tools/convert.py reads (sets MODEL.INIT); "
                                       "hpt and bn_recalibrate need it, the other methods start from random weights")
    parser.add_argument("--output", help="output directory (default: work/pretrain/<config file stem>)")
    parser.add_argument("--data-root", help="directory of images, flat or in class subfolders (default: the "
                                            "built-in generated pool, or DATA.BUILTIN's part of the built-in set); "
                                            "sets DATA.ROOT")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output>/last.pth at its iteration, with the same data order; "
                             "without it, an output directory that holds last.pth is refused")
    parser.add_argument("overrides", nargs="*", metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_ITER 1000 MODEL.ARCH resnet18")
    return parser.parse_intermixed_args(argv)  # options may also follow the overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.method:
        overrides += ["METHOD", args.method]
    if args.init:
        overrides += ["MODEL.INIT", args.init]
    if args.data_root:
        overrides += ["DATA.ROOT", str(input_directory(args.data_root, "--data-root"))]
    if args.output:
        overrides += ["OUTPUT_DIR", str(output_directory(args.output, "--output"))]
    cfg = load_config(get_defaults(), args.config, overrides)
    if not cfg.OUTPUT_DIR:
        cfg = load_config(get_defaults(), args.config,
                          overrides + ["OUTPUT_DIR", str(Path("work/pretrain") / Path(args.config).stem)])
    device = init_distributed()
    try:
        train(cfg, device, resume=args.resume)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("pretrain.py", main))
