"""The one base class for problems a user can fix: bad data, bad config, a broken cache.

Such errors are reported as one clear line, in the step's log and on standard error, never
as a traceback (``mammoscale.logs.configure`` sees to it); anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's data, configuration or files, explained by its message."""
