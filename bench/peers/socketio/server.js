// BENCH-ONLY PEER: the chat a team writes when it picks Socket.IO instead of
// Channels. Never on the product path; started by bench/socketio_stack.py.
//
// One process per port (the bench starts several behind nginx), rooms are
// Socket.IO rooms, and a client's message goes to its whole room with
// io.to(room).emit(): the equivalent of our group_send, fanned out across
// processes by @socket.io/redis-adapter (Redis pub/sub), the documented setup.
// It does not persist anything.
//
// Protocol (Engine.IO v4 / Socket.IO v5, websocket transport only):
//   connect  /socket.io/?EIO=4&transport=websocket&room=<room>
//   server -> client, first event: ["welcome", {"worker": "<host:pid>", "room": ...}]
//   client -> server: ["message", {"message": "<text>"}]
//   server -> room:   ["message", {"room": ..., "message": "<text>"}]
"use strict";

const http = require("http");
const os = require("os");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const PORT = Number(process.env.PORT || 0);
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const WORKER = `${os.hostname()}:${process.pid}`;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

async function main() {
  if (!PORT) throw new Error("PORT is required");
  const pubClient = createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  pubClient.on("error", (err) => console.error("redis pub:", err.message));
  subClient.on("error", (err) => console.error("redis sub:", err.message));
  await Promise.all([pubClient.connect(), subClient.connect()]);

  // Engine.IO hands every request outside /socket.io/ to this listener.
  const httpServer = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.end("ok\n");
    } else {
      res.writeHead(404).end();
    }
  });
  const io = new Server(httpServer, {
    transports: ["websocket"], // clients connect with websocket only: no sticky sessions needed
    serveClient: false,
    adapter: createAdapter(pubClient, subClient),
  });

  io.on("connection", (socket) => {
    const room = socket.handshake.query.room;
    if (typeof room !== "string" || !ROOM_RE.test(room)) {
      socket.disconnect(true);
      return;
    }
    socket.join(room);
    socket.emit("welcome", { worker: WORKER, room });
    socket.on("message", (msg) => {
      if (!msg || typeof msg.message !== "string") return;
      io.to(room).emit("message", { room, message: msg.message });
    });
  });

  httpServer.listen(PORT, "127.0.0.1", () => console.log(`socketio peer ${WORKER} on ${PORT}`));

  const stop = () => {
    io.close(() => {
      Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
    });
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
