"""Forgetting a person: the rows (``rows``) and everywhere else (``everywhere``)."""

from .everywhere import forget_everywhere

__all__ = ["forget_everywhere"]
