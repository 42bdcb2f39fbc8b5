from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "monthly_token_limit")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Billing", {"fields": ("monthly_token_limit",)}),
    )
