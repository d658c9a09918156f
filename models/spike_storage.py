"""Spike-aware storage of what autograd keeps for backward (decisions M1-M5, docs/benchmarks.md).

Spikes are binary, yet every conv, linear and matmul that reads them keeps them for backward in
the activations' float dtype, and BN keeps the conv output beside them. Inside `storing()` (the
model's forward enters it for `spike_storage='bits'` or `'lean'`):

- a tensor whose producer marked it (`mark`: a neuron its spikes, `spike_sum`/`spike_product`
  the sums and products of marked tensors) is kept as bits (binary) or bytes (integer counts up
  to 255) and restored exactly in backward;
- a tensor registered with `recompute_from` (a conv's output, which BN keeps) is not kept:
  backward recomputes it with the same call on the same (restored) input, so it is bitwise equal;
- level 'lean' also registers BN's output, and a neuron whose input is registered keeps that
  input's recipe instead of its state and reruns its forward in backward;
- everything else is kept as autograd keeps it (with autograd's in-place modification check).

Nothing is packed because of its values: a tensor no producer marked is never packed, and a
marked tensor modified in place (its version moved) or reinterpreted as another dtype is kept
as is. Outside `storing()` every function here is a no-op, so the model runs unchanged.
"""
import contextlib
import threading
import weakref

import torch

LEVELS = ("off", "bits", "lean")  # SpiLiFormer(spike_storage=...)
MAX_COUNT = 255  # what a uint8 holds
_MAGIC_PACK = 0x0102040810204080  # 8 bytes of 0/1 in an int64 -> their bits in the top byte
_SHIFTS = {}

_state = threading.local()  # .registry: the `storing()` in progress on this thread (hooks are per thread)


def _registry():
    return getattr(_state, "registry", None)


class _Entry:
    """What the producer said about one storage: its values (levels) or how to rebuild it (recipe)."""

    __slots__ = ("ref", "version", "dtype", "numel", "layout", "levels", "recipe", "payload", "holders",
                 "cache", "cache_uses")

    def __init__(self, tensor, levels=None, recipe=None):
        self.ref = weakref.ref(tensor)
        self.version = tensor._version
        self.dtype = tensor.dtype
        self.numel = tensor.numel()
        self.layout = (tensor.size(), tensor.stride())
        self.levels = levels
        self.recipe = recipe
        self.payload = None  # the packed storage, shared by every saved view of it
        self.holders = 0  # saved tensors and recipes that will ask for it in backward
        self.cache = None  # a recomputed value, kept until each holder has had it
        self.cache_uses = 0


class _Registry(dict):
    """storage data_ptr -> _Entry, for one forward."""

    def lookup(self, t):
        entry = self.get(t.untyped_storage().data_ptr()) if t.numel() else None
        if entry is None:
            return None
        base = entry.ref()
        # the producer's tensor must still hold this storage, unmodified, seen in its own dtype
        if (base is None or base._version != entry.version or t._version != entry.version
                or t.dtype != entry.dtype or base.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()):
            return None
        return entry


def _whole_storage(t):
    """True if t's elements are exactly its storage (dense in some dimension order, offset 0,
    nothing else in it): then every element of the storage is one of t's."""
    if t.numel() == 0 or t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return False
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _in_storage_order(t):
    """A dense tensor's elements as they lie in memory (not in index order: a channels-last
    tensor's differ), so that as_strided on a copy rebuilds any view of it."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _register(t, **what):
    registry = _registry()
    if registry is None or not isinstance(t, torch.Tensor) or not _whole_storage(t):
        return t
    registry[t.untyped_storage().data_ptr()] = _Entry(t, **what)
    return t


def mark(t, levels=1):
    """The producer's word that `t` holds integers in [0, levels] (1: binary spikes). Returns t."""
    if levels <= MAX_COUNT:
        _register(t, levels=levels)
    return t


def levels_of(t):
    """The bound a producer gave `t` (through a view too), or None."""
    registry = _registry()
    entry = registry.lookup(t) if registry is not None else None
    return entry.levels if entry is not None else None


def spike_sum(a, b):
    """a + b, marked with the sum of the bounds when both are marked (the residual stream)."""
    out = a + b
    la, lb = levels_of(a), levels_of(b)
    return mark(out, la + lb) if la is not None and lb is not None else out


def spike_product(a, b):
    """a * b, marked with the product of the bounds when both are marked (a token mask on K)."""
    out = a * b
    la, lb = levels_of(a), levels_of(b)
    return mark(out, la * lb) if la is not None and lb is not None else out


def recompute_from(out, fn, *inputs, state=False):
    """Register out = fn(*inputs) as recomputable: whoever saves `out` for backward (BN saves its
    input) gets it back from fn on the restored inputs, under the same autocast state. `fn` must
    be deterministic (a conv, a linear, BN on the batch, the LIF); the inputs are held as their
    packed form where marked.

    state=True: a neuron's input or state, registered with storage 'lean' only, and only if every
    tensor input is itself rebuilt (keeping an input would cost what dropping `out` saves)."""
    registry = _registry()
    if registry is None or not registry.packing or (state and registry.level != "lean"):
        return out
    if state and any(isinstance(x, torch.Tensor) and registry.lookup(x) is None for x in inputs):
        return out
    held = tuple(_handle(x) if isinstance(x, torch.Tensor) else ("value", x) for x in inputs)
    device = out.device.type
    autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
    return _register(out, recipe=(fn, held, autocast))


def recomputed_in_backward(t):
    """True with storage 'lean' when `t` is registered to be recomputed: a neuron reading it can keep
    it (as its recipe) and recompute its own state from it, instead of keeping that state."""
    registry = _registry()
    return (registry is not None and registry.packing and registry.level == "lean"
            and (entry := registry.lookup(t)) is not None and entry.recipe is not None)


class _MaxPoolKeepingIndices(torch.autograd.Function):
    """max_pool2d whose backward keeps the argmax indices alone (int32), not the float input:
    aten's backward reads only the input's shape, so a zero-stride stand-in gives the same result."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        out, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding)
        small = x.shape[-2] * x.shape[-1] < 2 ** 31
        ctx.save_for_backward(indices.to(torch.int32) if small else indices)
        ctx.args = (x.shape, x.dtype, kernel_size, stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        shape, dtype, kernel_size, stride, padding = ctx.args
        stand_in = grad.new_zeros((), dtype=dtype).expand(shape)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, stand_in, kernel_size, stride, padding, [1, 1], False, indices.long())
        return grad_x, None, None, None


def pool(module, x):
    """module(x); for nn.MaxPool2d inside storing(), the same values with a backward that keeps
    the indices only."""
    registry = _registry()
    if (registry is None or not registry.packing or not torch.is_grad_enabled()
            or not isinstance(module, torch.nn.MaxPool2d) or module.dilation != 1 or module.ceil_mode):
        return module(x)
    pair = torch.nn.modules.utils._pair
    return _MaxPoolKeepingIndices.apply(x, pair(module.kernel_size), pair(module.stride or module.kernel_size),
                                        pair(module.padding))


# ---------------------------------------------------------------- bits and bytes

def pack_bits(t):
    """Binary values (any dtype) -> uint8 holding 8 per byte, element j of a group in bit j."""
    flat = t.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return ((flat.view(torch.int64) * _MAGIC_PACK) >> 56).to(torch.uint8)  # int64 wraps: the top byte is exact


def unpack_bits(bits, numel, dtype):
    shifts = _SHIFTS.get(bits.device)
    if shifts is None:
        shifts = _SHIFTS[bits.device] = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(1) >> shifts) & 1).view(-1)[:numel].to(dtype)


def _encode(t, levels):
    """The marked storage's values as bits (binary) or bytes (counts); exact either way."""
    flat = _in_storage_order(t.detach())
    if levels == 1:
        return ("bits", pack_bits(flat))
    return ("bytes", flat.to(torch.uint8))


def _decode(payload, numel, dtype):
    kind, data = payload
    if kind == "bits":
        return unpack_bits(data, numel, dtype)
    return data.to(dtype)


# ---------------------------------------------------------------- the saved-tensor hooks

def _storage_flat(entry):
    """The registered storage's values again, as a flat contiguous tensor."""
    if entry.recipe is None:
        return _decode(entry.payload, entry.numel, entry.dtype)
    if entry.cache is not None:  # a conv output that BN's backward and the neuron's recomputation both need
        flat = entry.cache
        entry.cache_uses -= 1
        if entry.cache_uses <= 0:
            entry.cache = None
        return flat
    fn, held, (device, enabled, dtype) = entry.recipe
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
        out = fn(*(_unpack(h) for h in held))
    if (out.size(), out.stride()) != entry.layout or out.dtype != entry.dtype:
        raise RuntimeError(f"recomputed tensor {tuple(out.shape)} {out.dtype} does not have the layout "
                           f"of the one it replaces {entry.layout} {entry.dtype}")
    flat = _in_storage_order(out)
    if entry.holders > 1:
        entry.cache, entry.cache_uses = flat, entry.holders - 1
    return flat


def _handle(t):
    """What stands for `t` in backward: t itself (kept) or its registry entry and view (rebuilt)."""
    registry = _registry()
    entry = registry.lookup(t) if registry is not None else None
    if entry is None:
        return ("kept", t, t._version)
    if entry.recipe is None and entry.payload is None:
        entry.payload = _encode(entry.ref(), entry.levels)
    return ("rebuilt", entry, t.size(), t.stride(), t.storage_offset())


def _hold(entry):
    """One more unpack of `entry` to come in backward; a recipe's inputs are asked for once it is."""
    entry.holders += 1
    if entry.holders == 1 and entry.recipe is not None:
        for h in entry.recipe[1]:
            if h[0] == "rebuilt":
                _hold(h[1])


def _pack(t):
    """Saved-tensor pack hook."""
    handle = _handle(t)
    if handle[0] == "rebuilt":
        _hold(handle[1])
    return handle


def _unpack(packed):
    if packed[0] == "value":
        return packed[1]
    if packed[0] == "kept":
        _, t, version = packed
        if t._version != version:  # what autograd checks for the tensors it keeps itself
            raise RuntimeError("one of the variables needed for gradient computation has been modified by an "
                               f"inplace operation: a tensor of shape {list(t.shape)} is at version "
                               f"{t._version}; expected version {version} instead")
        return t
    _, entry, size, stride, offset = packed
    return _storage_flat(entry).as_strided(size, stride, offset)


@contextlib.contextmanager
def storing(enabled=True, observer=None, level="bits"):
    """Autograd keeps marked tensors packed and registered ones as recipes inside this block.
    level 'bits': spikes as bits, BN's input recomputed; 'lean': the neurons' state (and the BN
    output it is computed from) recomputed too.

    observer(tensor, held): called for every tensor autograd saves, with what is kept for it
    (`held_bytes` measures that); with enabled=False the producers' marks are still recorded
    and everything is kept as autograd keeps it (the memory report's float baseline)."""
    if (not enabled and observer is None) or _registry() is not None:  # nested: the outer one is in charge
        yield
        return
    registry = _state.registry = _Registry()
    registry.packing = enabled
    registry.level = level

    def pack(t):
        held = _pack(t) if enabled else ("kept", t, t._version)
        if observer is not None:
            observer(t, held)
        return held

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
            yield
    finally:
        _state.registry = None


def active():
    return _registry() is not None


@contextlib.contextmanager
def paused():
    """No spike storage inside (a checkpointed block: it keeps nothing, and its recomputation in
    backward must make the same calls as its forward did)."""
    registry = _registry()
    _state.registry = None
    try:
        yield
    finally:
        _state.registry = registry


def describe(t):
    """What the producers said about `t` inside `storing()`: 'binary', 'counts', 'recomputed' or None."""
    registry = _registry()
    entry = registry.lookup(t) if registry is not None else None
    if entry is None:
        return None
    if entry.recipe is not None:
        return "recomputed"
    return "binary" if entry.levels == 1 else "counts"


def held_storage(held):
    """(key, bytes) of the memory one saved tensor's `held` form occupies; the key is shared by
    everything that shares that memory, so summing over distinct keys counts it once."""
    if held[0] == "kept":
        t = held[1]
        return ("storage", t.untyped_storage().data_ptr()), t.untyped_storage().nbytes()
    entry = held[1]
    if entry.recipe is not None:  # its inputs are held (and counted) by the op that read them
        return ("recipe", id(entry)), 0
    return ("payload", id(entry)), entry.payload[1].untyped_storage().nbytes()
