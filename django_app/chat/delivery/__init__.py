"""Room delivery: how one stored message reaches every socket of its room.

In the order a message takes:

- writer: group commit. A sender's socket hands its text over; the worker's
  Writer stores every waiting message, of every room, in one statement, acks
  the senders and hands each message to this worker's own sockets.
- store: the only SQL that writes or reads chat history (dense per-room ids);
  db: the Writer's own async connection for that statement.
- publisher (+ redislayer): then publishes, in order, in one Redis command
  per batch, bounded in time: a slow Redis never holds up the Writer.
- fanout: one Room per room per worker, one Redis subscription each; id
  order, gap fill from Postgres, history cache, one write per socket per run.
- quiet: once per interval, one query checks every room that went quiet, so a
  lost publish of a room's last message is still delivered.
"""
