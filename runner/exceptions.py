"""The errors runner raises. Every message says what was wrong and what to do."""


class RunnerError(Exception):
    """Base of every error runner reports to a user as one clear line."""


class SpecError(RunnerError):
    """A job spec that cannot be queued; `problems` holds one line per field."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class InvalidTransition(RunnerError):
    """A job state change that the transition table does not allow."""


class JobNotFound(RunnerError):
    """No job (or no unique job) has that id or prefix."""


class PermissionDenied(RunnerError):
    """The user may not act on that job (only its owner or root may)."""


class EnvBuildError(RunnerError):
    """uv failed to build an env; the message carries the relevant uv lines."""


class RegistryError(RunnerError):
    """A registry entry or lookup that is wrong: unknown model, bad table."""


class RepoError(RunnerError):
    """A repository that cannot be cloned, pinned or patched."""
