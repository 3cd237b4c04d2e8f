"""Small Python clients for the chat's WebSocket protocol (docs/architecture.md).

The tests, the fault suite, the soak and the bench all speak to the stack through
`clients.chatclient.ChatClient`, so reconnect and resume behave the same everywhere.
"""
