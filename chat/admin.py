from django.contrib import admin, messages
from django.db.models import Count, Q, Sum
from django.utils.html import format_html

from chat.exceptions import ChatLimitReached
from chat.models import Chat, Message
from chat.services import restore_chat
from config.admin import ReadOnlyAdminMixin


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Message
    fields = ("created_at", "role", "status", "tokens_used", "token_source", "content")
    readonly_fields = fields
    ordering = ("created_at",)
    extra = 0
    show_change_link = True


class SoftDeletedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("deleted", "Soft-deleted"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(is_active=True)
        if self.value() == "deleted":
            return queryset.filter(is_active=False)
        return queryset


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = (
        "title_or_id",
        "owner",
        "state",
        "deleted_at",
        "message_count",
        "tokens_used",
        "created_at",
    )
    list_filter = (SoftDeletedFilter, "created_at", "owner")
    search_fields = ("title", "owner__username", "id")
    list_select_related = ("owner",)
    readonly_fields = ("id", "owner", "is_active", "deleted_at", "created_at", "updated_at")
    fields = ("id", "owner", "title", "is_active", "deleted_at", "created_at", "updated_at")
    inlines = [MessageInline]
    actions = ["restore"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _message_count=Count("messages"),
                _tokens_used=Sum("messages__tokens_used", filter=Q(messages__role="model")),
            )
        )

    @admin.display(description="chat", ordering="title")
    def title_or_id(self, chat):
        return chat.title or str(chat.pk)

    @admin.display(description="state", ordering="is_active")
    def state(self, chat):
        if chat.is_active:
            return "active"
        return format_html('<strong style="color:#ba2121">{}</strong>', "SOFT-DELETED")

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, chat):
        return chat._message_count

    @admin.display(description="tokens used", ordering="_tokens_used")
    def tokens_used(self, chat):
        return chat._tokens_used or 0

    @admin.action(description="Restore selected soft-deleted chats")
    def restore(self, request, queryset):
        restored = 0
        for chat in queryset.filter(is_active=False).order_by("pk"):
            try:
                restore_chat(chat=chat)
                restored += 1
            except ChatLimitReached:
                self.message_user(
                    request,
                    f"{chat}: its owner already has the maximum number of active chats.",
                    messages.WARNING,
                )
        self.message_user(request, f"Restored {restored} chat(s).", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "chat",
        "role",
        "status",
        "tokens_used",
        "token_source",
        "chat_state",
    )
    list_filter = ("status", "role", "token_source")
    search_fields = ("content", "chat__title", "chat__id")
    list_select_related = ("chat",)

    @admin.display(description="chat state")
    def chat_state(self, message):
        return "active" if message.chat.is_active else "SOFT-DELETED"
