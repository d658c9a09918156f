"""SpiLiFormer models. `import models` registers the variants with timm:

    model = timm.create_model("spiliformer_4_384", num_classes=100)
"""
from .attention import ATTENTION_LAYERS, FBLiDiffAttention, FFLiDiffAttention, SpikingAttention, TokenAttention
from .checkpoint import checkpoint_filter_fn, load_checkpoint, official_key, read_checkpoint
from .errors import BackendError, CheckpointError, CheckpointMismatchError, ConfigError, UserError, user_message
from .loss import SpiLiFormerLoss, linear_alpha
from .neurons import ILIF, LIF, expand_spikes, get_neuron_layer, set_backend, spike_expanded_inference
from .spiliformer import AttentionRecord, Passes, SpiLiFormer, spiliformer_2_256, spiliformer_4_384, spiliformer_10_768

VARIANTS = ("spiliformer_4_384", "spiliformer_2_256", "spiliformer_10_768")
