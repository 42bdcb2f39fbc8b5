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
from django.utils import timezone
from django.utils.html import format_html

from billing.alerts import retry_alerts
from billing.charts import bar_chart_svg
from billing.exceptions import LimitBelowUsed
from billing.export import csv_response
from billing.models import BudgetAlert, LedgerEntry, ModelPrice, TokenBudget, TokenReservation
from billing.prices import format_amount
from billing.selectors import (
    budget_for,
    cost_per_day,
    ledger_export_rows,
    tokens_per_day,
    top_users,
    top_users_by_cost,
    unpriced_models,
)
from billing.serializers import ExportPeriodSerializer
from billing.services import reset_budget, set_monthly_limit
from billing.tokens import token_cache_stats
from config.admin import ReadOnlyAdminMixin


def warn_unpriced(request) -> None:
    """Tell staff which models bill tokens with no cost (they have no price in force)."""
    missing = unpriced_models()
    if missing:
        messages.warning(
            request,
            "No price in force for: "
            + ", ".join(missing)
            + ". Their messages bill tokens but show no cost; add a model price.",
        )


def show_money(amount, currency) -> str:
    return "—" if amount is None else f"{format_amount(amount)} {currency}"


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

    list_display = (
        "user",
        "period",
        "limit",
        "used",
        "reserved",
        "remaining_tokens",
        "percent",
        "month_cost",
    )
    list_filter = (UsageLevelFilter, "period")
    search_fields = ("user__username",)
    list_select_related = ("user",)
    readonly_fields = (
        "user",
        "period",
        "limit",
        "used",
        "reserved",
        "cost",
        "currency",
        "created_at",
        "updated_at",
    )
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
        budget = budget_for(user=user)
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
                "limit": budget.limit,
                "used": budget.used,
                "opts": self.model._meta,
            },
        )

    def dashboard_view(self, request):
        """Tokens and cost per day for 30 days, the top users this month by tokens and by
        cost, the token-cache figures."""
        warn_unpriced(request)
        top_by_cost = top_users_by_cost(limit=10)
        for row in top_by_cost:
            row["cost_display"] = show_money(row["cost"], row["currency"])
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
                "cost_chart": bar_chart_svg(
                    cost_per_day(days=30),
                    title="Cost per day, last 30 days",
                    value_format=format_amount,
                    color="#1f8a4c",
                ),
                "top_users": top_users(limit=10),
                "top_by_cost": top_by_cost,
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

    @admin.display(description="cost", ordering="cost")
    def month_cost(self, budget):
        return show_money(budget.cost, budget.currency)

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
        "model",
        "entry_cost",
        "source",
        "api_key_id",
        "actor",
        "note",
    )
    list_filter = ("kind", "source", "model", "period")
    search_fields = ("user__username", "chat_id", "message_id", "api_key_id", "note")
    list_select_related = ("user", "actor")
    change_list_template = "admin/billing/ledgerentry/change_list.html"

    @admin.display(description="cost", ordering="cost")
    def entry_cost(self, entry):
        return show_money(entry.cost, entry.currency)

    def changelist_view(self, request, extra_context=None):
        warn_unpriced(request)
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="billing_ledger_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request):
        """Every user's entries between two days, as CSV (streamed), or the form to ask."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = ExportPeriodSerializer(data=request.GET.dict())
        if {"from", "to"} & set(request.GET) and period.is_valid():
            first, last = period.validated_data["from"], period.validated_data["to"]
            return csv_response(
                ledger_export_rows(first=first, last=last), first=first, last=last, who="all"
            )
        return TemplateResponse(
            request,
            "admin/billing/ledger_export.html",
            {
                **self.admin_site.each_context(request),
                "title": "Export the ledger (CSV)",
                "opts": self.model._meta,
                "errors": period.errors if {"from", "to"} & set(request.GET) else None,
                "today": timezone.now().date(),
            },
        )

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


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = [
            "model",
            "input_per_million",
            "output_per_million",
            "currency",
            "effective_from",
            "source",
        ]

    def clean_currency(self):
        currency = self.cleaned_data["currency"]
        others = ModelPrice.objects.exclude(pk=self.instance.pk).exclude(currency=currency)
        if others.exists():
            raise forms.ValidationError(
                "Every price must be in one currency: a month's cost is the sum of its entries."
            )
        return currency


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Staff keep the list prices here. A change applies to settles from its
    `effective_from` on; entries already written keep the cost they were given."""

    form = ModelPriceForm
    list_display = (
        "model",
        "input_per_million",
        "output_per_million",
        "currency",
        "effective_from",
        "in_force",
        "source",
        "updated_at",
    )
    list_filter = ("model", "currency")
    search_fields = ("model",)

    @admin.display(boolean=True, description="in force now")
    def in_force(self, price):
        latest = (
            ModelPrice.objects.filter(model=price.model, effective_from__lte=timezone.now())
            .order_by("-effective_from")
            .values_list("pk", flat=True)
            .first()
        )
        return latest == price.pk

    def changelist_view(self, request, extra_context=None):
        warn_unpriced(request)
        return super().changelist_view(request, extra_context)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Thresholds crossed, and their webhook deliveries (deliver_alerts retries them)."""

    list_display = (
        "created_at",
        "user",
        "period",
        "threshold_percent",
        "used",
        "limit",
        "delivery",
        "attempts",
        "last_status",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("delivery", "threshold", "period")
    search_fields = ("user__username", "webhook_id")
    list_select_related = ("user",)
    actions = ["retry_delivery"]

    @admin.display(description="threshold", ordering="threshold")
    def threshold_percent(self, alert):
        return f"{alert.threshold}%"

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Retry the webhook now (pending or given-up alerts)")
    def retry_delivery(self, request, queryset):
        changed = retry_alerts(alert_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"{changed} alert(s) due now: the next deliver_alerts run sends them.",
            messages.SUCCESS,
        )
