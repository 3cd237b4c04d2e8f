/*
 * Chat page client: one WebSocket per page, reconnecting with exponential
 * backoff + jitter (so a restarted worker is not hit by every client at the
 * same instant), resuming with ?after=<highest id received with no gap> so no
 * message is lost or shown twice. Close codes follow docs/architecture.md.
 */
(function () {
  "use strict";

  var STOP_CODES = { 4400: "invalid room name", 4401: "not authorised: log in", 4403: "origin refused", 4404: "unknown endpoint" };
  var RESTART = 1012;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 30000;

  var room = JSON.parse(document.getElementById("room-name").textContent);
  var list = document.getElementById("messages");
  var statusEl = document.getElementById("status");
  var form = document.getElementById("send-form");
  var input = document.getElementById("message-input");

  var socket = null;
  var lastId = 0;          // highest id shown such that every id below it was shown too
  var attempt = 0;
  var stopped = false;
  var retryTimer = null;

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function notice(text, kind) {
    var li = document.createElement("li");
    li.className = kind ? "notice " + kind : "notice";
    li.textContent = text;
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  // "message not sent" lines describe a socket that is gone: drop them once it is back.
  function clearUnsent() {
    var stale = list.querySelectorAll("li.notice.unsent");
    for (var i = 0; i < stale.length; i++) stale[i].remove();
  }

  function show(msg) {
    // Drop duplicates and anything older than what we have; the server fills gaps.
    if (typeof msg.id !== "number" || msg.id <= lastId) return;
    if (msg.id !== lastId + 1 && lastId !== 0) {
      // A gap we cannot fill locally: reconnect and resume from what we have.
      reconnectNow();
      return;
    }
    lastId = msg.id;
    var li = document.createElement("li");
    li.dataset.id = String(msg.id);
    var user = document.createElement("span");
    user.className = "user";
    user.textContent = msg.username;
    var body = document.createElement("span");
    body.className = "body";
    body.textContent = msg.message;
    var time = document.createElement("time");
    time.dateTime = msg.ts;
    time.textContent = new Date(msg.ts).toLocaleTimeString();
    li.appendChild(user);
    li.appendChild(body);
    li.appendChild(time);
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  function url() {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var u = scheme + "//" + window.location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
    return lastId > 0 ? u + "?after=" + lastId : u;
  }

  function backoffMs() {
    var cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    return cap / 2 + Math.random() * cap / 2;  // "equal jitter"
  }

  function schedule(delay) {
    if (stopped || retryTimer) return;
    // Under a second (a 1012 restart, the first retries) there is no countdown
    // worth showing; above, round up so the page never says "in 0 s".
    setStatus("reconnecting", delay < 1000 ? "reconnecting…" : "reconnecting in " + Math.ceil(delay / 1000) + " s…");
    retryTimer = window.setTimeout(function () { retryTimer = null; connect(); }, delay);
  }

  function reconnectNow() {
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    schedule(0);
  }

  function onFrame(event) {
    var frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (frame.type === "chat.welcome") {
      attempt = 0;
      setStatus("open", "connected as " + frame.user);
      clearUnsent();
      if (frame.last_id < lastId) {
        // The server has fewer messages than we saw (database reset): start over.
        list.textContent = "";
        lastId = 0;
      }
      frame.history.forEach(show);
    } else if (frame.type === "chat.message") {
      show(frame);
    } else if (frame.type === "chat.error") {
      notice("error: " + frame.detail);
    }
  }

  function connect() {
    if (stopped) return;
    setStatus("connecting", "connecting…");
    socket = new WebSocket(url());
    socket.onmessage = onFrame;
    socket.onclose = function (event) {
      socket = null;
      if (STOP_CODES[event.code]) {
        stopped = true;
        setStatus("closed", "disconnected: " + STOP_CODES[event.code]);
        return;
      }
      if (event.code === RESTART) {
        attempt = 0;
        schedule(0);
        return;
      }
      attempt += 1;
      schedule(backoffMs());
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      notice("not connected; message not sent", "unsent");
      return;
    }
    socket.send(JSON.stringify({ message: text }));
    input.value = "";
  });

  connect();
})();
