"""Train or evaluate SpiLiFormer-4-384 on CIFAR-100 (Table 2).

    python ./cifar100/train.py --output ./cifar100/outputs --config ./cifar100/cifar100.yml -data-dir DIR -T 4
    python ./cifar100/train.py --config ./cifar100/cifar100.yml -data-dir DIR --eval --resume CKPT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("cifar100"))
