from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from accounts.models import User


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
