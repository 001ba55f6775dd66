"""The engine's own exceptions, in a module without torch: ``cli`` names them in every tool, torch-free ones too."""


class ExistingRunError(RuntimeError):
    pass


class OutputLockedError(RuntimeError):
    """The output directory is locked by another live run."""
