"""Train or evaluate SpiLiFormer-10-768 on ImageNet-1K (Table 1), on one GPU or with torchrun.

    torchrun --nproc_per_node=8 ./imagenet_1k/train.py --output_dir O --log_dir O --data_path DIR \
        --model SpiLiFormer_10_768 --input_size 224 --time_step 4 --batch_size 64 --accum_iter 1
    ... --resume CKPT --eval          (add --legacy for the authors' released weights)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("imagenet"))
