"""Names renamed in this release and still accepted until the next: the warning that says so.

Renamed: the config key `blueprints` (now `tasks`), `trajectories --blueprints` (`--tasks`), `blueprints --limit`
(`--proposals`; `generate --limit` caps the proposals too while `--proposals` is not given) and `parse --format`
(`--parser`). A former name works as the new one and warns with a `RenamedWarning`: a FutureWarning, so a
library caller sees it by default and can filter it or make it an error; the `apigen-mt` entry point prints it
as one `apigen-mt: warning: ...` line on stderr.
"""

from __future__ import annotations

import warnings

UNTIL_NEXT_RELEASE = "until the next release"


class RenamedWarning(FutureWarning):
    """A config key or CLI option was given under its former name; the message is one line."""


def warn_renamed(where: str, old: str, new: str) -> None:
    """Warn that `where` used `old`, which is now `new`."""
    message = f"{where}: {old} is now {new}; rename it (the old name is accepted {UNTIL_NEXT_RELEASE})"
    warnings.warn(message, RenamedWarning, stacklevel=2)
