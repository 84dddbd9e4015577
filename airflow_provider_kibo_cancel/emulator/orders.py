"""The emulator's orders: their Get Order shape, and the cancel body rules Kibo applies."""

from __future__ import annotations

from typing import Any

# Kibo's list is longer than it publishes; the emulator knows a few unpublished reasons too.
KNOWN_REASONS = frozenset(
    {
        "customer_changed_mind",
        "created_by_mistake",
        "other",
        "fraud_suspected",
        "payment_declined",
        "inventory_unavailable",
    }
)


def make_order(order_id: int, status: str = "OPEN") -> dict[str, Any]:
    """An order in Kibo's Get Order shape, with sections whose fields Kibo does not publish."""
    item_state = "CANCELED" if status == "CANCELED" else "NEW"
    return {
        "orderID": order_id,
        "orderType": "STANDARD",
        "isTestOrder": True,
        "deliveryMethod": "SHIP_TO_HOME",
        "orderCurrency": "USD",
        "orderDate": "2010-04-08T16:32:03+00:00",
        "orderState": status,
        "orderStatus": status,
        "customerSubtotal": 42.5,
        "subtotal": 42.5,
        "estimatedShipping": 5.0,
        "customerTotal": 47.5,
        "customerTotalNet": 47.5,
        "total": 47.5,
        "singlePackageRequested": False,
        "shippingAddress": f"addr-{order_id}",
        "items": [
            {
                "orderItemID": order_id * 10 + 1,
                "itemState": item_state,
                "orderID": order_id,
                "shipmentID": order_id * 10 + 2,
                "externalItemID": f"SKU-{order_id}",
            }
        ],
        "shipments": [{"shipmentID": order_id * 10 + 2, "shipmentStatus": item_state}],
        "customer": {"customerID": 7, "loyaltyTier": "gold"},
        "taxData": {"taxCalculated": True, "lines": [{"rate": 0.0}]},
    }


def cancel_problems(body: Any, order_id_field: str) -> list[str]:
    """Every reason Kibo refuses this cancel body with a 400 (the emulator's subset of its rules)."""
    if not isinstance(body, dict):
        return ["Request body must be a JSON object"]
    problems = []
    unknown = set(body) - {order_id_field, "dispositionReason", "dispositionOtherReason"}
    if unknown:
        problems.append(f"Unknown fields: {sorted(unknown)}")
    order_id = body.get(order_id_field)
    if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id < 1:
        problems.append(f"{order_id_field} must be an integer >= 1")
    reason = body.get("dispositionReason")
    if reason not in KNOWN_REASONS:
        problems.append(f"dispositionReason {reason!r} is not a valid disposition reason")
    other = body.get("dispositionOtherReason")
    if reason == "other":
        if not isinstance(other, str) or not 1 <= len(other) <= 255:
            problems.append(
                "dispositionOtherReason must be 1..255 characters when dispositionReason is other"
            )
    elif other is not None:
        problems.append("dispositionOtherReason is only used when dispositionReason is other")
    return problems
