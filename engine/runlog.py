"""Progress lines, per-epoch JSON log and tensorboard; only the main process writes."""
import datetime
import json
import time
from collections import defaultdict

from torch.utils.tensorboard import SummaryWriter


def fmt_time(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class Meter:
    """Running averages of named scalars, weighted by batch size."""

    def __init__(self):
        self.sums = defaultdict(float)
        self.counts = defaultdict(float)

    def update(self, n=1, **values):
        for k, v in values.items():
            self.sums[k] += float(v) * n
            self.counts[k] += n

    def avg(self, key):
        return self.sums[key] / max(self.counts[key], 1)

    def state(self):
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load(self, state):
        self.sums.update(state["sums"])
        self.counts.update(state["counts"])


class Progress:
    """'epoch 3/410 [ 50/781] loss 1.234 lr 1.0e-03 412 img/s eta 0:01:20' every `interval` steps."""

    def __init__(self, header, total, interval, enabled=True):
        self.header, self.total, self.interval, self.enabled = header, total, interval, enabled
        self.start = time.time()
        self.images = 0

    def step(self, i, batch, meter, lr):
        self.images += batch
        done = i + 1
        if not self.enabled or (done % self.interval and done != self.total):
            return
        elapsed = time.time() - self.start
        eta = elapsed / done * (self.total - done)
        width = len(str(self.total))
        print(f"{self.header} [{done:>{width}}/{self.total}] loss {meter.avg('loss'):.4f} lr {lr:.2e} "
              f"{self.images / elapsed:.1f} img/s eta {fmt_time(eta)}", flush=True)

    def images_per_second(self):
        return self.images / max(time.time() - self.start, 1e-9)


class RunLog:
    """log.txt (one JSON line per epoch) and tensorboard scalars, on the main process only."""

    def __init__(self, run_dir, tb_dir, enabled):
        self.enabled = enabled
        self.path = run_dir / "log.txt"
        self.writer = SummaryWriter(str(tb_dir)) if enabled else None

    def epoch(self, record):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        self.writer.flush()

    def ensure(self, record):
        """Append `record` unless log.txt already has its epoch (a kill can fall between a checkpoint
        and its log line; the checkpoint carries the line)."""
        if not self.enabled:
            return
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        logged = {json.loads(line).get("epoch") for line in lines if line.strip().startswith("{")}
        if record["epoch"] not in logged and (not logged or record["epoch"] > max(logged)):
            self.epoch(record)

    def close(self):
        if self.writer is not None:
            self.writer.close()
