#!/usr/bin/env python
"""Convert a ResNet checkpoint to another layout and report where every tensor went.

  python tools/convert.py moco_v2_800ep_pretrain.pth.tar moco_r50.pkl --to detectron2
  python tools/convert.py work/mocov2/last.pth mocov2_deeplab.pth --to mmseg
  python tools/convert.py work/transfer/cityscapes_deeplabv3-x/model_final.pth deeplabv3_mmseg.pth --to mmseg
  python tools/convert.py torchvision_r50.pth r50.safetensors --to safetensors --arch resnet50
  python tools/convert.py --inspect some_checkpoint.pth
  python tools/convert.py --list-formats

The input layout is detected (or named with --from). Each source tensor ends up in the output or
in the report with the reason it was left out (classifier, projector, key encoder, queue, ...);
a tensor no rule explains, or a backbone tensor the file lacks, is an error (--allow-partial
converts anyway and names each one). Detectron2, mmseg and mmdet outputs get a config next to
them (OUT with .yaml / .py) holding the settings the weights need; an existing one is replaced only
with --force. Outputs are written atomically and never over the input. Errors exit with status 2.

A fine-tuned DeepLab-v3 (the model_final.pth of --task cityscapes_deeplabv3) goes to mmseg whole: --to mmseg writes
every tensor (backbone, decode and auxiliary heads) as an mmseg checkpoint for mmseg's tools/test.py with
configs/mmseg/deeplabv3_r50-d8_basic-stem_4xb2-40k_cityscapes-512x1024.py (--to torchvision gives its backbone).
"""
import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import run_tool  # noqa: E402
from converters import READERS, WRITERS, convert, load_backbone  # noqa: E402
from converters.canonical import RESNET_ARCHS  # noqa: E402
from converters.readers import FORMAT_ALIASES, PartialBackboneWarning  # noqa: E402
from converters.report import SourceSummary  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", metavar="IN", help="checkpoint to convert")
    parser.add_argument("output", nargs="?", metavar="OUT", help="file to write (must not be IN)")
    parser.add_argument("--to", choices=WRITERS, metavar="FORMAT",
                        help="output format: " + ", ".join(WRITERS) + " (see --list-formats)")
    parser.add_argument("--from", dest="from_", choices=[*READERS, *FORMAT_ALIASES], metavar="FORMAT",
                        help="input format (default: detected): " + ", ".join([*READERS, *FORMAT_ALIASES]))
    parser.add_argument("--arch", choices=RESNET_ARCHS, help="expected architecture; another one is an error")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert a checkpoint that lacks backbone tensors (the target engine keeps its own "
                             "initialisation for them) or holds tensors no rule explains (dropped); the report "
                             "and stderr name each one")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing config next to OUT (OUT.yaml for detectron2, OUT.py for mmseg and "
                             "mmdet), which may hold your edits; OUT itself is always rewritten")
    parser.add_argument("--inspect", metavar="IN", help="print IN's detected format, architecture and tensor "
                        "counts; write nothing")
    parser.add_argument("--list-formats", action="store_true", help="list the input and output formats")
    parser.add_argument("-v", "--verbose", action="store_true", help="name every tensor in the report")
    args = parser.parse_args(argv)
    if not (args.list_formats or args.inspect) and not (args.input and args.output and args.to):
        parser.error("give IN OUT --to FORMAT, or --inspect IN, or --list-formats")
    return args


def summary(function) -> str:
    return (function.__doc__ or "").strip().splitlines()[0]


def export_whole_segmenter(input_path, output_path) -> bool:
    """A fine-tuned DeepLab-v3 goes to mmseg whole; False for any other checkpoint (converted as a backbone)."""
    from benchmarks.segmentation.mmseg import export_mmseg, read_segmenter

    if read_segmenter(input_path) is None:
        return False
    count = export_mmseg(input_path, output_path)
    print(f"{input_path}: a whole DeepLab-v3 (backbone, decode_head, auxiliary_head)\n"
          f"{output_path}: mmsegmentation checkpoint, all {count} tensors under their own names (meta.dataset_meta: "
          "Cityscapes' classes and palette); test it with mmseg's tools/test.py and "
          "configs/mmseg/deeplabv3_r50-d8_basic-stem_4xb2-40k_cityscapes-512x1024.py")
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_formats:
        width = max(map(len, [*READERS, *WRITERS]))
        print("input formats (--from; detected when omitted):")
        print("\n".join(f"  {name:<{width}}  {summary(read)}" for name, read in READERS.items()))
        print("  aliases: " + ", ".join(f"{alias} = {name}" for alias, name in FORMAT_ALIASES.items()))
        print("output formats (--to):")
        print("\n".join(f"  {name:<{width}}  {summary(write)}" for name, write in WRITERS.items()))
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialBackboneWarning)  # the report says it, below, in full
        if args.inspect:
            state_dict, meta = load_backbone(args.inspect, format=args.from_, arch=args.arch,
                                             allow_partial=args.allow_partial)
            source = SourceSummary.from_meta(args.inspect, state_dict, meta)
            print(source.format(args.verbose))
        elif args.to == "mmseg" and export_whole_segmenter(args.input, args.output):
            return 0
        else:
            report = convert(args.input, args.output, args.to, from_=args.from_, arch=args.arch,
                             allow_partial=args.allow_partial, force=args.force)
            source = report.source
            print(report.format(args.verbose))
    if source.partial:
        print(source.partial_warning(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("convert.py", main))
