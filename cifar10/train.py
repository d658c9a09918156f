"""Train or evaluate SpiLiFormer-4-384 on CIFAR-10 (Table 2).

    python ./cifar10/train.py --output ./cifar10/outputs --config ./cifar10/cifar10.yml -data-dir DIR -T 4
    python ./cifar10/train.py --config ./cifar10/cifar10.yml -data-dir DIR --eval --resume CKPT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("cifar10"))
