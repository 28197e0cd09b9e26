"""Errors that are a user's mistake rather than a bug of ours.

Anything raised as a :class:`UserError` carries one sentence saying what was wrong and what is
allowed; the command line prints it on one line and exits non-zero, without a traceback.
"""


class UserError(ValueError):
    """A mistake in user input: a spec, an option value, a tensor handed to an estimator."""


class SpecError(UserError):
    """A spec string names an unknown entry, an unknown option or a bad option value."""


class IncompatibleError(UserError):
    """An estimator cannot be used with a problem (wrong family, needs a relaxable objective...)."""
