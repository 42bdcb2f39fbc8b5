"""Admin pieces shared by the apps."""


class ReadOnlyAdminMixin:
    """Staff may look, never add, change or delete (messages, the ledger, reservations)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
