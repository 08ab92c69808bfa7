"""The OpenAI Realtime API (GA shape) over WebSocket at ``/v1/realtime``, driven by the graph.

Any Realtime client (the ``openai`` SDK's ``client.realtime.connect``, the Agents SDK's
``RealtimeRunner``, pipecat's and LiveKit's OpenAI Realtime services) holds a voice
conversation with the same graph the browser talks to at ``/ws``.

- :mod:`~flowvoice.realtime_api.events`: the server events, as plain dicts.
- :mod:`~flowvoice.realtime_api.client_events`: parsing and checking what the client sends.
- :mod:`~flowvoice.realtime_api.config`: the session configuration and what it sets in the
  conversation (instructions, turn detection, push-to-talk).
- :mod:`~flowvoice.realtime_api.driver`: the translation between the session's events and the
  protocol's items and responses.
- :mod:`~flowvoice.realtime_api.transport`: the connection (base64 PCM16 at 24 kHz, JSON).
"""
