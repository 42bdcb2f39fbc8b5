"""The browser chat page at the site's root (config.urls includes this module by name)."""

from django.urls import path

from chat.pages import ChatPageView

urlpatterns = [path("", ChatPageView.as_view(), name="chat-page")]
