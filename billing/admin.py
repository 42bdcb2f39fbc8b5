from django import forms
from django.contrib import admin, messages
from django.db.models import ExpressionWrapper, F, FloatField
from django.db.models.functions import Cast, NullIf
from django.template.response import TemplateResponse
from django.urls import path

from billing.charts import bar_chart_svg
from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.selectors import tokens_per_day, top_users
from billing.services import reset_budget, set_monthly_limit
from billing.tokens import token_cache_stats
from config.admin import ReadOnlyAdminMixin


class UsageLevelFilter(admin.SimpleListFilter):
    title = "usage"
    parameter_name = "usage"

    def lookups(self, request, model_admin):
        return (("80", "above 80%"), ("100", "at 100%"))

    def queryset(self, request, queryset):
        if self.value() == "80":
            return queryset.filter(_percent__gt=80)
        if self.value() == "100":
            return queryset.filter(used__gte=F("limit"))
        return queryset


class LimitForm(forms.Form):
    limit = forms.IntegerField(min_value=0, label="New monthly token limit")


@admin.register(TokenBudget)
class TokenBudgetAdmin(admin.ModelAdmin):
    """Per-user usage: one row per user and month."""

    list_display = ("user", "period", "limit", "used", "reserved", "remaining_tokens", "percent")
    list_filter = (UsageLevelFilter, "period")
    search_fields = ("user__username",)
    list_select_related = ("user",)
    readonly_fields = ("user", "period", "limit", "used", "reserved", "created_at", "updated_at")
    actions = ["change_limit", "reset_month"]
    change_list_template = "admin/billing/tokenbudget/change_list.html"

    def get_urls(self):
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name="billing_usage_dashboard",
        )
        return [dashboard, *super().get_urls()]

    def dashboard_view(self, request):
        """Tokens per day for 30 days, the top users this month, the token-cache figures."""
        return TemplateResponse(
            request,
            "admin/billing/dashboard.html",
            {
                **self.admin_site.each_context(request),
                "title": "Token usage dashboard",
                "opts": self.model._meta,
                "chart": bar_chart_svg(
                    tokens_per_day(days=30), title="Tokens per day, last 30 days"
                ),
                "top_users": top_users(limit=10),
                "cache_stats": token_cache_stats(),
            },
        )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _remaining=F("limit") - F("used") - F("reserved"),
                _percent=ExpressionWrapper(
                    100.0 * Cast("used", FloatField()) / NullIf(F("limit"), 0),
                    output_field=FloatField(),
                ),
            )
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="remaining", ordering="_remaining")
    def remaining_tokens(self, budget):
        return max(0, budget._remaining)

    @admin.display(description="% used", ordering="_percent")
    def percent(self, budget):
        return "100.0" if budget._percent is None else f"{budget._percent:.1f}"

    @admin.action(description="Change the monthly limit of the selected users")
    def change_limit(self, request, queryset):
        form = LimitForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            for budget in queryset.select_related("user").order_by("pk"):
                set_monthly_limit(
                    user=budget.user, limit=form.cleaned_data["limit"], actor=request.user
                )
            self.message_user(
                request, f"Limit changed for {queryset.count()} user(s).", messages.SUCCESS
            )
            return None
        return TemplateResponse(
            request,
            "admin/billing/change_limit.html",
            {
                **self.admin_site.each_context(request),
                "title": "Change the monthly token limit",
                "form": form,
                "budgets": queryset.select_related("user"),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Reset the selected users' month (used -> 0)")
    def reset_month(self, request, queryset):
        changed = sum(
            reset_budget(user=b.user, period=b.period, actor=request.user, note="reset by staff")
            for b in queryset.select_related("user").order_by("pk")
        )
        self.message_user(request, f"Reset {changed} budget(s).", messages.SUCCESS)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "user",
        "period",
        "kind",
        "total",
        "input_tokens",
        "output_tokens",
        "source",
        "api_key_id",
        "actor",
        "note",
    )
    list_filter = ("kind", "source", "period")
    search_fields = ("user__username", "chat_id", "message_id", "api_key_id", "note")
    list_select_related = ("user", "actor")


@admin.register(TokenReservation)
class TokenReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "user", "amount", "output_cap", "state", "expires_at")
    list_filter = ("state",)
    list_select_related = ("user",)
