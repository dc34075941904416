"""Facts of the retail domain, stated once: the tools and the rules read them from here."""

from typing import Literal, get_args

# The only reasons an order may be cancelled for; the tool's enum and the policy rule both come from here.
CancelReason = Literal["no longer needed", "ordered by mistake"]
CANCEL_REASONS: tuple[str, ...] = get_args(CancelReason)
