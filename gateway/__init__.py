"""The edge: Starlette app, HTTP routes, WebSocket sessions, fanout hub, WebRTC."""
