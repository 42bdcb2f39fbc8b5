from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from accounts.models import ApiKey, User
from accounts.services import revoke_api_key


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "monthly_token_limit")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Billing", {"fields": ("monthly_token_limit", "change_token_limit")}),
    )
    # A limit changes only through billing's service (this month's budget at once, with a
    # ledger entry naming the staff member), never by saving this field: see the link.
    readonly_fields = ("monthly_token_limit", "change_token_limit")

    @admin.display(description="change the limit")
    def change_token_limit(self, user):
        if user.pk is None:
            return "-"
        try:
            url = reverse("admin:billing_tokenbudget_set_limit", args=[user.pk])
        except NoReverseMatch:  # billing's admin is not installed
            return "-"
        return format_html(
            '<a href="{}" id="change-token-limit">Change the monthly token limit</a> '
            "(effective now, written to the ledger)",
            url,
        )


class ActiveKeyFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "active"), ("revoked", "revoked"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Staff see every key (never its secret: only the hash is stored) and revoke keys."""

    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (ActiveKeyFilter,)
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    fields = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None):
        return False  # a key is created by its owner, who is the only one to see it

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, never deleted: the ledger names keys by id

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            revoke_api_key(key=key)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)

    def has_revoke_permission(self, request):
        # Like every admin action that changes data: the model's change permission (a
        # view-only staff member sees the keys but cannot revoke them).
        return request.user.has_perm("accounts.change_apikey")
