"use strict";
// Flint's chat page: sends the conversation to POST /v1/chat/completions with stream: true
// and renders the server-sent chunks as they arrive. Model output reaches the page only
// through textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), messages: $("messages"), empty: $("empty"),
  composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  newChat: $("new-chat"), settingsToggle: $("settings-toggle"), settings: $("settings"),
  system: $("system-prompt"), temperature: $("temperature"), temperatureValue: $("temperature-value"),
  maxTokens: $("max-tokens"), auth: $("auth"), apiKey: $("api-key"),
};

const state = {
  history: [],        // {role, content} of the turns so far, without the system prompt
  model: null,        // the id GET /v1/models names; null until it answers
  apiKey: sessionStorage.getItem("flint.apiKey") || "",
  controller: null,   // AbortController of the request in flight, null when idle
};

// The latest answer's numbers, for people at the console and for tests/e2e/test_chat_page.py.
// state: idle | waiting | streaming | done | stopped | error.
function freshStats() {
  return { state: "idle", chunks: 0, contentChunks: 0, reasoningChunks: 0, promptTokens: null,
           completionTokens: null, timeToFirstTokenMs: null, tokensPerSecond: null,
           finishReason: null, error: null };
}
window.flintStats = freshStats();
window.flintChat = { get history() { return state.history; } };

// ---------------------------------------------------------------- settings

const SETTINGS_KEY = "flint.settings";

function loadSettings() {
  try {
    const s = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
    if (typeof s.system === "string") ui.system.value = s.system;
    if (Number.isFinite(s.temperature)) ui.temperature.value = s.temperature;
    if (Number.isInteger(s.maxTokens)) ui.maxTokens.value = s.maxTokens;
  } catch { /* a damaged entry: keep the defaults */ }
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
}

function saveSettings() {
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({
    system: ui.system.value, temperature: Number(ui.temperature.value),
    maxTokens: Number.parseInt(ui.maxTokens.value, 10) || undefined,
  }));
}

function requestHeaders() {
  const h = { "Content-Type": "application/json" };
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

function askForApiKey() {
  ui.auth.hidden = false;
  ui.apiKey.value = state.apiKey;
  ui.apiKey.focus();
}

// The message of an OpenAI error body ({"error": {"message": ...}}), else the body or status.
async function errorOf(res) {
  const text = await res.text().catch(() => "");
  let message = text.trim();
  try { message = JSON.parse(text).error.message || message; } catch { /* not JSON */ }
  return `${res.status} ${res.statusText}${message ? ": " + message : ""}`;
}

async function loadModel() {
  ui.model.classList.remove("error");
  try {
    const res = await fetch("/v1/models", { headers: requestHeaders() });
    if (res.status === 401) {
      ui.model.textContent = "API key needed";
      askForApiKey();
      return;
    }
    if (!res.ok) throw new Error(await errorOf(res));
    const body = await res.json();
    state.model = body.data && body.data.length ? body.data[0].id : null;
    ui.model.textContent = state.model || "no model";
    ui.model.title = state.model ? `Serving ${state.model}` : "The server lists no model";
  } catch (e) {
    ui.model.textContent = "server unreachable";
    ui.model.title = e.message;
    ui.model.classList.add("error");
  }
}

// ---------------------------------------------------------------- server-sent events

// Yields the data of each event in an SSE body (its "data:" lines joined by "\n").
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value, { stream: !done });
      const lines = buffer.split("\n");
      buffer = done ? "" : lines.pop();
      for (let line of lines) {
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        }  // comments (":") and other fields (event, id, retry) carry nothing here
      }
      if (done) {
        if (data.length) yield data.join("\n");
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// ---------------------------------------------------------------- rendering

// Text with ``` fences as code blocks and `spans` as inline code; an open fence (still
// streaming) is shown as code already.
function renderRich(el, text) {
  const frag = document.createDocumentFragment();
  const parts = text.split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const nl = part.indexOf("\n");
      if (nl < 0 && i === parts.length - 1) return;  // the language tag is still arriving
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = nl < 0 ? part : part.slice(nl + 1).replace(/\n$/, "");
      if (nl > 0) pre.dataset.lang = part.slice(0, nl).trim();
      pre.append(code);
      frag.append(pre);
      return;
    }
    // A code block has margins of its own: drop the newlines around it.
    let prose = i > 0 ? part.replace(/^\n+/, "") : part;
    if (i < parts.length - 1) prose = prose.replace(/\n+$/, "");
    if (!prose) return;
    const div = document.createElement("div");
    div.className = "text";
    prose.split(/`([^`\n]+)`/).forEach((piece, j) => {
      if (j % 2 === 0) {
        if (piece) div.append(piece);
      } else {
        const code = document.createElement("code");
        code.textContent = piece;
        div.append(code);
      }
    });
    frag.append(div);
  });
  el.replaceChildren(frag);
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd() { ui.messages.scrollTop = ui.messages.scrollHeight; }

function addMessage(role) {
  ui.empty.hidden = true;
  const msg = document.createElement("div");
  msg.className = `msg ${role}`;
  const content = document.createElement("div");
  content.className = "content";
  msg.append(content);
  ui.messages.append(msg);
  return { msg, content };
}

// One assistant answer: reasoning (a <details>, made when the first reasoning arrives),
// the answer, and a line of stats. Renders at most once per frame.
class AnswerView {
  constructor() {
    ({ msg: this.msg, content: this.content } = addMessage("assistant"));
    this.reasoning = "";
    this.answer = "";
    this.details = null;
    this.pending = false;
    this.stats = document.createElement("div");
    this.stats.className = "stats";
    this.msg.append(this.stats);
  }

  addReasoning(text) {
    if (!this.details) {
      this.details = document.createElement("details");
      this.details.className = "reasoning";
      this.details.open = true;
      this.summary = document.createElement("summary");
      this.summary.textContent = "Thinking…";
      this.thoughts = document.createElement("div");
      this.thoughts.className = "thoughts";
      this.details.append(this.summary, this.thoughts);
      this.msg.insertBefore(this.details, this.content);
    }
    this.reasoning += text;
    this.schedule();
  }

  addAnswer(text) {
    if (!this.answer && this.details) this.details.open = false;  // the answer has started
    this.answer += text;
    this.schedule();
  }

  endReasoning(seconds) {
    if (this.summary) this.summary.textContent = `Reasoning (${seconds.toFixed(1)} s)`;
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => this.render());
  }

  render() {
    this.pending = false;
    const stick = nearBottom();
    if (this.details) this.thoughts.textContent = this.reasoning;
    renderRich(this.content, this.answer);
    if (stick) scrollToEnd();
  }

  setStats(text) { this.stats.textContent = text; }

  showError(message) {
    const err = document.createElement("div");
    err.className = "error-text";
    err.textContent = message;
    this.msg.append(err);
    if (!this.answer) this.content.hidden = true;
    scrollToEnd();
  }
}

// "87 tokens · 23.4 tok/s · 0.42 s to first token", from flintStats.
function statsLine(s, streaming) {
  const parts = [];
  const tokens = s.completionTokens ?? s.chunks;
  if (tokens) parts.push(`${streaming ? "~" : ""}${tokens} token${tokens === 1 ? "" : "s"}`);
  if (s.tokensPerSecond != null) parts.push(`${s.tokensPerSecond.toFixed(1)} tok/s`);
  if (s.timeToFirstTokenMs != null) parts.push(`${(s.timeToFirstTokenMs / 1000).toFixed(2)} s to first token`);
  if (s.state === "stopped") parts.push("stopped");
  if (s.finishReason === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

// ---------------------------------------------------------------- one turn

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  if (!busy) ui.prompt.focus();
}

async function send(text) {
  if (state.controller || !text.trim()) return;
  const user = addMessage("user");
  user.content.textContent = text;
  const history = state.history;  // New chat replaces it; this turn ends in the old one
  history.push({ role: "user", content: text });
  scrollToEnd();

  const view = new AnswerView();
  const stats = window.flintStats = freshStats();
  const controller = state.controller = new AbortController();
  setBusy(true);

  const system = ui.system.value.trim();
  const body = {
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(ui.temperature.value),
  };
  const maxTokens = Number.parseInt(ui.maxTokens.value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  if (state.model) body.model = state.model;

  const sent = performance.now();
  let first = null;
  let firstAnswer = null;
  const tick = (now) => {
    const seconds = (now - first) / 1000;
    const tokens = stats.completionTokens ?? stats.chunks;
    stats.tokensPerSecond = seconds > 0 ? tokens / seconds : null;
  };
  stats.state = "waiting";
  view.setStats("waiting for the first token…");
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: requestHeaders(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (res.status === 401) askForApiKey();
    if (!res.ok) throw new Error(await errorOf(res));
    stats.state = "streaming";
    for await (const data of sseEvents(res.body)) {
      if (data === "[DONE]") break;
      let chunk;
      try { chunk = JSON.parse(data); } catch { throw new Error(`the server sent a bad event: ${data.slice(0, 200)}`); }
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) {
        stats.promptTokens = chunk.usage.prompt_tokens;
        stats.completionTokens = chunk.usage.completion_tokens;
      }
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      const now = performance.now();
      if (delta.reasoning_content || delta.content) {
        if (first === null) {
          first = now;
          stats.timeToFirstTokenMs = now - sent;
        }
        stats.chunks++;
        if (delta.reasoning_content) {
          stats.reasoningChunks++;
          view.addReasoning(delta.reasoning_content);
        }
        if (delta.content) {
          if (firstAnswer === null && view.details) view.endReasoning((now - first) / 1000);
          firstAnswer ??= now;
          stats.contentChunks++;
          view.addAnswer(delta.content);
        }
        tick(now);
        view.setStats(statsLine(stats, true));
      }
      if (choice.finish_reason) stats.finishReason = choice.finish_reason;
    }
    stats.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      stats.state = "stopped";
    } else {
      stats.state = "error";
      stats.error = e.message;
      view.showError(res401Hint(e.message));
    }
  }
  const end = performance.now();
  if (first !== null) tick(end);
  if (view.details && firstAnswer === null) view.endReasoning((end - (first ?? end)) / 1000);
  view.render();
  view.setStats(statsLine(stats, false));
  if (view.answer) {
    history.push({ role: "assistant", content: view.answer });
  } else {
    // Nothing came back: the question leaves the conversation and returns to the input.
    history.pop();
    user.msg.classList.add("unsent");
    if (!ui.prompt.value) ui.prompt.value = text;
  }
  state.controller = null;
  setBusy(false);
}

function res401Hint(message) {
  return message.startsWith("401") ? `${message}\nEnter the API key above, then send again.` : message;
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  ui.messages.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  window.flintStats = freshStats();
  ui.prompt.focus();
}

// ---------------------------------------------------------------- wiring

function fitPrompt() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${ui.prompt.scrollHeight + 2}px`;
}

function submit() {
  if (state.controller) return;
  const text = ui.prompt.value;
  if (!text.trim()) return;
  ui.prompt.value = "";
  fitPrompt();
  send(text);
}

ui.composer.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submit();
  } else if (e.key === "Escape" && state.controller) {
    state.controller.abort();
  }
});
ui.prompt.addEventListener("input", fitPrompt);
ui.stop.addEventListener("click", () => state.controller && state.controller.abort());
ui.newChat.addEventListener("click", newChat);
ui.settingsToggle.addEventListener("click", () => {
  ui.settings.hidden = !ui.settings.hidden;
  ui.settingsToggle.setAttribute("aria-expanded", String(!ui.settings.hidden));
});
for (const el of [ui.system, ui.temperature, ui.maxTokens]) el.addEventListener("input", saveSettings);
ui.auth.addEventListener("submit", (e) => {
  e.preventDefault();
  state.apiKey = ui.apiKey.value.trim();
  sessionStorage.setItem("flint.apiKey", state.apiKey);
  ui.auth.hidden = true;
  loadModel();
  ui.prompt.focus();
});

loadSettings();
loadModel();
