"""VideoConvMAE / ConvMAE pretraining through DeepSpeed.

    deepspeed tools/run_pretrain.py --config configs/pretrain/k400_videoconvmae_base.yaml
    python tools/run_pretrain.py --config configs/demo/pretrain.yaml        # one process
    torchrun --nproc_per_node 2 tools/run_pretrain.py --config ... --auto_resume
"""
import sys

from video_mcmae.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
