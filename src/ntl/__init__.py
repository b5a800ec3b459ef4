"""Number Token Loss: a regression-like loss on number tokens for language models."""

__all__: list[str] = []
