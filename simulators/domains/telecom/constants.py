"""Facts of the telecom domain, stated once: the generator, tools, rules and policy text all read them here."""

from __future__ import annotations

from datetime import date
from typing import Literal, get_args

# The domain's fixed "now". Tools date what they record with it; the data is generated around it.
TODAY = date(2025, 3, 15)
# The current billing cycle runs from the first of the month; usage, top-ups and plan changes count per cycle.
CYCLE_START = TODAY.replace(day=1)
# A month's bill is issued on the first of the next month and due on this day of that month.
BILL_DUE_DAY = 25
LATE_FEE = 15.0  # added to a bill still unpaid after its due date
LATE_FEE_WAIVERS = 1  # late fees an agent may waive for one customer, ever
SUSPEND_AFTER_DAYS = 30  # a bill overdue this long suspends all the customer's lines for non-payment
PIN_DIGITS = 4  # an account PIN's length; with a line's phone number, the PIN authenticates the customer

TOPUP_PRICES = {1: 5.0, 5: 20.0, 10: 35.0}  # data top-up size in GB -> price
TopupSize = Literal[tuple(TOPUP_PRICES)]  # type: ignore[valid-type]  # the sizes offered, as the tool's enum
MAX_TOPUPS_PER_CYCLE = 3  # per line
ROAMING_DAILY_FEE = 10.0  # billed for each day a line with roaming on uses a network abroad

# Why a customer may ask for a line to be suspended; billing alone suspends for non-payment.
CustomerSuspension = Literal["lost or stolen device", "travel"]
NON_PAYMENT = "non-payment"
SuspensionReason = Literal[CustomerSuspension, NON_PAYMENT]  # type: ignore[valid-type]
CUSTOMER_SUSPENSIONS: tuple[str, ...] = get_args(CustomerSuspension)


def money(amount: float) -> str:
    return f"${amount:,.2f}"


def policy_facts() -> dict[str, str]:
    """The facts as the policy text shows them; `policy.md` names them in braces, such as `{late_fee}`."""
    return {
        "today": TODAY.isoformat(),
        "pin_digits": str(PIN_DIGITS),
        "cycle_start": CYCLE_START.isoformat(),
        "bill_due_day": str(BILL_DUE_DAY),
        "late_fee": money(LATE_FEE),
        "late_fee_waivers": "one late fee" if LATE_FEE_WAIVERS == 1 else f"{LATE_FEE_WAIVERS} late fees",
        "suspend_after_days": str(SUSPEND_AFTER_DAYS),
        "topup_prices": ", ".join(f"{size} GB for {money(price)}" for size, price in TOPUP_PRICES.items()),
        "max_topups": str(MAX_TOPUPS_PER_CYCLE),
        "roaming_daily_fee": money(ROAMING_DAILY_FEE),
        "customer_suspensions": " or ".join(f"`{reason}`" for reason in CUSTOMER_SUSPENSIONS),
    }
