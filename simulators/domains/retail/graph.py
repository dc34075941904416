"""API dependency graph of the retail domain: which tool's output another tool's arguments come from.

The canonical chain is find_user_id_by_* -> get_user_details -> get_order_details -> [get_product_details]
-> a write tool. `calculate` only feeds figures into what the agent tells the user, never into arguments,
so it has no edge.
"""

from apigen_mt.simulators.domain_types import ApiEdge

API_GRAPH: list[ApiEdge] = [
    ApiEdge("find_user_id_by_email", "get_user_details", "user_id"),
    ApiEdge("find_user_id_by_name_zip", "get_user_details", "user_id"),
    ApiEdge("find_user_id_by_email", "modify_user_address", "user_id"),
    ApiEdge("find_user_id_by_name_zip", "modify_user_address", "user_id"),
    ApiEdge("get_user_details", "modify_user_address", "the current address, to confirm the change"),
    ApiEdge("get_user_details", "get_order_details", "order_id from the user's order list"),
    ApiEdge("get_order_details", "get_product_details", "product_id of an ordered item"),
    ApiEdge("list_all_product_types", "get_product_details", "product_id of a product name"),
    ApiEdge("get_order_details", "cancel_pending_order", "order_id; its status and payments"),
    ApiEdge("get_order_details", "modify_pending_order_address", "order_id; its status"),
    ApiEdge("get_order_details", "modify_pending_order_items", "order_id, item_ids; its status"),
    ApiEdge(
        "get_product_details", "modify_pending_order_items", "new_item_ids: available variants of the same product"
    ),
    ApiEdge("get_user_details", "modify_pending_order_items", "payment_method_id; gift card balance"),
    ApiEdge("get_order_details", "modify_pending_order_payment", "order_id; the current method and amount"),
    ApiEdge("get_user_details", "modify_pending_order_payment", "the new payment_method_id; gift card balance"),
    ApiEdge("get_order_details", "return_delivered_order_items", "order_id, item_ids; the original payment_method_id"),
    ApiEdge("get_user_details", "return_delivered_order_items", "payment_method_id of a gift card"),
    ApiEdge("get_order_details", "exchange_delivered_order_items", "order_id, item_ids"),
    ApiEdge("get_product_details", "exchange_delivered_order_items", "new_item_ids"),
    ApiEdge("get_user_details", "exchange_delivered_order_items", "payment_method_id"),
]
