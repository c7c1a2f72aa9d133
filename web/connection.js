// The WebSocket and its reconnect policy (wire protocol: docs/protocol.md).
//
// The policy is keyed on the close code, not the error code ("busy" is also a per-frame error):
// a policy refusal (1008: origin, token) does not reconnect by itself and waits for the user; every
// other close backs off with jitter: 1 s, 4 s, then one attempt per 10-12 s. The backoff starts
// again only once a stream was really served (hello received and a frame answered), not on every
// open: a full server accepts the socket before it refuses it.
import { withToken } from "./ui.js";

export const CLOSE = { GOING_AWAY: 1001, POLICY: 1008, TOO_LARGE: 1009, TRY_AGAIN_LATER: 1013, STALLED: 4000 };
const RETRY_MS = [1000, 4000]; // after the first and second failures; then RETRY_SLOW_MS
const RETRY_SLOW_MS = 10000;
const JITTER = 0.2;

export function retryDelayMs(failures) {
  const base = failures <= RETRY_MS.length ? RETRY_MS[failures - 1] : RETRY_SLOW_MS;
  return Math.round(base * (1 + JITTER * Math.random()));
}

// What the user reads when a socket closes: the server's own message where it sent one.
export function closeReason(code, refusal, info) {
  if (refusal) return refusal.message.charAt(0).toUpperCase() + refusal.message.slice(1);
  switch (code) {
    case CLOSE.GOING_AWAY: return "The server is restarting or shutting down";
    case CLOSE.TOO_LARGE: return `A frame was larger than the server accepts (${info.maxMessageBytes ?? "its limit of"} bytes): pick a smaller capture size`;
    case CLOSE.POLICY: return "The server refused this page";
    case CLOSE.TRY_AGAIN_LATER: return "The server is busy";
    case CLOSE.STALLED: return "The server stopped answering this stream";
    default: return "Connection to the server lost";
  }
}

export class Connection {
  // handlers: onOpen(), onText(message), onBinary(buffer), onClosed({text, retryMs|null})
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.failures = 0;
    this.served = false; // hello received and a frame answered on this socket
    this.hello = null;
    this.refusal = null; // an error without seq before the close: the server's reason
    this.retryTimer = null;
    this.attempts = 0; // sockets opened by this page (a test reads it)
  }

  get open() { return this.ws?.readyState === WebSocket.OPEN && this.hello !== null; }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.ws) { // never two sockets: an old one is let go quietly
      this.ws.onclose = null;
      this.ws.onmessage = null;
      this.ws.close();
    }
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${location.pathname.replace(/[^/]*$/, "")}ws`;
    const ws = new WebSocket(withToken(url));
    this.attempts += 1;
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.hello = null;
    this.refusal = null;
    this.served = false;
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return this.handlers.onBinary(event.data);
      const message = JSON.parse(event.data);
      if (message.type === "hello") {
        this.hello = message;
        this.lastMaxMessageBytes = message.max_message_bytes;
        this.handlers.onOpen(message);
      } else if (message.type === "error" && message.seq === undefined && !this.hello) {
        this.refusal = message; // refused before the stream began (busy, origin, token, draining)
      } else {
        this.handlers.onText(message);
      }
    };
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  // a frame was answered: this socket really streams, so the next failure starts from scratch
  markServed() {
    this.served = true;
    this.failures = 0;
  }

  send(data) {
    if (this.open) this.ws.send(data);
    return this.open;
  }

  // the page gives up on a socket that stopped answering; the close handler reconnects
  abandon() {
    if (this.ws) this.closed(this.ws, CLOSE.STALLED);
  }

  closed(ws, code) {
    if (ws !== this.ws) return; // an abandoned socket's late close
    ws.onclose = null;
    ws.onmessage = null;
    if (ws.readyState <= WebSocket.OPEN) ws.close();
    this.ws = null;
    this.hello = null;
    const text = closeReason(code, this.refusal, { maxMessageBytes: this.lastMaxMessageBytes });
    if (code === CLOSE.POLICY) {
      this.handlers.onClosed({ text, retryMs: null });
      return;
    }
    this.failures += 1;
    const retryMs = retryDelayMs(this.failures);
    this.retryTimer = setTimeout(() => this.connect(), retryMs);
    this.handlers.onClosed({ text, retryMs });
  }
}
