"""Which variant each paper dataset uses, and the parameter counts of Table 1-2 (SPEC 5)."""
import timm
import torch

# dataset -> (variant, num_classes, SpiLiFormer params, QKFormer params = both ablations off)
PAPER_MODELS = {
    "cifar10": ("spiliformer_4_384", 10, 7_003_450, 6_706_234),
    "cifar100": ("spiliformer_4_384", 100, 7_038_100, 6_740_884),
    "cifar10dvs": ("spiliformer_2_256", 10, 1_570_698, 1_504_138),
    "ncaltech101": ("spiliformer_2_256", 101, 1_594_085, 1_527_525),
    "imagenet": ("spiliformer_10_768", 1000, 69_103_816, 64_962_760),
}


def count_parameters(name, **kwargs):
    """Parameters of timm.create_model(name, **kwargs), built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def parameter_table():
    """Rows (dataset, variant, SpiLiFormer count, expected, QKFormer count, expected), counted from code."""
    rows = []
    for dataset, (name, classes, expected, expected_qk) in PAPER_MODELS.items():
        ours = count_parameters(name, num_classes=classes)
        qk = count_parameters(name, num_classes=classes, ff_lidiff=False, fb_lidiff=False)
        rows.append((dataset, name, ours, expected, qk, expected_qk))
    return rows
