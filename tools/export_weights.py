"""Turn a DeepSpeed checkpoint (ZeRO stage 0/1/2, any precision) into consolidated fp32 weights.

    python tools/export_weights.py output/pretrain_k400/epoch-0800 weights/videoconvmae_b_k400
    -> weights/videoconvmae_b_k400.safetensors  (fp32 tensors)
       weights/videoconvmae_b_k400.json         (preset name, model config, epoch, source)

Load them without DeepSpeed: `video_mcmae.models.from_weights(path) -> (model, report)` or
`video_mcmae.api.load(path)`, or pass the .safetensors to `tools/run_finetune.py --finetune`.
"""
import argparse
import sys

from video_mcmae.cli import run_cli
from video_mcmae.engine.checkpoint import export_weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint tag folder (output/epoch-0005) or a run's output dir (uses 'latest')")
    parser.add_argument("out", help="output path without extension (.safetensors and .json are written)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    return run_cli(lambda: _export(args))


def _export(args: argparse.Namespace) -> None:
    sf_path, json_path = export_weights(args.checkpoint, args.out, overwrite=args.overwrite)
    print(f"wrote {sf_path}\nwrote {json_path}")


if __name__ == "__main__":
    sys.exit(main())
