"""Multi-view test of a finetuned VideoConvViT: every (video, temporal view, spatial crop) of the
test list, merged per video across ranks; report in test.output_dir (default <run.output_dir>/test).

    python tools/test_multiview.py --config configs/finetune/k400_videoconvvit_base.yaml \
        --checkpoint output/ft_k400/best                       # one process
    torchrun --nproc_per_node 8 tools/test_multiview.py --config ... --checkpoint weights.safetensors
    deepspeed tools/test_multiview.py --config ... --checkpoint output/ft_k400 --opt data.test_num_spatial_crops=1
"""
import sys

from video_mcmae.cli.multiview import main

if __name__ == "__main__":
    sys.exit(main())
