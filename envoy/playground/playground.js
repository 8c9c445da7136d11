// The Sluice playground's script: plain JavaScript, no build step, no libraries. It talks to the same API as every
// client: GET /v1/models, GET /v1/vector_stores and POST /v1/chat/completions with stream: true (Server-Sent
// Events), sending the key as `Authorization: Bearer ...`. Stop aborts the fetch; Envoy resets the stream and the
// engine cancels the generation.
"use strict";

const KEY_STORAGE = "sluice.apiKey"; // sessionStorage only: the key is forgotten when the tab closes
const $ = (id) => document.getElementById(id);
const history = []; // the conversation so far: {role, content}, sent again with every turn
let controller = null; // the AbortController of the request in flight

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders(json) {
  const headers = { Authorization: "Bearer " + apiKey() };
  if (json) headers["Content-Type"] = "application/json";
  return headers;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// An error answer in words: OpenAI-shaped bodies carry error.message and error.code.
async function describeError(response) {
  let message = response.statusText || "request failed";
  let code = null;
  try {
    const body = await response.json();
    if (body.error) {
      message = body.error.message || message;
      code = body.error.code;
    }
  } catch (ignored) { /* not JSON: keep the status text */ }
  if (response.status === 401) return "The API key was refused (401): " + message;
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return "Rate limited (429): " + message + (wait ? " Retry after " + wait + " s." : "");
  }
  if (code === "content_policy_violation") return "Blocked by the content filter: " + message;
  return "Error " + response.status + ": " + message;
}

function fillSelect(select, values, keepFirst) {
  const previous = select.value;
  while (select.options.length > (keepFirst ? 1 : 0)) select.remove(select.options.length - 1);
  for (const value of values) select.add(new Option(value, value));
  if (values.includes(previous)) select.value = previous;
}

async function loadChoices() {
  if (!apiKey()) {
    setStatus("Enter an API key (the banner of `sluice up` prints one).", false);
    return;
  }
  const models = await fetch("/v1/models", { headers: authHeaders(false) });
  if (!models.ok) {
    setStatus(await describeError(models), true);
    return;
  }
  const chat = (await models.json()).data.filter((m) => !m.id.includes("MiniLM")).map((m) => m.id);
  fillSelect($("model"), chat, false);
  const stores = await fetch("/v1/vector_stores", { headers: authHeaders(false) });
  if (stores.ok) fillSelect($("collection"), (await stores.json()).data.map((s) => s.id), true);
  setStatus(chat.length + " model(s) available", false);
}

function addTurn(role) {
  const turn = document.createElement("div");
  turn.className = "turn " + role;
  turn.innerHTML = '<div class="who"></div><div class="text"></div><div class="meta"></div>';
  turn.querySelector(".who").textContent = role;
  $("log").appendChild(turn);
  return { root: turn, text: turn.querySelector(".text"), meta: turn.querySelector(".meta") };
}

function showError(turn, message) {
  const box = document.createElement("div");
  box.className = "error";
  box.textContent = message;
  turn.root.appendChild(box);
}

function showRequestId(turn, requestId) {
  if (!requestId) return;
  turn.meta.innerHTML = "request id <code></code> · trace it with <code></code>";
  const codes = turn.meta.querySelectorAll("code");
  codes[0].textContent = requestId;
  codes[1].textContent = "sluice trace " + requestId;
}

function showCitations(turn, citations) {
  if (!citations || !citations.length) return;
  const list = document.createElement("ol");
  list.className = "citations";
  for (const c of citations) {
    const item = document.createElement("li");
    item.innerHTML = '<span class="source"></span> <span class="score"></span><div class="snippet"></div>';
    item.querySelector(".source").textContent = c.title || c.source || c.document_id;
    item.querySelector(".score").textContent = "(score " + Number(c.score).toFixed(3) + ")";
    item.querySelector(".snippet").textContent = c.snippet || "";
    list.appendChild(item);
  }
  turn.root.appendChild(list);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Reads the SSE body frame by frame, calling onEvent with each parsed `data:` JSON (not [DONE]).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        const data = line.startsWith("data:") ? line.slice(5).trim() : "";
        if (data && data !== "[DONE]") onEvent(JSON.parse(data));
      }
    }
  }
}

async function send() {
  const text = $("message").value.trim();
  if (!text || controller) return;
  const user = addTurn("user");
  user.text.textContent = text;
  const turn = addTurn("assistant");
  if (!apiKey()) {
    showError(turn, "Enter an API key first.");
    return;
  }
  $("message").value = "";
  const messages = [];
  if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value.trim() });
  messages.push(...history, { role: "user", content: text });
  const body = {
    model: $("model").value, messages: messages, stream: true,
    temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
  };
  if ($("collection").value) body.retrieval = { collections: [$("collection").value] };
  controller = new AbortController();
  setBusy(true);
  let reply = "";
  let finish = null;
  let citations = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: authHeaders(true), body: JSON.stringify(body), signal: controller.signal,
    });
    showRequestId(turn, response.headers.get("x-request-id"));
    if (!response.ok) {
      showError(turn, await describeError(response));
      return;
    }
    await readEvents(response, (event) => {
      if (event.error) {
        showError(turn, "The reply was cut short: " + event.error.message);
        return;
      }
      const choice = (event.choices || [])[0];
      if (choice && choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        turn.text.textContent = reply;
        $("log").scrollTop = $("log").scrollHeight;
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (event.citations) citations = event.citations;
    });
    if (finish === "content_filter") showError(turn, "The content filter stopped this reply.");
    if (finish === "length") turn.meta.append(" · stopped at max tokens");
    showCitations(turn, citations);
    history.push({ role: "user", content: text }, { role: "assistant", content: reply });
  } catch (err) {
    if (err.name === "AbortError") {
      turn.meta.append(" · stopped");
      history.push({ role: "user", content: text }, { role: "assistant", content: reply });
    } else {
      showError(turn, "The request failed: " + err.message);
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

$("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORAGE, apiKey());
  loadChoices();
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => {
  history.length = 0;
  $("log").textContent = "";
});
loadChoices();
