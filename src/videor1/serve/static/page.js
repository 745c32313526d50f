// The try-it page of `videor1 serve`: plain browser JavaScript, no build step, nothing loaded from elsewhere.
// Model output is only ever put in the page with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "videor1.apiKey";

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  info: null, // GET /v1/videor1/info once the server answered it
  media: null, // {kind: "video" | "image", url: data URL or server path, name}
  controller: null, // AbortController of the answer being streamed
};

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function api(method, path, body, signal) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.key) headers.Authorization = "Bearer " + state.key;
  return fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal});
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not an OpenAI error body */ }
  return response.status + " " + response.statusText;
}

function askForKey(refused) {
  $("key-section").hidden = false;
  $("server-line").textContent = refused
    ? "The server refused this API key; enter the right one."
    : "This server requires an API key.";
  $("api-key").focus();
}

// ---- server info

async function loadInfo() {
  let response;
  try {
    response = await api("GET", "/v1/videor1/info");
  } catch (err) {
    $("server-line").textContent = "The server cannot be reached: " + err.message;
    return;
  }
  if (response.status === 401) {
    askForKey(Boolean(state.key));
    return;
  }
  if (!response.ok) {
    showError(await errorText(response));
    return;
  }
  const info = await response.json();
  state.info = info;
  $("key-section").hidden = true;
  const s = info.sampling;
  const m = info.media;
  const frames = m.nframes ? m.nframes + " frames" : `${m.fps} fps, ${m.min_frames}–${m.max_frames} frames`;
  $("server-line").textContent =
    `Model: ${info.model} · defaults: temperature ${s.temperature}, top_p ${s.top_p}, max_tokens ${s.max_tokens}` +
    ` · video sampling: ${frames}, up to ${m.video_max_pixels} pixels per frame`;
  const fill = (id, value) => { if ($(id).value === "") $(id).value = value; };
  fill("temperature", s.temperature);
  fill("top-p", s.top_p);
  fill("max-tokens", s.max_tokens);
  $("max-tokens").max = s.max_tokens_limit;
  $("path-form").hidden = !info.local_media;
  updatePreview();
  if (state.media && !$("frames").children.length) loadFrames();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  if ($("remember-key").checked) sessionStorage.setItem(KEY_STORAGE, state.key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("api-key").value = "";
  showError("");
  loadInfo();
});

// ---- media and its sampled frames

function kindOf(file) {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("video/")) return "video";
  return /\.(png|jpe?g|gif|webp|bmp|tiff?)$/i.test(file.name) ? "image" : "video";
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function mediaPart(media) {
  const type = media.kind + "_url";
  return {type, [type]: {url: media.url}};
}

$("media-file").addEventListener("change", async () => {
  const file = $("media-file").files[0];
  if (!file) return;
  showError("");
  // base64 is 4/3 of the bytes; the rest of the request is small next to it
  const limit = state.info ? state.info.max_body_bytes : Infinity;
  if (Math.ceil(file.size / 3) * 4 + 64 * 1024 > limit) {
    showError(`${file.name} is too large for this server: requests are limited to ${(limit / 2 ** 20).toFixed(1)} MiB.`);
    return;
  }
  state.media = {kind: kindOf(file), url: await readAsDataURL(file), name: file.name};
  loadFrames();
});

$("path-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const path = $("media-path").value.trim();
  if (!path) return;
  showError("");
  state.media = {kind: $("media-kind").value, url: path, name: path};
  loadFrames();
});

async function loadFrames() {
  const media = state.media;
  const list = $("frames");
  list.replaceChildren();
  list.removeAttribute("data-count");
  $("media-status").textContent = `Sampling ${media.name} with the server's media settings…`;
  let response;
  try {
    response = await api("POST", "/v1/videor1/frames", mediaPart(media));
  } catch (err) {
    $("media-status").textContent = "";
    showError("The server cannot be reached: " + err.message);
    return;
  }
  if (state.media !== media) return; // another file was chosen meanwhile
  if (response.status === 401) {
    $("media-status").textContent = "Enter the API key to see the frames.";
    askForKey(Boolean(state.key));
    return;
  }
  if (!response.ok) {
    $("media-status").textContent = "";
    showError(await errorText(response));
    state.media = null;
    return;
  }
  const body = await response.json();
  for (const frame of body.frames) {
    const item = document.createElement("li");
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    const caption = document.createElement("figcaption");
    const when = frame.timestamp === null ? "image" : frame.timestamp.toFixed(2) + " s";
    img.src = frame.image;
    img.alt = frame.timestamp === null ? "the image" : `frame ${frame.index} at ${when}`;
    caption.textContent = when;
    if (frame.timestamp !== null) item.dataset.timestamp = frame.timestamp;
    figure.append(img, caption);
    item.append(figure);
    list.append(item);
  }
  list.dataset.count = body.frames.length;
  $("media-status").textContent = body.kind === "video"
    ? `${media.name}: ${body.count} frames of ${body.width}×${body.height} at ${body.sample_fps.toFixed(2)} fps` +
      ` from a ${body.duration.toFixed(1)} s clip (${body.total_frames} frames at ${body.video_fps.toFixed(1)} fps)`
    : `${media.name}: one image of ${body.width}×${body.height}`;
}

// ---- the prompt

function optionLines() {
  return $("options").value.split("\n").map((line) => line.trim()).filter(Boolean);
}

// Video-R1's user prompt, as videor1.data.prompts.user_prompt writes it, from the server's own templates
function buildPrompt() {
  const question = $("question").value.trim();
  const type = $("problem-type").value;
  if (!type) return question;
  if (!state.info) return null;
  const templates = state.info.prompts;
  const text = type === "multiple choice"
    ? question + "Options:\n" + optionLines().map((option) => option + "\n").join("")
    : question;
  return templates.question_template.replace("{Question}", () => text) + templates.type_templates[type];
}

function updatePreview() {
  $("options-field").hidden = $("problem-type").value !== "multiple choice";
  const prompt = buildPrompt();
  $("prompt-preview").textContent = prompt === null ? "(enter the API key first)" : prompt;
}

for (const id of ["question", "options", "problem-type"]) {
  $(id).addEventListener("input", updatePreview);
}

$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

// ---- asking and the streamed answer

// The <think> and last <answer> parts of (possibly unfinished) output, and what lies outside both
function splitOutput(text) {
  let thinking = null;
  let answer = null;
  let outside = text;
  const open = text.indexOf("<think>");
  const close = text.indexOf("</think>", open < 0 ? 0 : open);
  if (open >= 0 || close >= 0) { // a chat template may open <think> in the prompt: then only </think> comes
    const start = open >= 0 ? open + "<think>".length : 0;
    thinking = text.slice(start, close < 0 ? text.length : close);
    outside = text.slice(0, open >= 0 ? open : 0) + (close < 0 ? "" : text.slice(close + "</think>".length));
  }
  const answerOpen = outside.lastIndexOf("<answer>");
  if (answerOpen >= 0) {
    const end = outside.indexOf("</answer>", answerOpen);
    answer = outside.slice(answerOpen + "<answer>".length, end < 0 ? outside.length : end);
    outside = outside.slice(0, answerOpen) + (end < 0 ? "" : outside.slice(end + "</answer>".length));
  }
  return {thinking, answer, outside};
}

function renderOutput(turn, text, streaming) {
  const {thinking, answer, outside} = splitOutput(text);
  const details = turn.querySelector(".thinking");
  turn.querySelector(".thinking-text").textContent = thinking === null ? "" : thinking.trim();
  details.querySelector("summary").textContent =
    thinking === null ? (streaming ? "Thinking" : "Thinking (none in the output)") : "Thinking";
  // thoughts are shown while they stream, unless the reader already closed the block
  if (streaming && thinking !== null && answer === null && !details.dataset.touched) details.open = true;
  const answerBox = turn.querySelector(".answer");
  if (answer !== null) {
    answerBox.textContent = answer.trim();
    answerBox.classList.remove("untagged");
  } else {
    answerBox.textContent = outside.trim() || (streaming ? "…" : "(empty)");
    answerBox.classList.toggle("untagged", !streaming || Boolean(outside.trim()));
  }
  turn.querySelector(".answer-box h4").textContent = answer !== null || streaming
    ? "Answer" : "Answer (no <answer> tags: the output outside <think> is shown)";
  turn.querySelector(".raw-text").textContent = text;
}

// Yields the JSON payload of each `data:` event of a server-sent-event stream until `data: [DONE]`
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const take = function* (final) {
    for (;;) {
      const boundary = /\r?\n\r?\n/.exec(buffer);
      if (!boundary && !(final && buffer.trim())) return;
      const end = boundary ? boundary.index : buffer.length;
      const event = buffer.slice(0, end);
      buffer = boundary ? buffer.slice(end + boundary[0].length) : "";
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  };
  try {
    for (;;) {
      const {value, done} = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
      for (const data of take(done)) {
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => {}); // a reader that stops early (an error, Stop) closes the request
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

$("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });

$("problem-type").addEventListener("change", updatePreview);

$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.controller) return; // one answer at a time
  showError("");
  const question = $("question").value.trim();
  const prompt = buildPrompt();
  if (!question) { $("question").focus(); return; }
  if (prompt === null || !state.info) { askForKey(false); return; }
  const sampling = {
    temperature: Number($("temperature").value), top_p: Number($("top-p").value),
    max_tokens: Math.round(Number($("max-tokens").value)),
  };
  const content = state.media ? [mediaPart(state.media)] : [];
  content.push({type: "text", text: prompt});
  const request = {model: state.info.model, messages: [{role: "user", content}], stream: true, ...sampling};

  const turn = $("turn-template").content.firstElementChild.cloneNode(true);
  const type = $("problem-type").value;
  turn.querySelector(".question").textContent = question + (type ? `  [${type}]` : "");
  turn.querySelector(".thinking").addEventListener("toggle", (e) => { e.target.dataset.touched = "1"; }, {once: true});
  const meta = turn.querySelector(".meta");
  const settings = `${state.info.model} · temperature ${sampling.temperature} · top_p ${sampling.top_p}` +
    ` · max_tokens ${sampling.max_tokens}` + (state.media ? ` · ${state.media.kind}: ${state.media.name}` : "");
  meta.textContent = settings + " · waiting…";
  $("no-answers").hidden = true;
  $("history").append(turn);
  turn.dataset.state = "streaming";
  turn.dataset.chunks = "0";
  renderOutput(turn, "", true);
  turn.scrollIntoView({block: "nearest"});

  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const started = performance.now();
  let text = "";
  let finish = null;
  let usage = null;
  let outcome = "done";
  try {
    const response = await api("POST", "/v1/chat/completions", request, controller.signal);
    if (response.status === 401) { askForKey(Boolean(state.key)); throw new Error(await errorText(response)); }
    if (!response.ok) throw new Error(await errorText(response));
    meta.textContent = settings + " · streaming…";
    const streamed = (response.headers.get("content-type") || "").includes("text/event-stream");
    turn.dataset.transport = streamed ? "sse" : "json";
    if (streamed) {
      for await (const chunk of sseEvents(response)) {
        if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        if (choice.finish_reason) finish = choice.finish_reason;
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          text += piece;
          turn.dataset.chunks = String(Number(turn.dataset.chunks) + 1);
          renderOutput(turn, text, true);
        }
      }
    } else { // a server that answers in one piece
      const body = await response.json();
      text = body.choices[0].message.content || "";
      finish = body.choices[0].finish_reason;
      usage = body.usage || null;
      turn.dataset.chunks = "1";
    }
  } catch (err) {
    outcome = controller.signal.aborted ? "stopped" : "error";
    if (outcome === "error") showError(err.message);
  } finally {
    state.controller = null;
    setBusy(false);
  }
  renderOutput(turn, text, false);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const tail = outcome === "done"
    ? ` · finish: ${finish || "?"}` + (usage ? ` · ${usage.completion_tokens} tokens` : "") + ` · ${seconds} s`
    : ` · ${outcome} after ${seconds} s`;
  meta.textContent = settings + tail;
  turn.dataset.state = outcome;
  turn.querySelector(".output").setAttribute("aria-busy", "false");
});

updatePreview();
loadInfo();
