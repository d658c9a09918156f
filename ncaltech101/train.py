"""Train or evaluate SpiLiFormer-2-256 on N-Caltech101 (Table 2: 89.18 %, T=16).

    python ./ncaltech101/train.py --output-dir ./ncaltech101/outputs/ --data-path DIR --dts_cache DIR/dts_cache --T 16
    python ./ncaltech101/train.py --data-path DIR --T 16 --input-size 128 128 --eval --resume CKPT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("ncaltech101"))
