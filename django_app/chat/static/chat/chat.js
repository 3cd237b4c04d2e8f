/*
 * Chat page client: one WebSocket per page, reconnecting with exponential
 * backoff + jitter (so a restarted worker is not hit by every client at the
 * same instant), resuming with ?after=<highest id received with no gap> so no
 * message is lost or shown twice. Close codes follow docs/architecture.md.
 *
 * Sent messages carry a random client_msg_id and stay in `outbox` until the
 * server's chat.ack; after a reconnect (and every heartbeat for ones still
 * unacknowledged) they are sent again with the same id, and the server stores
 * each id once. A heartbeat ({"type":"ping"} every HEARTBEAT_MS) detects a
 * worker that stopped answering: two intervals without any frame and the page
 * reconnects (a browser cannot see WebSocket-level pings). A connect with no
 * welcome within OPEN_TIMEOUT_MS is abandoned and retried the same way.
 */
(function () {
  "use strict";

  var STOP_CODES = { 4400: "invalid room name", 4401: "not authorised: log in", 4403: "origin refused", 4404: "unknown endpoint" };
  var RESTART = 1012;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var HEARTBEAT_MS = 10000;  // same as clients/chatclient.py HEARTBEAT_SECONDS
  var OPEN_TIMEOUT_MS = 5000;  // above the server's WS_CONNECT_TIMEOUT (3 s)

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
  var welcomed = false;
  var lastRx = 0;          // when the current socket last sent us anything
  var retryAfterMs = 0;    // the server's hint with a refusal
  var openTimer = null;
  var outbox = new Map();  // client_msg_id -> {text, sentAt}: sent, not yet acknowledged

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function transmit(id) {
    var entry = outbox.get(id);
    if (!entry || !socket || socket.readyState !== WebSocket.OPEN || !welcomed) return;
    entry.sentAt = Date.now();
    socket.send(JSON.stringify({ message: entry.text, client_msg_id: id }));
  }

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
    drop();
    schedule(0);
  }

  function drop() {
    if (openTimer) { window.clearTimeout(openTimer); openTimer = null; }
    if (socket) { socket.onclose = null; socket.onmessage = null; socket.close(); socket = null; }
    welcomed = false;
  }

  function hung(why) {
    // The worker stopped answering: leave it; nginx sends the reconnect elsewhere.
    notice(why + "; reconnecting");
    drop();
    attempt += 1;
    schedule(backoffMs());
  }

  window.setInterval(function () {
    if (!socket || socket.readyState !== WebSocket.OPEN || !welcomed) return;
    if (Date.now() - lastRx > 2 * HEARTBEAT_MS) { hung("server not answering"); return; }
    socket.send('{"type":"ping"}');
    outbox.forEach(function (entry, id) {
      if (Date.now() - entry.sentAt >= HEARTBEAT_MS) transmit(id);  // refused or lost: again, same id
    });
  }, HEARTBEAT_MS);

  function onFrame(event) {
    var frame;
    lastRx = Date.now();
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (frame.type === "chat.welcome") {
      attempt = 0;
      welcomed = true;
      if (openTimer) { window.clearTimeout(openTimer); openTimer = null; }
      setStatus("open", "connected as " + frame.user);
      clearUnsent();
      if (frame.last_id < lastId) {
        // The server has fewer messages than we saw (database reset): start over.
        list.textContent = "";
        lastId = 0;
      }
      frame.history.forEach(show);
      outbox.forEach(function (entry, id) { transmit(id); });  // unacknowledged: resend, same ids
    } else if (frame.type === "chat.message") {
      show(frame);
    } else if (frame.type === "chat.ack") {
      outbox.delete(frame.client_msg_id);
    } else if (frame.type === "chat.error") {
      if (frame.retry_after) retryAfterMs = frame.retry_after * 1000;
      notice("error: " + frame.detail);
    }
  }

  function connect() {
    if (stopped) return;
    setStatus("connecting", "connecting…");
    welcomed = false;
    socket = new WebSocket(url());
    socket.onmessage = onFrame;
    openTimer = window.setTimeout(function () { openTimer = null; hung("no answer from the server"); }, OPEN_TIMEOUT_MS);
    socket.onclose = function (event) {
      if (openTimer) { window.clearTimeout(openTimer); openTimer = null; }
      socket = null;
      welcomed = false;
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
      var delay = Math.max(backoffMs(), retryAfterMs);
      retryAfterMs = 0;
      schedule(delay);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    var id = newId();
    outbox.set(id, { text: text, sentAt: 0 });
    input.value = "";
    if (!socket || socket.readyState !== WebSocket.OPEN || !welcomed) {
      notice("not connected; message not sent yet: it goes out when the connection is back", "unsent");
      return;
    }
    transmit(id);
  });

  connect();
})();
