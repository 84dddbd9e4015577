"""The provider's operators: :mod:`.cancel_order` (one order) and :mod:`.bulk_cancel` (many)."""
