"""`python -m wsworker [daphne args] project.asgi:application`: run one WebSocket worker.

Takes daphne's command line unchanged (services/bin/ws passes the endpoint,
ping and size limits). The event loop is chosen before daphne is imported.
"""
from wsworker import eventloop

eventloop.choose()

from wsworker.server import WorkerCommandLineInterface  # noqa: E402  (after the loop policy)

WorkerCommandLineInterface.entrypoint()
