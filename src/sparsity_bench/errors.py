"""Problems the user can fix. Each is told in one sentence, without a stack trace."""


class UserError(Exception):
    """Base of every error whose message is meant for the user as it is."""


class ConfigError(UserError, ValueError):
    """A problem with the configuration."""


class DataError(UserError):
    """Data that cannot be found, fetched or read."""


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/Inf."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked: it holds another configuration's run, or an unreadable checkpoint.

    Its results.json, if any, belongs to that other run and is left alone.
    """
