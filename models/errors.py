"""The project's user errors: bad data, a bad checkpoint, a bad flag. Scripts print these as one
`error:` line; any other exception is a bug and keeps its traceback."""


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A flag, recipe or model setting that cannot work."""


class BackendError(ConfigError, RuntimeError):
    """A LIF kernel that cannot run here (its library is missing, or the tensor's device is wrong)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or used."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose tensors do not fit the model."""


def user_message(exc):
    """The one line to print. An error raised in a DataLoader worker arrives re-wrapped with the
    worker's traceback in its message; keep only the original message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
