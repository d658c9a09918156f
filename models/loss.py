"""The two-pass loss of eqs 20-22."""
import torch.nn as nn
import torch.nn.functional as F


class SpiLiFormerLoss(nn.Module):
    """alpha * CE(pass-1 logits) + (1 - alpha) * CE(pass-2 logits) (eq 22; the paper's alpha is 0.5).

    `target` is class indices or a soft [B, classes] distribution (mixup, label smoothing);
    `label_smoothing` applies to hard targets. `output` is the model's Passes (or any (first, final)
    pair); a first of None (fb_lidiff=False) or a single logits tensor gets plain CE.
    """

    def __init__(self, alpha=0.5, label_smoothing=0.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.label_smoothing = label_smoothing

    def ce(self, logits, target):
        if target.dim() == logits.dim():  # soft targets: the smoothing is already in them
            return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def forward(self, output, target):
        first, final = output if isinstance(output, (tuple, list)) else (None, output)
        if first is None:
            return self.ce(final, target)
        return self.alpha * self.ce(first, target) + (1 - self.alpha) * self.ce(final, target)

    def extra_repr(self):
        return f"alpha={self.alpha}, label_smoothing={self.label_smoothing}"


def linear_alpha(epoch, epochs, start=0.5, end=0.2):
    """alpha moving linearly from `start` (epoch 0) to `end` (last epoch).

    The official CIFAR10-DVS code trained this way (0.5 -> 0.2); its ImageNet and CIFAR code used a
    constant 0.2. The paper's default is a constant 0.5. Offered to match released weights.
    """
    if epochs <= 1:
        return end
    return start + (end - start) * min(max(epoch, 0), epochs - 1) / (epochs - 1)
