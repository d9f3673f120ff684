"""The dict round trip of the models' dataclass configs (exports store them as JSON-able dicts), and their error."""

import dataclasses

from t2icli.errors import T2IError

__all__ = ["ConfigDict", "ModelConfigError"]


class ModelConfigError(T2IError):
    """An impossible model configuration (e.g. stages that do not fit the image size); the message names it."""


class ConfigDict:
    """Mixin for a dataclass config: to_dict / from_dict (unknown keys are an error), positivity checks.

    Subclasses set `_what` (a name for messages) and `_predates`: {field: value} for fields added after exports
    were first written, the value an export without the field was made with."""

    _error = ModelConfigError
    _what = "config"
    _predates = {}

    def to_dict(self):
        """A JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of to_dict; unknown keys are an error (an export from a newer t2i); a field of `_predates` that
        d lacks takes the value that export was made with."""
        d = {**cls._predates, **d}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise cls._error(f"unknown {cls._what} keys {sorted(unknown)} (export from a newer t2i?)")
        return cls(**d)

    def check_positive(self, *names):
        """Raise `_error` naming the first of these fields that is < 1."""
        for name in names:
            if int(getattr(self, name)) < 1:
                raise self._error(f"{name} must be >= 1, got {getattr(self, name)}")
