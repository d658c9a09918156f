"""What a file may set on the model: a checkpoint's record and a yml recipe are data, so a value
from one reaches the model only if SpiLiFormer.SETTINGS declares it and it is a plain value of the
declared kind (decisions E19)."""
from .errors import ConfigError
from .spiliformer import SpiLiFormer


def setting_problem(kind, value):
    """Why `value` is not a plain value of `kind` (a type, [kind] for a list, or a tuple of the allowed
    values), or None. A checkpoint's record and a recipe are data: their values must be plain."""
    if isinstance(kind, tuple):
        return None if value in kind and type(value) in set(map(type, kind)) else f"is not one of {list(kind)}"
    if isinstance(kind, list):
        if not isinstance(value, (list, tuple)):
            return "is not a list"
        return next(filter(None, (setting_problem(kind[0], v) for v in value)), None)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        return _NOT[kind]
    return None


_NOT = {int: "is not an integer", float: "is not a number", bool: "is not true or false", str: "is not a string"}


def file_settings(kwargs, source):
    """Model constructor arguments read from a file (a checkpoint's record, a yml recipe): only the
    declared SpiLiFormer.SETTINGS, each a plain value of its kind. Anything else would let the file
    steer timm.create_model (pretrained=True with a pretrained_cfg_overlay URL and a cache_dir fetches
    and writes files); one ConfigError line names the key."""
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{source}: model_kwargs is a {type(kwargs).__name__}, expected a mapping of model "
                          "settings")
    for key, value in kwargs.items():
        if key not in SpiLiFormer.SETTINGS:
            raise ConfigError(f"{source}: model_kwargs {key!r} is not a model setting, and only model settings "
                              f"({', '.join(SpiLiFormer.SETTINGS)}) are taken from a file; if you trust it, "
                              f"give --model-kwargs {key}=... on your own command line")
        problem = setting_problem(SpiLiFormer.SETTINGS[key], value)
        if problem:
            raise ConfigError(f"{source}: model_kwargs {key}: {value!r} {problem}")
    return dict(kwargs)
