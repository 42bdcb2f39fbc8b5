from django.contrib import admin, messages
from django.db.models import Count, Q, Sum
from django.utils.html import format_html
from django.utils.text import Truncator

from chat.exceptions import ChatLimitReached
from chat.models import Chat, Message
from chat.services import restore_chat, soft_delete_chat
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

    # Deleting a chat here is the API's soft delete: hidden from its owner, messages and
    # ledger kept, restorable with the action below. Nothing is removed from the database,
    # so the confirmation page lists only the chats (messages are read-only and stay).
    def delete_model(self, request, obj):
        soft_delete_chat(chat=obj)

    def delete_queryset(self, request, queryset):
        for chat in queryset.order_by("pk"):
            soft_delete_chat(chat=chat)

    def get_deleted_objects(self, objs, request):
        chats = [
            format_html("Chat: {} (soft delete: hidden from its owner, restorable)", chat)
            for chat in objs
        ]
        return chats, {"chats": len(chats)}, set(), []

    @admin.action(description="Restore selected soft-deleted chats", permissions=["change"])
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
        "user",
        "role",
        "content_preview",
        "chat",
        "status",
        "tokens_used",
        "token_source",
        "chat_state",
    )
    list_filter = ("status", "role", "token_source")
    search_fields = ("content", "chat__title", "chat__id", "chat__owner__username")
    list_select_related = ("chat", "chat__owner")
    ordering = ("-created_at", "-pk")

    @admin.display(description="user", ordering="chat__owner__username")
    def user(self, message):
        return message.chat.owner

    @admin.display(description="content")
    def content_preview(self, message):
        return Truncator(message.content).chars(80)

    @admin.display(description="chat state")
    def chat_state(self, message):
        return "active" if message.chat.is_active else "SOFT-DELETED"
