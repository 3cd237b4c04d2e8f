"""Room delivery: how one stored message reaches every socket of its room.

- writer: group commit. The sender's socket hands its text over; the Writer
  stores every waiting message in one statement, acks the senders, publishes.
- store: the only SQL that writes or reads chat history (dense per-room ids).
- fanout: one Room per room per worker, one Redis subscription each; id order,
  gap fill from Postgres, history cache, one write per socket per run.
"""
