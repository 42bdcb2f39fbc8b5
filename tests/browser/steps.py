"""What a person does on the chat page, as steps the browser tests share."""

PASSWORD = "a-long-passphrase-42"


def log_in(page, url, username="dana"):
    page.goto(f"{url}/")
    page.fill("#login-form input[name=username]", username)
    page.fill("#login-form input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")


def new_chat(page, title):
    page.fill("#new-title", title)
    page.click("#new-chat")
    page.wait_for_selector(f"#chat-title:has-text('{title}')")


def send(page, text):
    before = page.locator("#messages li.model").count()
    page.fill("#message", text)
    page.click("#send")
    reply = page.locator("#messages li.model").nth(before)
    reply.wait_for(timeout=10_000)  # (no wait_for_function: the page's CSP forbids eval)
    return reply
