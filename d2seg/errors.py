"""Errors for user mistakes.

Every error a user can fix (a bad config key, a broken annotation file, a missing image, a corrupt
checkpoint) is one of these classes. Its message names the file or key and says how to fix it;
command-line tools print it on one line and exit with status 2 (see ``d2seg.utils.cli``).
Anything else is a bug in d2seg and may show a traceback.
"""


class D2SegError(Exception):
    """Base class of every user-facing d2seg error."""


class ConfigError(D2SegError):
    """A config file, a command-line override or a config value is wrong."""


class DatasetError(D2SegError):
    """A dataset (COCO json, image folder, registration) is missing or malformed."""


class OutputExistsError(ConfigError, DatasetError):
    """A folder a run would create exists already (runs never overwrite earlier outputs).

    It is the output option's fault (a ConfigError) and, for the dataset tools, a dataset folder
    mistake (a DatasetError): either ``except`` catches it.
    """


class AnnotationError(D2SegError):
    """One annotation file (Labelme JSON, VIA JSON, mask image) cannot be read or is invalid."""


class CheckpointError(D2SegError):
    """A checkpoint file is missing, corrupt, or holds something other than tensors."""


class ExportError(D2SegError):
    """An exported graph disagrees with the PyTorch model it was exported from."""
