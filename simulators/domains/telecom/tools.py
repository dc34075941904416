"""The telecom domain's tools: a mobile operator's customer support (lines, plans, bills, top-ups, roaming).

Tools refuse what the records make impossible (an unknown id, a suspended line, a bill already paid, too little
account credit) with `Error: ...`. Limits the agent must keep on its own (one plan change per cycle, a top-up
cap, one late-fee waiver per customer, no roaming with an overdue bill) are the policy's, checked in
`rules.py`: a tool that enforced them would leave the agent nothing to get wrong.
"""

from __future__ import annotations

import json
from typing import Any

from apigen_mt.simulators.domains.telecom.constants import (
    LATE_FEE,
    NON_PAYMENT,
    TODAY,
    TOPUP_PRICES,
    CustomerSuspension,
    TopupSize,
    money,
)
from apigen_mt.simulators.toolkit import Toolkit, tool


def _dump(record: Any) -> str:
    return json.dumps(record)


def _digits(phone_number: str) -> str:
    return "".join(char for char in phone_number if char.isdigit())


class TelecomTools(Toolkit):
    """Tools over a database `{"bills", "lines", "plans", "users"}`."""

    def _charge(self, user_id: str, payment_method_id: str, amount: float) -> str | None:
        """Take `amount` from one of the user's payment methods; the error observation when it cannot pay.

        Cards and bank accounts are charged outside the records; account credit is debited here.
        """
        method = self.db["users"][user_id]["payment_methods"].get(payment_method_id)
        if method is None:
            return f"Error: payment method {payment_method_id} is not in the customer's profile"
        if method["source"] == "account_credit":
            if method["balance"] < amount:
                return (
                    f"Error: account credit {payment_method_id} holds {money(method['balance'])}, "
                    f"less than {money(amount)}"
                )
            method["balance"] = round(method["balance"] - amount, 2)
        return None

    @tool()
    def authenticate_user(self, phone_number: str, pin: str) -> str:
        """Identify the customer from the phone number of one of their lines and their account PIN; returns the user id.

        Args:
            phone_number: A phone number of one of the customer's lines, such as '415-555-0132'; spaces, dashes
                and brackets do not matter.
            pin: The customer's account PIN, such as '0417'.
        """
        wanted = _digits(phone_number)
        line = next(
            (line for line in self.db["lines"].values() if wanted and _digits(line["phone_number"]) == wanted), None
        )
        if line is not None and self.db["users"][line["user_id"]]["pin"] == pin:
            return line["user_id"]
        return "Error: no customer has this phone number and PIN"

    @tool()
    def get_user_details(self, user_id: str) -> str:
        """Show a customer's profile: name, email, address, payment methods, and the ids of their lines and bills.

        Args:
            user_id: The customer's user id, such as 'ana_silva_4821'.
        """
        user = self.db["users"].get(user_id)
        return "Error: user not found" if user is None else _dump(user)

    @tool()
    def get_line_details(self, line_id: str) -> str:
        """Show a line: phone number, plan, status, roaming, data used and top-ups this cycle, and its device.

        Args:
            line_id: The line id, such as 'L482913'.
        """
        line = self.db["lines"].get(line_id)
        return "Error: line not found" if line is None else _dump(line)

    @tool()
    def get_bill_details(self, bill_id: str) -> str:
        """Show a monthly bill: the month, its items and total, due date, status, and payments.

        Args:
            bill_id: The bill id, such as 'B5520391'.
        """
        bill = self.db["bills"].get(bill_id)
        return "Error: bill not found" if bill is None else _dump(bill)

    @tool()
    def list_plans(self) -> str:
        """List every plan: monthly fee, data allowance in GB (null for unlimited), roaming,
        and whether it is offered."""
        return _dump(self.db["plans"])

    @tool(writes=True)
    def change_plan(self, line_id: str, plan_id: str) -> str:
        """Move an active line to another plan that is offered; it takes effect today. Returns the updated line.

        Args:
            line_id: The line id, such as 'L482913'.
            plan_id: The new plan's id, such as 'plus_30'; see list_plans.
        """
        line, plan = self.db["lines"].get(line_id), self.db["plans"].get(plan_id)
        if line is None:
            return "Error: line not found"
        if plan is None:
            return "Error: plan not found"
        if line["status"] != "active":
            return f"Error: line {line_id} is suspended; only an active line can change plan"
        if not plan["available"]:
            return f"Error: plan {plan_id} is no longer offered"
        if line["plan_id"] == plan_id:
            return f"Error: line {line_id} is already on plan {plan_id}"
        if line["roaming"] and not plan["roaming"]:
            return f"Error: plan {plan_id} has no roaming; turn roaming off on line {line_id} first"
        line["plan_id"] = plan_id
        line["last_plan_change"] = TODAY.isoformat()
        return _dump(line)

    @tool(writes=True)
    def buy_data_topup(self, line_id: str, size_gb: TopupSize, payment_method_id: str) -> str:
        """Add extra data to an active line with a limited plan for the rest of this billing cycle. Returns the line.

        Args:
            line_id: The line id, such as 'L482913'.
            size_gb: How many GB to add; each size has its own price (see the policy).
            payment_method_id: The id of one of the customer's payment methods, such as 'credit_card_1234567'.
        """
        line = self.db["lines"].get(line_id)
        if line is None:
            return "Error: line not found"
        if line["status"] != "active":
            return f"Error: line {line_id} is suspended; only an active line can get a top-up"
        if self.db["plans"][line["plan_id"]]["data_gb"] is None:
            return f"Error: line {line_id} has unlimited data; top-ups are for limited plans"
        price = TOPUP_PRICES[size_gb]
        problem = self._charge(line["user_id"], payment_method_id, price)
        if problem is not None:
            return problem
        line["topups"].append(
            {"size_gb": size_gb, "price": price, "payment_method_id": payment_method_id, "date": TODAY.isoformat()}
        )
        return _dump(line)

    @tool(writes=True)
    def set_roaming(self, line_id: str, enabled: bool) -> str:
        """Turn international roaming on or off for a line. Returns the updated line.

        Args:
            line_id: The line id, such as 'L482913'.
            enabled: True to turn roaming on, False to turn it off.
        """
        line = self.db["lines"].get(line_id)
        if line is None:
            return "Error: line not found"
        if line["roaming"] == enabled:
            return f"Error: roaming is already {'on' if enabled else 'off'} on line {line_id}"
        if enabled and line["status"] != "active":
            return f"Error: line {line_id} is suspended; roaming can only be turned on for an active line"
        if enabled and not self.db["plans"][line["plan_id"]]["roaming"]:
            return f"Error: plan {line['plan_id']} of line {line_id} has no roaming"
        line["roaming"] = enabled
        return _dump(line)

    @tool(writes=True)
    def pay_bill(self, bill_id: str, payment_method_id: str) -> str:
        """Pay a bill in full. Once no bill of the customer is overdue, lines suspended for non-payment resume.

        Returns the paid bill and the ids of the lines that resumed.

        Args:
            bill_id: The bill id, such as 'B5520391'.
            payment_method_id: The id of one of the customer's payment methods, such as 'bank_account_7654321'.
        """
        bill = self.db["bills"].get(bill_id)
        if bill is None:
            return "Error: bill not found"
        if bill["status"] == "paid":
            return f"Error: bill {bill_id} is already paid"
        problem = self._charge(bill["user_id"], payment_method_id, bill["amount"])
        if problem is not None:
            return problem
        bill["status"] = "paid"
        bill["payments"].append(
            {"payment_method_id": payment_method_id, "amount": bill["amount"], "date": TODAY.isoformat()}
        )
        user = self.db["users"][bill["user_id"]]
        resumed = []
        if all(self.db["bills"][other]["status"] != "overdue" for other in user["bills"]):
            for line_id in user["lines"]:
                line = self.db["lines"][line_id]
                if line["status"] == "suspended" and line.get("suspension_reason") == NON_PAYMENT:
                    line["status"] = "active"
                    del line["suspension_reason"]
                    resumed.append(line_id)
        return _dump({"bill": bill, "resumed_lines": resumed})

    @tool(writes=True)
    def waive_late_fee(self, bill_id: str) -> str:
        """Take the late fee off an overdue bill by crediting it back. Returns the updated bill.

        Args:
            bill_id: The bill id, such as 'B5520391'.
        """
        bill = self.db["bills"].get(bill_id)
        if bill is None:
            return "Error: bill not found"
        if bill["status"] != "overdue":
            return f"Error: bill {bill_id} is not overdue, so it carries no late fee"
        if bill["late_fee_waived"]:
            return f"Error: the late fee of bill {bill_id} is already waived"
        bill["items"].append({"description": "late fee waived", "amount": -LATE_FEE})
        bill["amount"] = round(bill["amount"] - LATE_FEE, 2)
        bill["late_fee_waived"] = True
        return _dump(bill)

    @tool(writes=True)
    def suspend_line(self, line_id: str, reason: CustomerSuspension) -> str:
        """Suspend an active line at the customer's request: no calls, texts or data; roaming is turned off.

        Returns the updated line.

        Args:
            line_id: The line id, such as 'L482913'.
            reason: Why the customer asks for it.
        """
        line = self.db["lines"].get(line_id)
        if line is None:
            return "Error: line not found"
        if line["status"] != "active":
            return f"Error: line {line_id} is already suspended ({line.get('suspension_reason')})"
        line["status"] = "suspended"
        line["roaming"] = False
        line["suspension_reason"] = reason
        return _dump(line)

    @tool(writes=True)
    def resume_line(self, line_id: str) -> str:
        """Resume a line the customer had suspended. Returns the updated line.

        Args:
            line_id: The line id, such as 'L482913'.
        """
        line = self.db["lines"].get(line_id)
        if line is None:
            return "Error: line not found"
        if line["status"] != "suspended":
            return f"Error: line {line_id} is not suspended"
        if line.get("suspension_reason") == NON_PAYMENT:
            return f"Error: line {line_id} is suspended for non-payment; it resumes once the overdue bills are paid"
        line["status"] = "active"
        del line["suspension_reason"]
        return _dump(line)

    @tool(terminates=True)
    def transfer_to_human_agents(self, summary: str) -> str:
        """Hand the conversation to a human agent with a summary of the issue; only when the tools cannot solve it.

        Args:
            summary: A short summary of the customer's issue.
        """
        return "Transfer successful"
