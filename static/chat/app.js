// The chat page: plain JavaScript over the public API.
//
// Session: the access token lives in memory only; the refresh token is kept in this tab's
// sessionStorage so a reload can get a new access token (docs/architecture.md, "The chat
// page", says why that is safe enough: a strict CSP and a sanitiser for all model text).
// A reply being generated is followed over SSE; after a reload or a dropped connection the
// page resumes it from the reply's event log.
"use strict";

const STORE = { refresh: "chat.refresh", chatId: "chat.chatId" };
const state = {
  access: null,
  refresh: sessionStorage.getItem(STORE.refresh),
  chatId: null,
  refreshing: null, // the one refresh in flight: rotation makes a refresh token single-use
  live: null, // the reply this page follows: {chatId, messageId, controller}
};
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
  reply_in_progress: "A reply is still being written in this chat; wait for it or stop it.",
  chat_not_found: "That chat no longer exists.",
};

// ---- Markdown, sanitised ------------------------------------------------------------------
// Model text is untrusted: marked turns it into HTML, DOMPurify removes anything active
// (scripts, event handlers, javascript: URLs), and only then does it reach the DOM. Under the
// page's Trusted Types policy an innerHTML assignment of anything else throws.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

function renderMarkdown(element, text) {
  const html = marked.parse(text, { gfm: true, breaks: true, async: false });
  element.innerHTML = DOMPurify.sanitize(html, {
    RETURN_TRUSTED_TYPE: true,
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
  });
}

// ---- Notices: in the page flow, never over the input ----------------------------------------
let noticeTimer = null;

function notify(text) {
  const inApp = !$("app").hidden;
  const box = inApp ? $("notice") : $("auth-notice");
  const target = inApp ? $("notice-text") : box;
  target.textContent = text;
  box.hidden = !text;
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

function describe(error, retryAfter) {
  let text = MESSAGES[error.code] || error.message || "Something went wrong.";
  const details = error.details && typeof error.details === "object" ? error.details : null;
  if (error.code === "validation_error" && details) {
    const lines = Object.entries(details).map(([field, problems]) =>
      `${field === "non_field_errors" ? "" : `${field}: `}${[].concat(problems).join(" ")}`);
    if (lines.length) text = lines.join(" ");
  }
  if (retryAfter) text += ` Retry in ${retryAfter} s.`;
  return text;
}

async function failure(response) {
  try {
    const body = await response.json();
    notify(describe(body.error || {}, response.headers.get("Retry-After")));
  } catch {
    notify(`Request failed (${response.status}).`);
  }
}

// ---- Session --------------------------------------------------------------------------------
function keepTokens(data) {
  state.access = data.access;
  state.refresh = data.refresh;
  sessionStorage.setItem(STORE.refresh, data.refresh);
}

function forgetSession() {
  state.access = state.refresh = null;
  sessionStorage.removeItem(STORE.refresh);
  sessionStorage.removeItem(STORE.chatId);
}

function refreshTokens() {
  if (!state.refreshing) {
    state.refreshing = (async () => {
      try {
        const response = await fetch("/api/auth/token/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ refresh: state.refresh }),
        });
        if (!response.ok) return false;
        keepTokens((await response.json()).data);
        return true;
      } catch {
        return false;
      } finally {
        state.refreshing = null;
      }
    })();
  }
  return state.refreshing;
}

async function api(path, options = {}, retried = false) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (state.access) headers.Authorization = `Bearer ${state.access}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && state.refresh && !retried) {
    if (await refreshTokens()) return api(path, options, true);
    forgetSession();
    showLogin();
  }
  return response;
}

function showLogin() {
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login-panel").hidden = false;
}

async function enterApp() {
  $("login-panel").hidden = true;
  $("auth-notice").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await Promise.all([loadChats(), loadUsage()]);
  const chatId = sessionStorage.getItem(STORE.chatId);
  if (chatId) await openChat(chatId);
}

async function logIn(username, password) {
  const response = await fetch("/api/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) return failure(response);
  keepTokens((await response.json()).data);
  await enterApp();
}

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  await logIn(form.get("username"), form.get("password"));
}

async function register(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const fields = ["username", "email", "password"];
  const body = Object.fromEntries(fields.map((name) => [name, form.get(name) || ""]));
  const response = await fetch("/api/auth/register", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) return failure(response);
  await logIn(body.username, body.password);
}

function switchAuth(toRegister) {
  $("login-form").hidden = toRegister;
  $("register-form").hidden = !toRegister;
  $("auth-notice").hidden = true;
  (toRegister ? $("register-form") : $("login-form")).querySelector("input").focus();
}

async function logout() {
  stopFollowing();
  if (state.refresh) {
    await api("/api/auth/logout", { method: "POST", body: JSON.stringify({ refresh: state.refresh }) });
  }
  forgetSession();
  location.reload();
}

// ---- Chats ----------------------------------------------------------------------------------
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

function metaText(tokens, finishReason, status) {
  const parts = [`${tokens ?? 0} tokens`];
  if (finishReason && finishReason !== "stop") parts.push(finishReason);
  else if (status && status !== "complete") parts.push(status);
  return parts.join(" · ");
}

function setMeta(item, text) {
  let meta = item.querySelector(".meta");
  if (!meta) {
    meta = document.createElement("small");
    meta.className = "meta";
    item.append(meta);
  }
  meta.textContent = text;
}

function addMessage(role, text, meta) {
  const item = document.createElement("li");
  item.className = role;
  const body = document.createElement("div");
  body.className = "text";
  if (role.startsWith("model")) renderMarkdown(body, text);
  else body.textContent = text; // the person's own text is shown as typed
  item.append(body);
  if (meta) setMeta(item, meta);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function showChat(chat) {
  state.chatId = chat.id;
  sessionStorage.setItem(STORE.chatId, chat.id);
  $("chat-title").textContent = chat.title || `Chat ${chat.id.slice(0, 8)}`;
  $("delete-chat").hidden = false;
  $("send-form").hidden = false;
  $("messages").replaceChildren();
}

async function openChat(chatId) {
  stopFollowing();
  const response = await api(`/api/chat/${chatId}`);
  if (!response.ok) {
    if (response.status === 404 || response.status === 400) sessionStorage.removeItem(STORE.chatId);
    return failure(response);
  }
  const chat = (await response.json()).data;
  showChat(chat);
  let generating = null;
  for (const m of chat.messages) {
    const streaming = m.status === "streaming";
    const meta = m.role === "model" && !streaming
      ? metaText(m.tokens_used, m.finish_reason, m.status) : "";
    const item = addMessage(`${m.role} ${m.status}`, m.content, meta);
    if (streaming && m.role === "model") generating = { item, id: m.id, text: m.content };
  }
  await loadChats();
  // A reply still being written (the page was reloaded, or left and reopened): replay its
  // events from the start and follow it live to its end.
  if (generating) {
    follow({ chatId: chat.id, messageId: generating.id, item: generating.item, text: null });
  }
}

async function createChat() {
  const title = $("new-title").value.trim();
  const response = await api("/api/chat", { method: "POST", body: JSON.stringify({ title }) });
  if (!response.ok) return failure(response);
  $("new-title").value = "";
  await openChat((await response.json()).data.id);
}

// A real confirm step: a modal dialog; nothing is deleted until "Delete" is pressed.
function askToDelete() {
  if (!state.chatId) return;
  $("confirm-delete-name").textContent = $("chat-title").textContent;
  $("confirm-delete").returnValue = "";
  $("confirm-delete").showModal();
}

async function deleteChat() {
  if ($("confirm-delete").returnValue !== "delete" || !state.chatId) return;
  stopFollowing();
  const response = await api(`/api/chat/${state.chatId}`, { method: "DELETE" });
  if (!response.ok) return failure(response);
  state.chatId = null;
  sessionStorage.removeItem(STORE.chatId);
  $("messages").replaceChildren();
  $("chat-title").textContent = "Pick or create a chat";
  $("delete-chat").hidden = true;
  $("send-form").hidden = true;
  await loadChats();
}

// ---- Replies over SSE -----------------------------------------------------------------------
// Parse an SSE body from a fetch ReadableStream (EventSource cannot POST or send a bearer
// token). Yields {id, data}; ": keep-alive" comments carry no data and are skipped.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const field = (name) => lines.filter((l) => l.startsWith(`${name}:`))
        .map((l) => l.slice(name.length + 1).replace(/^ /, ""));
      const data = field("data").join("\n");
      const id = field("id").pop();
      if (data) yield { id: id === undefined ? null : Number(id), data: JSON.parse(data) };
    }
  }
}

function setGenerating(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  $("stop").disabled = false;
}

function stopFollowing() {
  if (state.live) state.live.controller.abort();
  state.live = null;
  setGenerating(false);
}

// Follow one reply to its `done`: from `response` (the POST's stream) when given, then, if
// the connection ends early, from the reply's stream endpoint after the last event rendered.
// reply.text === null means "replace what is shown with the replay".
async function follow(reply, response = null) {
  stopFollowing();
  const controller = new AbortController();
  const live = { ...reply, controller, lastId: 0 };
  state.live = live;
  setGenerating(true);
  const body = reply.item.querySelector(".text");
  let text = reply.text;
  let scheduled = false; // re-render the whole reply at most once a frame
  const paint = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      renderMarkdown(body, text);
      reply.item.scrollIntoView({ block: "end" });
    });
  };
  let attempts = 0;
  try {
    for (;;) {
      if (!response) {
        if (!reply.messageId) {
          notify("The connection was lost; reload the page to see the reply.");
          return;
        }
        const path = `/api/chat/${reply.chatId}/messages/${reply.messageId}/stream?after=${live.lastId}`;
        response = await api(path, { signal: controller.signal });
        if (!response.ok) {
          await failure(response);
          return;
        }
      }
      try {
        for await (const { id, data } of sseEvents(response)) {
          if (controller.signal.aborted) return;
          attempts = 0;
          if (id !== null) live.lastId = id;
          if (text === null) text = "";
          if (data.text !== undefined) {
            text += data.text;
            paint();
          } else if (data.done) {
            renderMarkdown(body, text);
            finishReply(reply.item, data);
            return;
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof SyntaxError) throw error;
      }
      response = null;
      attempts += 1;
      if (attempts > 5) {
        notify("The connection was lost; reload the page to see the reply.");
        return;
      }
      await sleep(300 * attempts); // the connection dropped: resume after the last event
    }
  } catch (error) {
    if (!controller.signal.aborted) notify(`The connection failed: ${error.message}`);
  } finally {
    if (state.live === live) {
      state.live = null;
      setGenerating(false);
    }
  }
}

function finishReply(item, data) {
  item.classList.remove("streaming");
  setMeta(item, metaText(data.tokens_used, data.finish_reason, data.error ? "partial" : ""));
  if (data.error) {
    item.classList.add("partial");
    notify(describe(data.error));
  } else if (data.finish_reason === "stopped") {
    item.classList.add("stopped");
  }
  if (data.budget) showBudget(data.budget);
  else loadUsage();
}

async function sendMessage(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || !state.chatId || state.live) return;
  // The API's limit is in code points ([...text] splits by code point; .length would count
  // UTF-16 units, 2 per emoji): refuse here what the API would refuse, and nothing more.
  const maxChars = Number($("message").dataset.maxChars);
  const chars = [...text].length;
  if (chars > maxChars) {
    notify(`The message is ${chars.toLocaleString("en")} characters long; the limit is ${maxChars.toLocaleString("en")}.`);
    return;
  }
  const chatId = state.chatId;
  $("send").disabled = true;
  let response;
  try {
    response = await api(`/api/chat/${chatId}/message`, {
      method: "POST",
      body: JSON.stringify({ message: text }),
    });
  } catch (error) {
    $("send").disabled = false;
    return notify(`The connection failed: ${error.message}`);
  }
  if (!response.ok) {
    $("send").disabled = false;
    return failure(response);
  }
  $("message").value = "";
  addMessage("user", text);
  const item = addMessage("model streaming", "");
  const messageId = response.headers.get("X-Message-Id");
  await follow({ chatId, messageId, item, text: "" }, response);
}

async function stopReply() {
  const live = state.live;
  if (!live || !live.messageId) return;
  $("stop").disabled = true;
  let response;
  try {
    response = await api(`/api/chat/${live.chatId}/messages/${live.messageId}/stop`, {
      method: "POST",
    });
  } catch (error) {
    $("stop").disabled = false;
    return notify(`The connection failed: ${error.message}`);
  }
  // 200: the stream ends with a `done` whose finish_reason is "stopped". 409 reply_finished:
  // it ended on its own meanwhile, and that `done` is on its way too.
  if (!response.ok && response.status !== 409) {
    $("stop").disabled = false;
    await failure(response);
  }
}

// ---- Wiring ---------------------------------------------------------------------------------
$("login-form").addEventListener("submit", login);
$("register-form").addEventListener("submit", register);
$("show-register").addEventListener("click", () => switchAuth(true));
$("show-login").addEventListener("click", () => switchAuth(false));
$("new-chat").addEventListener("click", createChat);
$("delete-chat").addEventListener("click", askToDelete);
$("confirm-delete").addEventListener("close", deleteChat);
$("send-form").addEventListener("submit", sendMessage);
$("stop").addEventListener("click", stopReply);
$("notice-close").addEventListener("click", () => { $("notice").hidden = true; });
$("logout").addEventListener("click", logout);

(async function start() {
  // A reload: trade the tab's refresh token for a new access token and carry on.
  if (state.refresh && await refreshTokens()) return enterApp();
  forgetSession();
  showLogin();
})();
