// The review app page: chat with the agent (answers streamed), rate answers and retrieved
// documents, and (with CAN_REVIEW) rate past requests. Everything the agent or a user wrote is
// put in the page with textContent, never as HTML.
"use strict";

const endpoint = decodeURIComponent(location.pathname.split("/")[2] || "");
const api = "/review/api/" + encodeURIComponent(endpoint);
const HEADERS = { "content-type": "application/json", "x-agentdeploy-review": "1" };
let messages = [];
let conversationId = newId();
let turnCounter = 0;

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function $(id) { return document.getElementById(id); }

function setStatus(text) { $("status").textContent = text; }

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message || ("HTTP " + response.status);
  } catch (e) {
    return "HTTP " + response.status;
  }
}

// One answer (live or past) with its documents and its rating form.
function buildTurn(question, requester) {
  const node = $("answer-template").content.firstElementChild.cloneNode(true);
  const n = ++turnCounter;
  node.querySelector(".question").textContent = question;
  if (requester) {
    const who = document.createElement("div");
    who.className = "requester";
    who.textContent = "asked by " + requester;
    node.insertBefore(who, node.firstChild);
  }
  node.querySelectorAll(".answer-rating .rating").forEach((r) => { r.name = "answer-" + n; });
  const form = node.querySelector("form.rate");
  form.hidden = true;
  form.addEventListener("submit", (event) => { event.preventDefault(); sendFeedback(node); });
  return node;
}

function showDocuments(node, documents) {
  const list = node.querySelector(".doc-list");
  list.textContent = "";
  (documents || []).forEach((doc, i) => {
    const item = $("document-template").content.firstElementChild.cloneNode(true);
    item.dataset.position = String(doc.position);
    item.dataset.stepId = doc.step_id || "";
    item.querySelector(".doc-source").textContent = doc.source || "(no source)";
    item.querySelector(".doc-text").textContent = doc.text;
    item.querySelectorAll(".rating").forEach((r) => { r.name = "doc-" + turnCounter + "-" + i; });
    list.appendChild(item);
  });
  const box = node.querySelector(".documents");
  box.hidden = !(documents && documents.length);
  box.querySelector("summary").textContent = "Retrieved documents (" + (documents ? documents.length : 0) + ")";
  box.open = true;
}

function checked(scope) {
  const r = scope.querySelector(".rating:checked");
  return r ? r.value : null;
}

async function sendFeedback(node) {
  const form = node.querySelector("form.rate");
  const status = form.querySelector(".feedback-status");
  const body = {
    request_id: node.dataset.requestId,
    answer: {
      rating: checked(form.querySelector(".answer-rating")),
      comment: form.querySelector(".comment").value || null,
      suggested_output: form.querySelector(".suggested").value || null,
    },
    documents: Array.from(node.querySelectorAll(".document")).map((doc) => ({
      position: Number(doc.dataset.position),
      step_id: doc.dataset.stepId || null,
      rating: checked(doc.querySelector(".doc-rating")),
      comment: doc.querySelector(".doc-comment").value || null,
    })),
  };
  status.textContent = "Sending…";
  const button = form.querySelector(".send-feedback");
  button.disabled = true;
  try {
    const response = await fetch(api + "/feedback", { method: "POST", headers: HEADERS, body: JSON.stringify(body) });
    status.textContent = response.ok ? "Feedback sent. Thank you!" : "Not sent: " + (await errorMessage(response));
    node.dataset.feedback = response.ok ? "sent" : "failed";
  } catch (e) {
    status.textContent = "Not sent: " + e;
  } finally {
    button.disabled = false;
  }
}

// Server-sent events from the review API: chat completion chunks, then `event: documents`.
function handleEvent(raw, node, answer) {
  let name = "message";
  const data = [];
  raw.split("\n").forEach((line) => {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  });
  const text = data.join("\n");
  if (name === "documents") {
    showDocuments(node, JSON.parse(text));
  } else if (name === "error") {
    let message = text;
    try { message = JSON.parse(text).message || text; } catch (e) { /* keep the raw text */ }
    answer.parts.push("\n[error: " + message + "]");
  } else if (text && text !== "[DONE]") {
    const chunk = JSON.parse(text);
    const choice = (chunk.choices || [])[0];
    const piece = choice && choice.delta ? choice.delta.content : null;
    if (typeof piece === "string") answer.parts.push(piece);
  }
  node.querySelector(".answer").textContent = answer.parts.join("");
}

async function ask(question) {
  const node = buildTurn(question);
  $("conversation").appendChild(node);
  const answerBox = node.querySelector(".answer");
  messages.push({ role: "user", content: question });
  const answer = { parts: [] };
  $("send").disabled = true;
  setStatus("The agent is answering…");
  const startedAt = performance.now();
  try {
    const response = await fetch(api + "/chat", {
      method: "POST", headers: HEADERS,
      body: JSON.stringify({ messages: messages, conversation_id: conversationId }),
    });
    if (!response.ok) {
      answerBox.textContent = "[error: " + (await errorMessage(response)) + "]";
      node.dataset.state = "failed";
      messages.pop();
      return;
    }
    node.dataset.requestId = response.headers.get("x-request-id") || "";
    conversationId = response.headers.get("x-conversation-id") || conversationId;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!node.dataset.firstChunkMs) node.dataset.firstChunkMs = String(Math.round(performance.now() - startedAt));
        handleEvent(raw, node, answer);
      }
    }
    messages.push({ role: "assistant", content: answer.parts.join("") });
    node.querySelector("form.rate").hidden = false;
    node.dataset.state = "done";
  } catch (e) {
    answerBox.textContent = "[error: " + e + "]";
    node.dataset.state = "failed";
  } finally {
    answerBox.setAttribute("aria-busy", "false");
    $("send").disabled = false;
    setStatus("");
    $("question").focus();
  }
}

async function loadRequests() {
  const list = $("requests");
  list.textContent = "";
  $("requests-note").textContent = "Loading…";
  const response = await fetch(api + "/requests", { headers: { "x-agentdeploy-review": "1" } });
  if (!response.ok) {
    $("requests-note").textContent = await errorMessage(response);
    return;
  }
  const body = await response.json();
  $("requests-note").textContent = body.payload_table === false
    ? "This endpoint has no payload table, so there are no past requests to show."
    : (body.all_users ? "Everyone's requests (you can review)." : "Your own requests.")
      + " " + body.requests.length + " shown, newest first.";
  body.requests.forEach((row) => {
    const node = buildTurn(row.question, body.all_users ? row.requester : null);
    node.dataset.requestId = row.request_id;
    const box = node.querySelector(".answer");
    box.textContent = row.answer;
    box.setAttribute("aria-busy", "false");
    showDocuments(node, row.documents);
    node.querySelector("form.rate").hidden = false;
    list.appendChild(node);
  });
}

function showView(which) {
  const chat = which === "chat";
  $("chat-view").hidden = !chat;
  $("requests-view").hidden = chat;
  $("tab-chat").setAttribute("aria-pressed", String(chat));
  $("tab-requests").setAttribute("aria-pressed", String(!chat));
  if (!chat) loadRequests();
}

async function init() {
  $("endpoint").textContent = endpoint;
  document.title = "Review " + endpoint;
  $("signout").action = "/review/" + encodeURIComponent(endpoint) + "/signout";
  const response = await fetch(api + "/me");
  if (response.ok) {
    const me = await response.json();
    $("who").textContent = me.user + " · " + me.permission_level;
    $("tab-requests").textContent = me.can_review ? "All requests" : "My past requests";
  }
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question || $("send").disabled) return;
    $("question").value = "";
    ask(question);
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask").requestSubmit();
    }
  });
  $("tab-chat").addEventListener("click", () => showView("chat"));
  $("tab-requests").addEventListener("click", () => showView("requests"));
  $("new-chat").addEventListener("click", () => {
    messages = [];
    conversationId = newId();
    $("conversation").textContent = "";
    showView("chat");
    $("question").focus();
  });
  $("question").focus();
}

document.addEventListener("DOMContentLoaded", init);
