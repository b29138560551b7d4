"""The APIs existing clients already speak (docs/api.md): OpenAI's audio endpoints and Realtime transcription socket,
Deepgram's live socket. Each adapts its wire format to the server's connections and engine; common.py holds what
the sockets share (turns, handshake refusals, G.711 audio)."""
