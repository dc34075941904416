"""API dependency graph of the telecom domain: which tool's output another tool's arguments come from.

The usual chain is authenticate_user -> get_user_details -> get_line_details or get_bill_details -> a write.
Edges also carry what the policy needs checked before a write: the cycle's plan change and top-ups on the
line, overdue bills before roaming, earlier waivers before a late fee is waived.
"""

from apigen_mt.simulators.domain_types import ApiEdge

API_GRAPH: list[ApiEdge] = [
    ApiEdge("authenticate_user", "get_user_details", "user_id"),
    ApiEdge("get_user_details", "get_line_details", "line_id from the customer's lines"),
    ApiEdge("get_user_details", "get_bill_details", "bill_id from the customer's bills"),
    ApiEdge("get_line_details", "change_plan", "line_id; its status, plan, data used and last plan change"),
    ApiEdge("list_plans", "change_plan", "plan_id of an offered plan with enough data"),
    ApiEdge("get_line_details", "buy_data_topup", "line_id; its plan and this cycle's top-ups"),
    ApiEdge("list_plans", "buy_data_topup", "whether the line's plan has limited data"),
    ApiEdge("get_user_details", "buy_data_topup", "payment_method_id; account credit balance"),
    ApiEdge("get_line_details", "set_roaming", "line_id; its status and roaming state"),
    ApiEdge("list_plans", "set_roaming", "whether the line's plan allows roaming"),
    ApiEdge("get_bill_details", "set_roaming", "whether a bill of the customer is overdue"),
    ApiEdge("get_bill_details", "pay_bill", "bill_id; its amount and status"),
    ApiEdge("get_user_details", "pay_bill", "payment_method_id; account credit balance"),
    ApiEdge("get_bill_details", "waive_late_fee", "bill_id of an overdue bill; earlier waivers on other bills"),
    ApiEdge("get_line_details", "suspend_line", "line_id of an active line"),
    ApiEdge("get_line_details", "resume_line", "line_id; why the line is suspended"),
]
