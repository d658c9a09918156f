"""Train or evaluate SpiLiFormer-2-256 on CIFAR10-DVS (Table 2: 86.7 %, T=16).

    python ./cifar10dvs/train.py --output-dir ./cifar10dvs/outputs/ --data-path DIR --T 16
    python ./cifar10dvs/train.py --data-path DIR --T 16 --eval --resume CKPT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("cifar10dvs"))
