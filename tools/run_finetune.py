"""VideoConvViT / ConvViT finetuning, linear probing and validation through DeepSpeed.

    deepspeed tools/run_finetune.py --config configs/finetune/k400_videoconvvit_base.yaml \
        --finetune output/pretrain_k400/epoch-0800
    deepspeed tools/run_finetune.py --config configs/finetune/ssv2_videoconvvit_base.yaml --data ssv2 --finetune W
    python tools/run_finetune.py --config configs/demo/finetune.yaml                # one process
    python tools/run_finetune.py --config ... --eval --resume output/ft/best
"""
import sys

from video_mcmae.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
