"""The one exception type users see: a message that names the bad input and what would be valid."""


class AlignProError(Exception):
    """Bad input or an unusable environment. The CLI prints the message and exits with status 2."""


class ConfigError(AlignProError):
    """A setting (CLI flag or YAML key) has an invalid value."""
