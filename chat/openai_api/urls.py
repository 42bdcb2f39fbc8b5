from django.urls import path

from chat.openai_api import views

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="v1-models"),
    path("models/<path:model_id>", views.ModelDetailView.as_view(), name="v1-model"),
    path("chat/completions", views.ChatCompletionView.as_view(), name="v1-chat-completions"),
]
