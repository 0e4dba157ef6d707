"""The one exception type that means "the user can fix this".

The CLI turns a :class:`MlpError` into a single line on stderr and a non-zero exit code;
any other exception is a bug in mnist_mlp and keeps its traceback.
"""


class MlpError(Exception):
    """A problem with the user's input, files, configuration or network, stated in one line."""


class Stopped(MlpError):
    """Stopped on request (Ctrl-C) after saving what resumes; the message says how. Exit code
    130, as for SIGINT."""

    exit_code = 130


def one_line(text: object) -> str:
    """``text`` with its line breaks shown as ``\\n``: what a user wrote (a key, a value) may hold
    them, and an error stays one line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


class DownloadError(MlpError):
    """Every source of a dataset file failed; the message lists each and why."""


class ConfigError(MlpError):
    """A configuration key is unknown, has the wrong type, or breaks its rule."""


class CheckpointError(MlpError):
    """A checkpoint is missing, malformed or does not fit the model it describes."""


class WriteError(MlpError):
    """A file could not be written (no space left, a read-only or forbidden folder, ...); the
    previous file, if any, is untouched."""


class IdxError(MlpError, ValueError):
    """Bytes that are not a well-formed IDX file (a ``ValueError`` too, as parsers raise)."""
