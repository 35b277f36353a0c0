"""Error type for bad user input: one line naming the bad value and what is expected."""


class InputError(ValueError):
    """Bad input (file, value, config). Command-line entry points print ``error: <message>`` and exit 2."""
