"""The experiment runner and the ``repro`` command line for both papers."""

__all__: list[str] = []
