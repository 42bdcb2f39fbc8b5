// The chat page: plain JavaScript over the public API. Tokens are kept in memory only.
"use strict";

const state = { access: null, refresh: null, chatId: null };
const $ = (id) => document.getElementById(id);

const MESSAGES = {
  token_limit_exceeded: "Your monthly token budget is spent.",
  token_limit_reached: "The monthly token budget ran out during this reply.",
  rate_limited: "You are sending messages too quickly.",
  llm_unavailable: "The model is not available right now.",
  upstream_rate_limited: "The model is busy; try again shortly.",
  upstream_error: "The model failed to answer.",
  upstream_timeout: "The model did not answer in time.",
  content_blocked: "The message was blocked by the model's safety filters.",
  chat_limit_reached: "You have the maximum number of chats; delete one first.",
  validation_error: "The message is empty or too long.",
};

function notify(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
  if (text) setTimeout(() => { if (box.textContent === text) box.hidden = true; }, 6000);
}

function describe(error, retryAfter) {
  let text = MESSAGES[error.code] || error.message || "Something went wrong.";
  if (retryAfter) text += ` Retry in ${retryAfter} s.`;
  return text;
}

async function api(path, options = {}, retried = false) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (state.access) headers.Authorization = `Bearer ${state.access}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && state.refresh && !retried) {
    if (await refreshTokens()) return api(path, options, true);
  }
  return response;
}

async function refreshTokens() {
  const response = await fetch("/api/auth/token/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh: state.refresh }),
  });
  if (!response.ok) return false;
  const { data } = await response.json();
  state.access = data.access;
  state.refresh = data.refresh;
  return true;
}

async function failure(response) {
  try {
    const body = await response.json();
    notify(describe(body.error || {}, response.headers.get("Retry-After")));
  } catch {
    notify(`Request failed (${response.status}).`);
  }
}

function showBudget(budget) {
  if (!budget) return;
  $("budget").textContent = `Tokens: ${budget.used.toLocaleString()} used · ` +
    `${budget.remaining.toLocaleString()} left of ${budget.limit.toLocaleString()}`;
}

async function loadUsage() {
  const response = await api("/api/user/token-usage");
  if (response.ok) showBudget((await response.json()).data);
}

async function loadChats() {
  const response = await api("/api/chat?page_size=100");
  if (!response.ok) return failure(response);
  const list = $("chats");
  list.replaceChildren();
  for (const chat of (await response.json()).data.results) {
    const item = document.createElement("li");
    item.textContent = chat.title || `Chat ${chat.id.slice(0, 8)}`;
    item.dataset.id = chat.id;
    item.classList.toggle("active", chat.id === state.chatId);
    item.addEventListener("click", () => openChat(chat.id));
    list.append(item);
  }
}

function addMessage(role, text, meta) {
  const item = document.createElement("li");
  item.className = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;  // never innerHTML: user and model text are data
  item.append(body);
  if (meta) {
    const small = document.createElement("small");
    small.className = "meta";
    small.textContent = meta;
    item.append(small);
  }
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

async function openChat(chatId) {
  const response = await api(`/api/chat/${chatId}`);
  if (!response.ok) return failure(response);
  const chat = (await response.json()).data;
  state.chatId = chat.id;
  $("chat-title").textContent = chat.title || `Chat ${chat.id.slice(0, 8)}`;
  $("delete-chat").hidden = false;
  $("send-form").hidden = false;
  $("messages").replaceChildren();
  for (const m of chat.messages) {
    const meta = m.role === "model" ? `${m.tokens_used} tokens · ${m.status}` : "";
    addMessage(`${m.role} ${m.status}`, m.content, meta);
  }
  await loadChats();
}

async function createChat() {
  const title = $("new-title").value.trim();
  const response = await api("/api/chat", { method: "POST", body: JSON.stringify({ title }) });
  if (!response.ok) return failure(response);
  $("new-title").value = "";
  await openChat((await response.json()).data.id);
}

async function deleteChat() {
  if (!state.chatId) return;
  const response = await api(`/api/chat/${state.chatId}`, { method: "DELETE" });
  if (!response.ok) return failure(response);
  state.chatId = null;
  $("messages").replaceChildren();
  $("chat-title").textContent = "Pick or create a chat";
  $("delete-chat").hidden = true;
  $("send-form").hidden = true;
  await loadChats();
}

// Parse an SSE body from a fetch ReadableStream (EventSource cannot POST).
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);  // ": keep-alive" comments have no data
    }
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || !state.chatId) return;
  // The API's limit is in code points ([...text] splits by code point; .length would count
  // UTF-16 units, 2 per emoji): refuse here what the API would refuse, and nothing more.
  const maxChars = Number($("message").dataset.maxChars);
  const chars = [...text].length;
  if (chars > maxChars) {
    notify(`The message is ${chars.toLocaleString("en")} characters long; the limit is ${maxChars.toLocaleString("en")}.`);
    return;
  }
  $("send").disabled = true;
  try {
    const response = await api(`/api/chat/${state.chatId}/message`, {
      method: "POST",
      body: JSON.stringify({ message: text }),
    });
    if (!response.ok) return failure(response);
    $("message").value = "";
    addMessage("user", text);
    const reply = addMessage("model", "");
    const body = reply.querySelector(".text");
    for await (const data of sseEvents(response)) {
      if (data.text !== undefined) {
        body.textContent += data.text;
        reply.scrollIntoView({ block: "end" });
      } else if (data.done) {
        const meta = document.createElement("small");
        meta.className = "meta";
        meta.textContent = `${data.tokens_used} tokens`;
        reply.append(meta);
        if (data.error) {
          reply.classList.add("partial");
          notify(describe(data.error));
        }
        if (data.budget) showBudget(data.budget);
      }
    }
  } catch (error) {
    notify(`The connection failed: ${error.message}`);
  } finally {
    $("send").disabled = false;
  }
}

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch("/api/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
  });
  if (!response.ok) return failure(response);
  const { data } = await response.json();
  state.access = data.access;
  state.refresh = data.refresh;
  $("login-panel").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await Promise.all([loadChats(), loadUsage()]);
}

async function logout() {
  if (state.refresh) {
    await api("/api/auth/logout", { method: "POST", body: JSON.stringify({ refresh: state.refresh }) });
  }
  location.reload();
}

$("login-form").addEventListener("submit", login);
$("new-chat").addEventListener("click", createChat);
$("delete-chat").addEventListener("click", deleteChat);
$("send-form").addEventListener("submit", sendMessage);
$("logout").addEventListener("click", logout);
