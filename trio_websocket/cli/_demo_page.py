"""The chat page ``trio-websocket serve`` gives a browser that asks for ``/``.

One self-contained HTML document (inline CSS and JavaScript, no external
assets) that connects back to the server it came from. The open WebSocket is
``window.chat.ws``; received messages are ``li`` elements of ``#log``.
"""

DEMO_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trio-websocket chat</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.3rem; margin-bottom: .25rem; }
  #status { color: #777; font-size: .9rem; margin: 0 0 1rem; }
  #status.open { color: #2a7d2a; }
  #status.closed { color: #b03030; }
  #log { list-style: none; padding: .5rem; margin: 0; height: 20rem;
         overflow-y: auto; border: 1px solid #8886; border-radius: .4rem; }
  #log li { padding: .2rem .3rem; border-bottom: 1px solid #8882;
            white-space: pre-wrap; word-break: break-word; }
  #log li.note { color: #777; font-style: italic; }
  form { display: flex; gap: .5rem; margin-top: .75rem; }
  #text { flex: 1; font: inherit; padding: .4rem; }
  button { font: inherit; padding: .4rem 1rem; }
</style>
</head>
<body>
<h1>trio-websocket chat</h1>
<p id="status">connecting&hellip;</p>
<ul id="log"></ul>
<form id="form" autocomplete="off">
  <input id="text" placeholder="Type a message and press Enter" autofocus>
  <button id="send" type="submit">Send</button>
</form>
<script>
"use strict";
const log = document.getElementById("log");
const statusLine = document.getElementById("status");
const form = document.getElementById("form");
const input = document.getElementById("text");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/");
ws.binaryType = "arraybuffer";
window.chat = { ws: ws, received: [] };

function show(text, className) {
  const item = document.createElement("li");
  item.textContent = text;
  if (className) item.className = className;
  log.appendChild(item);
  log.scrollTop = log.scrollHeight;
}

function setStatus(text, className) {
  statusLine.textContent = text;
  statusLine.className = className;
}

ws.addEventListener("open", () => {
  const extensions = ws.extensions || "none";
  setStatus("connected to " + ws.url + " (extensions: " + extensions + ")", "open");
});
ws.addEventListener("message", (event) => {
  let text = event.data;
  if (typeof text !== "string") {
    text = "[binary " + event.data.byteLength + " bytes]";
  }
  window.chat.received.push(text);
  show(text);
});
ws.addEventListener("close", (event) => {
  const reason = event.reason ? " " + event.reason : "";
  setStatus("disconnected: " + event.code + reason + " (reload to reconnect)",
            "closed");
  input.disabled = true;
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (input.value && ws.readyState === WebSocket.OPEN) {
    ws.send(input.value);
    input.value = "";
  }
  input.focus();
});
</script>
</body>
</html>
"""
