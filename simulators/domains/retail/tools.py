"""The retail domain's 16 tools, behaving exactly like tau-bench's (spec `taubench-domains.md` §2.A).

Observations, check order, mutations, key order and int/float typing are the compatibility contract,
quirks included (unrounded modify-items amounts, cancel refunding refunds, ...). Where tau-bench lets a
Python exception escape (a missing key, an empty payment history), the same exception is left to happen
here: the environment turns it into `Error: {exc}`, the text tau-bench shows.
"""

from __future__ import annotations

import json
from typing import Any

from apigen_mt.simulators.arithmetic import calculate as evaluate_expression
from apigen_mt.simulators.domains.retail.constants import CANCEL_REASONS, CancelReason
from apigen_mt.simulators.toolkit import PythonCallArguments, Toolkit, tool


def _dump(record: Any) -> str:
    return json.dumps(record)


def _new_address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    # Key order differs from the data files (country before state there); observations show it.
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country, "zip": zip}


def _items_not_in_order(order: dict[str, Any], item_ids: list[str]) -> list[Any]:
    """The ids asked for more often than the order holds them, in request order."""
    held = [item["item_id"] for item in order["items"]]
    return [item_id for item_id in item_ids if item_ids.count(item_id) > held.count(item_id)]


def _first_item(order: dict[str, Any], item_id: str) -> dict[str, Any]:
    return [item for item in order["items"] if item["item_id"] == item_id][0]


class RetailTools(PythonCallArguments, Toolkit):
    """tau-bench's retail tools over a database `{"orders", "products", "users"}`."""

    def _user_of(self, order: dict[str, Any]) -> dict[str, Any]:
        return self.db["users"][order["user_id"]]

    def _checked_item_swap(
        self,
        order_id: str,
        item_ids: list[str],
        new_item_ids: list[str],
        payment_method_id: str,
        *,
        status: str,
        status_error: str,
        round_difference: bool,
        balance_error: str,
    ) -> tuple[dict[str, Any], Any, list[dict[str, Any]], dict[str, Any]] | str:
        """Run the checks exchange and modify-items share (§2.A.3 and §2.A.11), in tau-bench's order.

        Returns the first failing check's error, or the order, the summed price difference (from int 0),
        the new variants and the paying method. Each new item is looked up among the variants of the
        product of the first order item with the old id at the same position. The two tools differ only
        in the arguments after `*`.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        order = orders[order_id]
        if order["status"] != status:
            return status_error
        missing = _items_not_in_order(order, item_ids)
        if missing:
            return f"Error: {missing[0]} not found"
        if len(item_ids) != len(new_item_ids):
            return "Error: the number of items to be exchanged should match"
        difference: Any = 0
        variants = []
        for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
            old_item = _first_item(order, item_id)
            catalogue = self.db["products"][old_item["product_id"]]["variants"]
            if not (new_item_id in catalogue and catalogue[new_item_id]["available"]):
                return f"Error: new item {new_item_id} not found or available"
            difference += catalogue[new_item_id]["price"] - old_item["price"]
            variants.append(catalogue[new_item_id])
        if round_difference:
            difference = round(difference, 2)
        methods = self._user_of(order)["payment_methods"]
        if payment_method_id not in methods:
            return "Error: payment method not found"
        method = methods[payment_method_id]
        if method["source"] == "gift_card" and method["balance"] < difference:
            return balance_error
        return order, difference, variants, method

    @tool()
    def calculate(self, expression: str) -> str:
        """Evaluate an arithmetic expression and return the result rounded to 2 decimals.

        Args:
            expression: The arithmetic to evaluate, for example '(19.99 + 5) * 3'. Only digits, spaces,
                '.', '+', '-', '*', '/' and parentheses are allowed.
        """
        return evaluate_expression(expression)

    @tool(writes=True)
    def cancel_pending_order(self, order_id: str, reason: CancelReason) -> str:
        """Cancel an order that is still pending; processed or delivered orders cannot be cancelled.

        Before calling, tell the user what will be cancelled and get an explicit yes. The order becomes
        'cancelled' and its payments are refunded: to a gift card at once, to other methods within 5-7
        business days. Returns the updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            reason: Why the user cancels: 'no longer needed' or 'ordered by mistake'.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        order = orders[order_id]
        if order["status"] != "pending":
            return "Error: non-pending order cannot be cancelled"
        if reason not in CANCEL_REASONS:
            return "Error: invalid reason"
        methods = self._user_of(order)["payment_methods"]
        # Every history entry is refunded, refunds included, and gift cards are credited entry by entry.
        refunds = []
        for entry in order["payment_history"]:
            method_id = entry["payment_method_id"]
            refunds.append({"transaction_type": "refund", "amount": entry["amount"], "payment_method_id": method_id})
            if "gift_card" in method_id:
                methods[method_id]["balance"] = round(methods[method_id]["balance"] + entry["amount"], 2)
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        order["payment_history"].extend(refunds)
        return _dump(order)

    @tool(writes=True)
    def exchange_delivered_order_items(
        self, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> str:
        """Request an exchange of items of a delivered order for other variants of the same products.

        A delivered order can be returned or exchanged only once. Before calling, tell the user what
        will be exchanged and get an explicit yes. Returns the updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            item_ids: Item ids in the order to exchange, for example ['1008292230']; repeat an id to
                exchange several units of it.
            new_item_ids: Replacement item ids, position by position: the i-th one replaces the i-th
                entry of item_ids and must be a variant of the same product.
            payment_method_id: Id of the user's payment method that pays or receives the price
                difference, for example 'gift_card_0000000' or 'credit_card_0000000'; see the user's or
                the order's details.
        """
        checked = self._checked_item_swap(
            order_id,
            item_ids,
            new_item_ids,
            payment_method_id,
            status="delivered",
            status_error="Error: non-delivered order cannot be exchanged",
            round_difference=True,
            balance_error="Error: insufficient gift card balance to pay for the price difference",
        )
        if isinstance(checked, str):
            return checked
        order, difference, _, _ = checked
        # Only a request is recorded: no money moves and the items stay as they are.
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = difference
        return _dump(order)

    @tool()
    def find_user_id_by_email(self, email: str) -> str:
        """Look up a user's id from their email address (case does not matter); errors if nobody has it.

        Args:
            email: The user's email address, for example 'jane.doe@example.com'.
        """
        wanted = email.lower()
        for user_id, user in self.db["users"].items():
            if user["email"].lower() == wanted:
                return user_id
        return "Error: user not found"

    @tool()
    def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
        """Look up a user's id from their first name, last name and zip code; errors if nobody matches.

        Prefer the email lookup; use this one when the user has no email at hand or the email finds nobody.

        Args:
            first_name: The user's first name, for example 'Jane'.
            last_name: The user's last name, for example 'Doe'.
            zip: The 5-digit zip code of the user's address, for example '10001'.
        """
        first, last = first_name.lower(), last_name.lower()
        for user_id, user in self.db["users"].items():
            name = user["name"]
            if (
                name["first_name"].lower() == first
                and name["last_name"].lower() == last
                and user["address"]["zip"] == zip
            ):
                return user_id
        return "Error: user not found"

    @tool()
    def get_order_details(self, order_id: str) -> str:
        """Show an order: its status, address, items, shipments and payments.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        return _dump(orders[order_id])

    @tool()
    def get_product_details(self, product_id: str) -> str:
        """Show a product with all its variants: item id, options, availability and price of each.

        Args:
            product_id: Id of the product, for example '6086499569'. This is not an item id: item ids
                name single variants.
        """
        products = self.db["products"]
        if product_id not in products:
            return "Error: product not found"
        return _dump(products[product_id])

    @tool()
    def get_user_details(self, user_id: str) -> str:
        """Show a user's profile: name, address, email, payment methods and order ids.

        Args:
            user_id: Id of the user, for example 'jane_doe_1234'.
        """
        users = self.db["users"]
        if user_id not in users:
            return "Error: user not found"
        return _dump(users[user_id])

    @tool()
    def list_all_product_types(self) -> str:
        """List every product type the shop sells (50 of them) as a map from product name to product id.

        Each product type comes in several variants, each with its own item id and options.
        """
        by_name = {product["name"]: product["product_id"] for product in self.db["products"].values()}
        return _dump(dict(sorted(by_name.items())))

    @tool(writes=True)
    def modify_pending_order_address(
        self, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> str:
        """Change the shipping address of a pending order.

        Before calling, tell the user the new address and get an explicit yes. Returns the updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            address1: Street line of the address, for example '42 Elm Street'.
            address2: Second line of the address, for example 'Suite 5', or '' when there is none.
            city: City, for example 'Portland'.
            state: State code, for example 'OR'.
            country: Country, for example 'USA'.
            zip: Zip code, for example '97201'.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        order = orders[order_id]
        if order["status"] != "pending":
            return "Error: non-pending order cannot be modified"
        order["address"] = _new_address(address1, address2, city, state, country, zip)
        return _dump(order)

    @tool(writes=True)
    def modify_pending_order_items(
        self, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> str:
        """Swap items of a pending order for other variants of the same products; allowed once per order.

        Before calling, tell the user which items change and the price difference, and get an explicit
        yes. Returns the updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            item_ids: Item ids in the order to swap, for example ['1008292230']; repeat an id to swap
                several units of it.
            new_item_ids: Replacement item ids, position by position: the i-th one replaces the i-th
                entry of item_ids and must be a variant of the same product.
            payment_method_id: Id of the user's payment method that pays or receives the price
                difference, for example 'gift_card_0000000' or 'credit_card_0000000'; see the user's or
                the order's details.
        """
        checked = self._checked_item_swap(
            order_id,
            item_ids,
            new_item_ids,
            payment_method_id,
            status="pending",
            status_error="Error: non-pending order cannot be modified",
            # Unlike an exchange, the difference is not rounded: float noise reaches the payment history.
            round_difference=False,
            balance_error="Error: insufficient gift card balance to pay for the new item",
        )
        if isinstance(checked, str):
            return checked
        order, difference, variants, method = checked
        order["payment_history"].append(
            {
                "transaction_type": "payment" if difference > 0 else "refund",
                "amount": abs(difference),
                "payment_method_id": payment_method_id,
            }
        )
        if method["source"] == "gift_card":
            method["balance"] = round(method["balance"] - difference, 2)
        # Each lookup sees the swaps already made, so [A, B] -> [B, C] on items [A, B] yields [C, B].
        for item_id, new_item_id, variant in zip(item_ids, new_item_ids, variants, strict=True):
            item = _first_item(order, item_id)
            item["item_id"] = new_item_id
            item["price"] = variant["price"]
            item["options"] = dict(variant["options"])
        order["status"] = "pending (item modified)"
        return _dump(order)

    @tool(writes=True)
    def modify_pending_order_payment(self, order_id: str, payment_method_id: str) -> str:
        """Pay a pending order with another of the user's payment methods; the old one is refunded.

        Before calling, tell the user which method will be charged and get an explicit yes. Returns the
        updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            payment_method_id: Id of the user's payment method that should pay the order instead, for
                example 'gift_card_0000000' or 'credit_card_0000000'; see the user's details.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        order = orders[order_id]
        if order["status"] != "pending":
            return "Error: non-pending order cannot be modified"
        methods = self._user_of(order)["payment_methods"]
        if payment_method_id not in methods:
            return "Error: payment method not found"
        history = order["payment_history"]
        if len(history) > 1 or history[0]["transaction_type"] != "payment":
            return "Error: there should be exactly one payment for a pending order"
        old_method_id = history[0]["payment_method_id"]
        if old_method_id == payment_method_id:
            return "Error: the new payment method should be different from the current one"
        amount = history[0]["amount"]
        method = methods[payment_method_id]
        if method["source"] == "gift_card" and method["balance"] < amount:
            return "Error: insufficient gift card balance to pay for the order"
        history.append({"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id})
        history.append({"transaction_type": "refund", "amount": amount, "payment_method_id": old_method_id})
        if method["source"] == "gift_card":
            method["balance"] = round(method["balance"] - amount, 2)
        # The old method is recognised by its id, not by its `source` as the new one is.
        if "gift_card" in old_method_id:
            methods[old_method_id]["balance"] = round(methods[old_method_id]["balance"] + amount, 2)
        return _dump(order)

    @tool(writes=True)
    def modify_user_address(
        self, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> str:
        """Change a user's default address (their existing orders keep theirs).

        Before calling, tell the user the new address and get an explicit yes. Returns the updated user.

        Args:
            user_id: Id of the user, for example 'jane_doe_1234'.
            address1: Street line of the address, for example '42 Elm Street'.
            address2: Second line of the address, for example 'Suite 5', or '' when there is none.
            city: City, for example 'Portland'.
            state: State code, for example 'OR'.
            country: Country, for example 'USA'.
            zip: Zip code, for example '97201'.
        """
        users = self.db["users"]
        if user_id not in users:
            return "Error: user not found"
        user = users[user_id]
        user["address"] = _new_address(address1, address2, city, state, country, zip)
        return _dump(user)

    @tool(writes=True)
    def return_delivered_order_items(self, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
        """Request a return of items of a delivered order; the order becomes 'return requested'.

        A delivered order can be returned or exchanged only once. Before calling, tell the user what will
        be returned and where the refund goes, and get an explicit yes. The user then gets an email
        explaining how to send the items back. Returns the updated order.

        Args:
            order_id: Id of the order, including its leading '#', for example '#W0000000'.
            item_ids: Item ids in the order to return, for example ['1008292230']; repeat an id to
                return several units of it.
            payment_method_id: Id of the payment method that receives the refund: the one that paid
                the order or one of the user's gift cards, for example 'gift_card_0000000'.
        """
        orders = self.db["orders"]
        if order_id not in orders:
            return "Error: order not found"
        order = orders[order_id]
        if order["status"] != "delivered":
            return "Error: non-delivered order cannot be returned"
        if payment_method_id not in self._user_of(order)["payment_methods"]:
            return "Error: payment method not found"
        if (
            "gift_card" not in payment_method_id
            and payment_method_id != order["payment_history"][0]["payment_method_id"]
        ):
            return "Error: payment method should be either the original payment method or a gift card"
        if _items_not_in_order(order, item_ids):
            return "Error: some item not found"
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return _dump(order)

    @tool()
    def think(self, thought: str) -> str:
        """Write down a thought, for example to plan several steps or keep intermediate results.

        Nothing is looked up and nothing changes.

        Args:
            thought: The thought to note.
        """
        return ""

    @tool(terminates=True)
    def transfer_to_human_agents(self, summary: str) -> str:
        """Hand the conversation over to a human agent, passing a summary of the user's issue.

        Transfer only when the user explicitly asks for a human, or when the issue cannot be solved with
        the other tools within the policy.

        Args:
            summary: A short summary of the user's issue for the human agent.
        """
        return "Transfer successful"
