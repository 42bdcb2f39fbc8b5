"""Sending a chat message through the test client, the one way the tests do it."""

DEFAULT_MESSAGE = "Describe a generative art NFT collection"


def send(client, chat, message: str = DEFAULT_MESSAGE, **headers):
    """POST `message` to a chat (a Chat or its id); the response, a stream when accepted."""
    chat_id = getattr(chat, "pk", chat)
    return client.post(
        f"/api/chat/{chat_id}/message", {"message": message}, format="json", **headers
    )
