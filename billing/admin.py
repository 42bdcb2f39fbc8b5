from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import ExpressionWrapper, F, FloatField
from django.db.models.functions import Cast, NullIf
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.charts import bar_chart_svg
from billing.exceptions import LimitBelowUsed
from billing.models import LedgerEntry, TokenBudget, TokenReservation
from billing.selectors import current_budget_or_none, tokens_per_day, top_users
from billing.services import limit_for, reset_budget, set_monthly_limit
from billing.tokens import token_cache_stats
from config.admin import ReadOnlyAdminMixin

# (statistic, label, what it counts) for the dashboard's token-cache table.
CACHE_STAT_ROWS = (
    ("hits", "hits", "lookups answered from a cache: process memory or the shared cache"),
    ("misses", "misses", "lookups that had to ask the count API"),
    ("hit_rate", "hit rate", "hits / (hits + misses)"),
    ("api_calls", "count-API calls", "calls made to the provider's count-tokens API"),
    ("fallbacks", "fallbacks to the estimate", "count-API calls that failed"),
    ("entries", "entries in the shared cache", "counts stored there now"),
    ("local_entries", "entries in this process", "counts in this process's memory (LRU)"),
)


def _cache_rows(stats: dict) -> list[dict]:
    rows = []
    for name, label, help_text in CACHE_STAT_ROWS:
        value = stats.get(name)
        if value is None:
            shown = "unknown (this cache backend cannot list its keys)"
        elif name == "hit_rate":
            shown = f"{value:.1%}"
        else:
            shown = f"{value:,}"
        rows.append({"name": name, "label": label, "help": help_text, "value": shown})
    return rows


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
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="billing_usage_dashboard"),
            path(
                "set-limit/<int:user_id>/",
                view(self.set_limit_view),
                name="billing_tokenbudget_set_limit",
            ),
            *super().get_urls(),
        ]

    def set_limit_view(self, request, user_id):
        """One user's monthly limit through the service (the user page links here)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        user = get_object_or_404(get_user_model(), pk=user_id)
        budget = current_budget_or_none(user=user)
        form = LimitForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                set_monthly_limit(user=user, limit=form.cleaned_data["limit"], actor=request.user)
            except LimitBelowUsed as exc:
                form.add_error("limit", exc.message)
            else:
                self.message_user(
                    request,
                    f"{user.username}: monthly limit set to {form.cleaned_data['limit']:,}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:billing_tokenbudget_changelist") + f"?q={user.username}"
                )
        return TemplateResponse(
            request,
            "admin/billing/set_limit.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Monthly token limit of {user.username}",
                "form": form,
                "subject": user,
                "limit": budget.limit if budget else limit_for(user),
                "used": budget.used if budget else 0,
                "opts": self.model._meta,
            },
        )

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
                "cache_rows": _cache_rows(token_cache_stats()),
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

    # Both actions change money: they need the change permission (a view-only staff user
    # does not even see them) and act only after a second, confirming POST.
    @admin.action(
        description="Change the monthly limit of the selected users", permissions=["change"]
    )
    def change_limit(self, request, queryset):
        budgets = list(queryset.select_related("user").order_by("pk"))
        form = LimitForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            limit = form.cleaned_data["limit"]
            changed = 0
            for budget in budgets:
                try:
                    set_monthly_limit(user=budget.user, limit=limit, actor=request.user)
                    changed += 1
                except LimitBelowUsed as exc:
                    self.message_user(request, f"{budget.user}: {exc.message}", messages.ERROR)
            self.message_user(request, f"Limit changed for {changed} user(s).", messages.SUCCESS)
            return None
        return self._confirmation(
            request,
            "admin/billing/change_limit.html",
            title="Change the monthly token limit",
            budgets=budgets,
            form=form,
        )

    @admin.action(description="Reset the selected users' month (used -> 0)", permissions=["change"])
    def reset_month(self, request, queryset):
        budgets = list(queryset.select_related("user").order_by("pk"))
        if "confirm" not in request.POST:
            return self._confirmation(
                request,
                "admin/billing/reset_month.html",
                title="Reset the month of these users?",
                budgets=budgets,
            )
        changed = sum(
            reset_budget(user=b.user, period=b.period, actor=request.user, note="reset by staff")
            for b in budgets
        )
        self.message_user(request, f"Reset {changed} budget(s).", messages.SUCCESS)
        return None

    def _confirmation(self, request, template, *, title, budgets, **context):
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "title": title,
                "budgets": budgets,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
                **context,
            },
        )


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
        "over_limit",
        "source",
        "api_key_id",
        "actor",
        "note",
    )
    list_filter = ("kind", "source", "period")
    search_fields = ("user__username", "chat_id", "message_id", "api_key_id", "note")
    list_select_related = ("user", "actor")

    @admin.display(description="over the limit")
    def over_limit(self, entry):
        """What the provider reported beyond what was billed (a settle clamped at the limit)."""
        if entry.kind != LedgerEntry.Kind.EXCHANGE:
            return ""
        overage = entry.input_tokens + entry.output_tokens - entry.total
        if overage <= 0:
            return ""
        return format_html('<strong style="color:#ba2121">+{}</strong>', f"{overage:,}")


@admin.register(TokenReservation)
class TokenReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "user", "amount", "output_cap", "state", "expires_at")
    list_filter = ("state",)
    list_select_related = ("user",)
