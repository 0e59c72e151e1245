/**
 * The browser client of the signaling server: a dependency-free ES module.
 *
 * It speaks the JSON encoding of `proto/PROTOCOL.md` over WebTransport (one
 * bidirectional stream per channel, frames of a 4-byte big-endian length and
 * UTF-8 JSON) and falls back to a secure WebSocket (one text message per frame,
 * the channel in a `ch` field). The token is sent in `hello`, never in a URL.
 * Lost connections are re-established with backoff: the session is resumed if
 * the server still holds it, else a new one is opened and the rooms rejoined.
 *
 * @example
 * import { connect, SignalingError } from "/signaling.js";
 *
 * const client = await connect("https://localhost:8443", { token });
 * client.addEventListener("reconnected", (e) =>
 *   console.log(e.detail.resumed ? "resumed" : "new session", "over", e.detail.transport));
 * client.addEventListener("closed", (e) => console.log("gone:", e.detail.code));
 *
 * try {
 *   const room = await client.join("lobby");
 *   room.addEventListener("peer-joined", (e) => call(e.detail.peerId));
 *   room.addEventListener("signal", (e) => handle(e.detail.from, e.detail.signal));
 *   room.signal(peerId, { kind: "offer", sdp: offer.sdp });
 *   pc.onicecandidate = (e) =>
 *     room.signal(peerId, e.candidate ? { kind: "candidate", ...e.candidate.toJSON() } : { kind: "candidate", candidate: "" });
 *   await room.leave();
 * } catch (err) {
 *   if (err instanceof SignalingError && err.code === "room_full") alert("The room is full");
 * }
 * client.close();
 *
 * Besides the protocol's error codes (PROTOCOL.md section 10), a SignalingError
 * or a "closed" event may carry these codes of the client itself:
 * `connection_failed` (no session could be opened: the server did not answer,
 * or refused the connection before any message, which is what a browser sees
 * of a page origin the server does not allow), `connection_lost` (the
 * connection dropped while a request was pending), `not_connected` (a send
 * while reconnecting), `timeout`, `closed` (the client was closed), and, in an
 * "error" event only, `refresh_failed` (`options.refreshToken` threw).
 *
 * Token refresh: the server says `token_expiring` on the control channel a
 * while (its `token_refresh_notice_secs`, 60 s by default) before the session's
 * token expires. With `options.refreshToken` the client asks it for a fresh
 * token and hands that to the server in-band (`refresh`): the session, its
 * rooms and its peer id carry on, and "tokenrefreshed" says so (a failure is
 * an "error" event with its code: `wrong_user`, `auth_failed`,
 * `token_expired`, `refresh_failed`, ...). Without the hook the application
 * gets "tokenexpiring" and may call `client.refresh(token)` itself; otherwise
 * the session ends with `token_expired` when the token expires.
 *
 * @example
 * const client = await connect(serverUrl, {
 *   token,
 *   refreshToken: async () => (await fetch("/my-token", { method: "POST" })).text(),
 * });
 * client.addEventListener("tokenrefreshed", (e) => console.log("token good until", new Date(e.detail.expiresAt)));
 * client.addEventListener("error", (e) => console.warn(e.detail.code, e.detail.message));
 *
 * Session resume: a connection that is lost (it broke, or a ping went a whole
 * interval without its pong) is not closed: the server holds its session for a
 * while (its `resume_grace_secs`, 30 s by default) and the other members of its
 * rooms notice nothing. The client reconnects (WebTransport first in "auto"
 * mode, so a page whose UDP is blocked now comes back over WSS) and asks for the
 * session back with the resume token of its last `welcome`. If the server still
 * holds it, "reconnected" says `resumed: true`: the same `sessionId` and
 * `peerId`, the same rooms with the same members (no "peer-left" or
 * "peer-joined"), the events the rooms missed delivered in order, once, and the
 * signals and broadcasts the server did not get sent again. Otherwise
 * (`resumed: false`) it is a new session with a new peer id: the other members
 * saw the old one leave, the rooms were joined afresh, and unacknowledged
 * signals and broadcasts were dropped. A goodbye (the server ended the session)
 * or `close()` ends a session for good: no resume follows.
 *
 * @example
 * client.addEventListener("reconnected", (e) => {
 *   if (!e.detail.resumed) renegotiateEverything(); // new peer id: the others saw us leave
 *   else for (const name of e.detail.restartedRooms) resync(client.rooms.get(name)); // events were lost
 * });
 *
 * ICE servers: every `welcome` carries the STUN and TURN servers the page should
 * use, TURN credentials minted for this session by the server (they expire; the
 * shared TURN secret never reaches the page). `client.iceServers` is ready for
 * `new RTCPeerConnection({ iceServers: client.iceServers })`. Before the
 * credentials expire the client asks for fresh ones by itself and emits
 * "iceservers"; pass them to `pc.setConfiguration()` so an ICE restart can use
 * them. `client.refreshIceServers()` asks at once.
 *
 * @example
 * const pc = new RTCPeerConnection({ iceServers: client.iceServers });
 * client.addEventListener("iceservers", (e) => pc.setConfiguration({ ...pc.getConfiguration(), iceServers: e.detail.iceServers }));
 *
 * @module signaling
 */

const PROTOCOL_VERSION = 1;
const HELLO_ID = 1;
const OPEN_TIMEOUT_MS = 10_000; // for the WSS handshake and for hello -> welcome: the server's defaults
const DEFAULT_WEBTRANSPORT_PORT = 4433;
// A join or leave the server dropped unanswered (e.g. over budget: such errors come without an id).
const REQUEST_TIMEOUT_MS = 10_000;
// A session must stay up this long before the reconnect backoff starts again from the beginning.
const STABLE_SESSION_MS = 30_000;
// How long a WebTransport control stream's end waits for the session's close reason (its code).
const CLOSE_REASON_WAIT_MS = 500;
const HARD_MAX_FRAME = 1 << 20; // 1 MiB: no frame may be longer, in either direction
const PEER_ID = /^[0-9a-f]{16}$/;
// After a successful in-band refresh, the next one waits at least this long (or until half of
// the remaining life of the token): a server whose notice is longer than the tokens the
// application hands out would otherwise get a refresh loop.
const MIN_REFRESH_INTERVAL_MS = 30_000;
/**
 * Session ends and refusals after which the client does not reconnect: retrying with the same
 * token cannot succeed (`auth_*`, `token_expired`, `unsupported_version`), the server closed the
 * session for breaking its rules (`policy_violation`), blocks this address for a while
 * (`ip_blocked`: retrying would only extend the block), was switched off by its operator
 * (`service_disabled`), or does not take pages of this origin (`origin_not_allowed`).
 */
const FATAL_CODES = new Set([
  "auth_required",
  "auth_failed",
  "token_expired",
  "unsupported_version",
  "policy_violation",
  "ip_blocked",
  "service_disabled",
  "origin_not_allowed",
]);
/**
 * The server's refusals of a resuming `hello`: the session cannot be had back (it ended, its hold
 * ran out, the token was used, or it is another user's), but the connection stays open for a
 * plain `hello`, which opens a new session.
 */
const RESUME_REFUSALS = new Set(["resume_expired", "resume_invalid", "resume_used", "resume_elsewhere", "wrong_user"]);
/** A room's events between two `received` acknowledgements (also sent on every ping). */
const RECEIVED_EVERY = 16;
/** At most this many of a room's signals and broadcasts wait for the server's `ack` to be resent after a resume. */
const MAX_UNACKED = 256;
/** The messages of a room's channel that count as its events (numbered for a resume). */
const ROOM_EVENTS = new Set(["signal", "broadcast", "peer_joined", "peer_left"]);
/** Errors that are the server's in-band refusal of a session (no fallback to WSS). */
const refusals = new WeakSet();
/** Guards the constructors that only this module may call. */
const INTERNAL = Symbol("internal");
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * @typedef {object} ConnectOptions
 * @property {string} token The JWT, sent in `hello` (never in a URL, never logged).
 * @property {"auto"|"webtransport"|"websocket"} [transport] Default "auto": WebTransport, else WSS.
 * @property {string} [webTransportUrl] Default `https://<host>:<webtransport_port>/?encoding=json`.
 *   It must select the JSON encoding (the default).
 * @property {string} [webSocketUrl] Default `wss://<host>:<port of serverUrl>/ws`.
 * @property {CertificateHash[]} [certificateHashes] Default: from `<serverUrl>/cert-hashes` if self-signed.
 * @property {number} [webTransportTimeoutMs] Default 3000: a slower WebTransport handshake falls back to WSS.
 * @property {boolean} [reconnect] Default true.
 * @property {number} [maxBackoffMs] Default 10000: the ceiling of the reconnect delay (250 ms doubling, jittered).
 * @property {() => string|Promise<string>} [refreshToken] Gives a fresh token for the same user
 *   (the same `sub`). Called when the server says `token_expiring`, to refresh the session's token
 *   in-band (then "tokenrefreshed", or an "error" event), and before reconnecting after a
 *   `token_expired` goodbye. Without it, "tokenexpiring" tells the application, and
 *   `token_expired` closes the client.
 */
/** @typedef {{algorithm: "sha-256", value: BufferSource}} CertificateHash */
/**
 * @typedef {{kind: "offer", sdp: string}
 *   | {kind: "answer", sdp: string}
 *   | {kind: "candidate", candidate: string, sdpMid?: string|null, sdpMLineIndex?: number|null, usernameFragment?: string|null}
 *   | {kind: "custom", data: string}} Signal
 * An empty `candidate` means the end of candidates.
 */
/** @typedef {{peerId: string, userId: string}} Member */
/**
 * The session's limits as `welcome` announces them (snake_case, as on the wire; see PROTOCOL.md section 9).
 * @typedef {{max_frame_bytes: number, messages_per_sec: number, message_burst: number, bytes_per_sec: number,
 *   byte_burst: number, max_rooms: number, max_room_members: number, idle_timeout_ms: number}} SessionLimits
 */

/** An error of the signaling protocol; `code` is the protocol's error code (or one of the client's own). */
export class SignalingError extends Error {
  /** @param {string} code @param {string} [message] */
  constructor(code, message = code) {
    super(message);
    this.name = "SignalingError";
    /** @type {string} */
    this.code = code;
  }
}

// ---------------------------------------------------------------- helpers

/** @param {EventTarget} target @param {string} type @param {object} detail */
function emit(target, type, detail) {
  target.dispatchEvent(new CustomEvent(type, { detail }));
}

/** An error for the server's refusal of a session, marked so that it is not retried elsewhere. */
function refusal(code, message) {
  const err = new SignalingError(code, message);
  refusals.add(err);
  return err;
}

/** @returns {object|null} the JSON object in `text`, or null */
function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** A close reason that names an error code (both transports put the goodbye's code there). */
function codeOfReason(reason) {
  return typeof reason === "string" && /^[a-z][a-z_]*$/.test(reason) ? reason : null;
}

/** @template T @param {Promise<T>} promise @param {number} ms @param {string} what @returns {Promise<T>} */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new SignalingError("timeout", `${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Exponential backoff from 250 ms up to `maxMs`, with "equal jitter" (half fixed, half random). */
function backoff(attempt, maxMs) {
  const ceiling = Math.min(maxMs, 250 * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

/** The `exp` claim of a JWT, in milliseconds since the epoch; null if it cannot be read. */
function tokenExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** @param {string} hex @returns {Uint8Array|null} */
function hexToBytes(hex) {
  if (typeof hex !== "string" || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) return null;
  return Uint8Array.from(hex.match(/../g), (byte) => parseInt(byte, 16));
}

/** The wire form of a signal: only the protocol's fields, absent optional ones omitted. */
function wireSignal(signal) {
  const text = (value, field) => {
    if (typeof value === "string") return value;
    throw new TypeError(`signal: ${field} must be a string`);
  };
  const { kind, sdpMid, sdpMLineIndex, usernameFragment } = signal ?? {};
  if (kind === "offer" || kind === "answer") return { kind, sdp: text(signal.sdp, "sdp") };
  if (kind === "custom") return { kind, data: text(signal.data, "data") };
  if (kind !== "candidate") throw new TypeError(`signal: unknown kind ${JSON.stringify(kind)}`);
  const candidate = text(signal.candidate ?? "", "candidate"); // "" is the end of candidates
  const optional = (value, field, valid) => {
    if (value === null || value === undefined) return undefined;
    if (valid(value)) return value;
    throw new TypeError(`signal: ${field} has the wrong type`);
  };
  return {
    kind,
    candidate,
    sdpMid: optional(sdpMid, "sdpMid", (v) => typeof v === "string"),
    sdpMLineIndex: optional(sdpMLineIndex, "sdpMLineIndex", (v) => Number.isInteger(v) && v >= 0 && v <= 0xffff),
    usernameFragment: optional(usernameFragment, "usernameFragment", (v) => typeof v === "string"),
  };
}

// ------------------------------------------------------------------ links

/**
 * One connection (WebTransport or WSS) with its channels. A channel is
 * `{id, room, request}`: `room` routes its messages, `request` is the pending
 * join or leave. Messages that arrive while nobody listens are kept in order.
 */
class Link {
  /** @param {"webtransport"|"websocket"} transport */
  constructor(transport) {
    this.transport = transport;
    this.control = { id: 0, room: null, request: null };
    /** @type {Map<number, any>} room channels by id */
    this.channels = new Map();
    this.nextChannelId = 1;
    this.maxFrameBytes = HARD_MAX_FRAME;
    this.ended = false;
    /** Whether close() closed the connection itself. */
    this.shut = false;
    this.backlog = [];
    this.lostInfo = null;
    this.onMessage = null;
    this.onLost = null;
  }

  /** Sets (or, with nulls, pauses) the listeners; replays what arrived meanwhile. */
  listen(onMessage, onLost) {
    this.onMessage = onMessage;
    this.onLost = onLost;
    while (this.onMessage && this.backlog.length) this.dispatch(...this.backlog.shift());
    if (this.onLost && this.lostInfo && !this.backlog.length) this.onLost(this.lostInfo);
  }

  deliver(channel, msg) {
    if (this.ended) return;
    if (this.onMessage) this.dispatch(channel, msg);
    else this.backlog.push([channel, msg]);
  }

  /** Hands a message on; a failure to handle one (a malformed message) must not stop the reading. */
  dispatch(channel, msg) {
    try {
      this.onMessage(channel, msg);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /** A frame that is not JSON: reported like the server reports ours. */
  badFrame() {
    this.deliver(this.control, { type: "error", code: "bad_frame", message: "the server sent a frame that is not JSON" });
  }

  openChannel() {
    const channel = { id: this.nextChannelId++, room: null, request: null };
    this.channels.set(channel.id, channel);
    return channel;
  }

  /** Sends a message; throws SignalingError `frame_too_large` if it exceeds the session's limit. */
  send(channel, msg) {
    if (!this.ended) this.write(channel, msg);
  }

  checkSize(bytes) {
    if (bytes <= this.maxFrameBytes) return;
    throw new SignalingError("frame_too_large", `a frame of ${bytes} bytes exceeds max_frame_bytes (${this.maxFrameBytes})`);
  }

  /**
   * The transport dropped (or stopped answering): ends the link and tells the listener (once).
   * What may still be open of the connection is not closed here: a clean close would end the
   * session on the server, which holds a lost one for a resume. The client closes the old
   * connection once a new session is up (see `abandon`).
   */
  lost(info) {
    if (this.ended) return;
    this.end("connection_lost");
    this.lostInfo = info;
    if (this.onLost && !this.backlog.length) this.onLost(info);
  }

  /**
   * Stops using the link without closing its connection: nothing more is sent or handed on
   * (a `session_resumed` goodbye that the server sends it when the session is resumed elsewhere
   * is ignored), and pending requests reject with `connection_lost`. `close()` it later.
   */
  abandon() {
    if (this.ended) return;
    this.backlog.length = 0;
    this.end("connection_lost");
  }

  /** Closes the link on our side (also one that was lost or abandoned); pending requests reject with `code`. */
  close(code = "connection_lost") {
    this.backlog.length = 0;
    if (!this.ended) this.end(code);
    if (this.shut) return;
    this.shut = true;
    this.shutdown();
  }

  end(code) {
    this.ended = true;
    for (const channel of [this.control, ...this.channels.values()]) {
      const request = channel.request;
      channel.request = null;
      request?.reject(new SignalingError(code, code === "closed" ? "the client was closed" : "the connection was lost"));
    }
  }
}

/** WSS: text messages of JSON with the channel in `ch` (omitted for 0). */
class WebSocketLink extends Link {
  /** @param {WebSocket} ws */
  constructor(ws) {
    super("websocket");
    this.ws = ws;
    ws.onmessage = (event) => this.onFrame(event.data);
    ws.onclose = (event) => this.lost({ code: codeOfReason(event.reason), reason: event.reason || `WebSocket closed (${event.code})` });
  }

  onFrame(data) {
    if (typeof data !== "string") return; // binary messages are bincode, which this client never uses
    const parsed = parseObject(data);
    if (!parsed) return this.badFrame();
    const { ch = 0, ...msg } = parsed;
    const channel = ch === 0 ? this.control : this.channels.get(ch);
    if (channel) this.deliver(channel, msg);
  }

  write(channel, msg) {
    const text = JSON.stringify(channel.id === 0 ? msg : { ch: channel.id, ...msg });
    this.checkSize(utf8.encode(text).length); // the limit counts the whole enveloped message
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** After `left` or a refused `join` the id is free; this client never reuses ids anyway. */
  finish(channel) {
    this.channels.delete(channel.id);
  }

  shutdown() {
    this.ws.close(1000);
  }
}

/** Opens a WebSocket; resolves once it is open. */
function openWebSocket(url) {
  const where = url.split("?")[0];
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      return reject(new SignalingError("connection_failed", `WebSocket ${where}: ${err.message}`));
    }
    const timer = setTimeout(() => {
      ws.close();
      reject(new SignalingError("timeout", `WebSocket ${where} did not open in time`));
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(timer);
      resolve(new WebSocketLink(ws));
    };
    ws.onclose = (event) => {
      clearTimeout(timer);
      // A refused upgrade shows only as code 1006: the browser hides the status and body.
      reject(new SignalingError("connection_failed", `WebSocket ${where} failed (${event.code})`));
    };
  });
}

/** Splits a byte stream into frames: a 4-byte big-endian length, then that many bytes. */
class FrameReader {
  buffer = new Uint8Array(0);

  /** @param {Uint8Array} chunk @returns {Uint8Array[]} the frames completed by this chunk */
  push(chunk) {
    if (this.buffer.length === 0) {
      this.buffer = chunk;
    } else {
      const joined = new Uint8Array(this.buffer.length + chunk.length);
      joined.set(this.buffer);
      joined.set(chunk, this.buffer.length);
      this.buffer = joined;
    }
    const frames = [];
    while (this.buffer.length >= 4) {
      const length = new DataView(this.buffer.buffer, this.buffer.byteOffset, 4).getUint32(0);
      if (length > HARD_MAX_FRAME) throw new SignalingError("frame_too_large", `a frame of ${length} bytes`);
      if (this.buffer.length < 4 + length) break;
      frames.push(this.buffer.subarray(4, 4 + length));
      this.buffer = this.buffer.subarray(4 + length);
    }
    return frames;
  }
}

/** WebTransport: the first bidirectional stream is the control channel, then one stream per room. */
class WebTransportLink extends Link {
  /** @param {WebTransport} wt */
  constructor(wt) {
    super("webtransport");
    this.wt = wt;
    wt.closed.then(
      (info) => this.lost({ code: codeOfReason(info?.reason), reason: info?.reason || "WebTransport session closed" }),
      (err) => this.lost({ code: null, reason: `WebTransport session lost: ${err?.message ?? err}` }),
    );
  }

  /** Opens the control stream, which must be the first stream. */
  start() {
    this.openStream(this.control);
    return this.control.writer;
  }

  openChannel() {
    const channel = super.openChannel();
    this.openStream(channel);
    return channel;
  }

  openStream(channel) {
    channel.writer = this.wt.createBidirectionalStream().then((stream) => {
      this.readFrames(channel, stream.readable);
      return stream.writable.getWriter();
    });
    channel.writer.catch(() => {}); // a stream that cannot open means the session is gone: `closed` says so
  }

  async readFrames(channel, readable) {
    const reader = readable.getReader();
    const frames = new FrameReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const frame of frames.push(value)) this.onFrame(channel, frame);
      }
    } catch {
      // the stream was reset, the session closed, or a frame was longer than any frame may be
      reader.cancel().catch(() => {});
    }
    // The server finishes a room stream after `left`; the control stream only ends with the session.
    if (channel !== this.control) return;
    // When the session closes, the browser drops what it received but had not handed on yet (a
    // goodbye, say): the close's reason names the code, so it is given a moment to arrive first.
    await Promise.race([this.wt.closed.catch(() => {}), new Promise((done) => setTimeout(done, CLOSE_REASON_WAIT_MS))]);
    this.lost({ code: null, reason: "the control stream ended" });
  }

  onFrame(channel, bytes) {
    let msg = null;
    try {
      msg = parseObject(utf8Decoder.decode(bytes));
    } catch {
      // not UTF-8
    }
    if (msg) this.deliver(channel, msg);
    else this.badFrame();
  }

  write(channel, msg) {
    const body = utf8.encode(JSON.stringify(msg));
    this.checkSize(body.length); // the limit counts the message without its length prefix
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, 4);
    channel.writer.then((writer) => writer.write(frame)).catch(() => {});
  }

  /** Finishes our side of a room stream (after `left` or a refused `join`), freeing it. */
  finish(channel) {
    this.channels.delete(channel.id);
    channel.writer.then((writer) => writer.close()).catch(() => {});
  }

  shutdown() {
    closeQuietly(this.wt);
  }
}

/** The WebTransport URL and the certificate hashes to pin, from the options or `/cert-hashes`. */
async function webTransportTarget(cfg) {
  let info = null;
  if (!cfg.webTransportUrl || !cfg.certificateHashes) {
    try {
      const signal = AbortSignal.timeout?.(cfg.webTransportTimeoutMs);
      const response = await fetch(`${cfg.serverUrl}/cert-hashes`, { cache: "no-store", signal });
      if (response.ok) info = await response.json();
    } catch {
      // Unreachable: go on without hashes; WebTransport then probably fails and WSS takes over.
    }
  }
  const port = info?.webtransport_port ?? DEFAULT_WEBTRANSPORT_PORT;
  const url = cfg.webTransportUrl ?? `https://${cfg.origin.hostname}:${port}/?encoding=json`;
  let hashes = cfg.certificateHashes ?? [];
  if (!cfg.certificateHashes && info?.self_signed && Array.isArray(info.hashes)) {
    // Pin every hash listed: during a rotation the list holds the served certificate and its successor.
    hashes = info.hashes.map((h) => ({ algorithm: h.algorithm, value: hexToBytes(h.value) })).filter((h) => h.value);
  }
  return { url, hashes };
}

/** Closes a WebTransport session that may already be closed (or have failed to open). */
function closeQuietly(wt) {
  try {
    wt?.close({ closeCode: 0, reason: "" });
  } catch {
    // already closed
  }
}

/** Opens a WebTransport session and its control stream, within `webTransportTimeoutMs`. */
async function openWebTransport(cfg) {
  if (typeof globalThis.WebTransport !== "function") {
    throw new SignalingError("connection_failed", "this browser has no WebTransport");
  }
  const { url, hashes } = await webTransportTarget(cfg);
  let wt;
  try {
    wt = new WebTransport(url, hashes.length ? { serverCertificateHashes: hashes } : {});
    wt.closed.catch(() => {});
    const link = new WebTransportLink(wt);
    await withTimeout(wt.ready.then(() => link.start()), cfg.webTransportTimeoutMs, "the WebTransport handshake");
    return link;
  } catch (err) {
    closeQuietly(wt);
    throw new SignalingError(err?.code === "timeout" ? "timeout" : "connection_failed", `WebTransport: ${err?.message ?? err}`);
  }
}

/**
 * Says `hello` and waits for `welcome`; rejects on the server's refusal, a drop or a timeout.
 * With `resume` (the resume token of a lost session) it asks for that session back first; if the
 * server refuses (`resume_expired`, ...) it says a plain `hello` on the same connection.
 * @returns {Promise<{welcome: object, resumeError: string|null}>} `resumeError`: the code of a
 *   refused resume
 */
function handshake(link, token, resume = null) {
  return new Promise((resolve, reject) => {
    let resumeError = null;
    const fail = (err) => {
      clearTimeout(timer);
      link.close();
      reject(err);
    };
    const timer = setTimeout(() => fail(new SignalingError("timeout", "no welcome from the server")), OPEN_TIMEOUT_MS);
    const onMessage = (channel, msg) => {
      if (channel !== link.control) return;
      if (msg.type === "welcome") {
        clearTimeout(timer);
        link.listen(null, null); // hold what follows until the client listens
        resolve({ welcome: msg, resumeError });
      } else if (msg.type === "error" && msg.id === HELLO_ID && resume && RESUME_REFUSALS.has(msg.code)) {
        // The session is gone (or not ours to take): the connection waits for a plain hello.
        resumeError = msg.code;
        resume = null;
        link.send(link.control, { type: "hello", id: HELLO_ID, version: PROTOCOL_VERSION, token });
      } else if (msg.type === "goodbye" || (msg.type === "error" && msg.id === HELLO_ID)) {
        // A failed hello: `error` (with the hello's id) then `goodbye`, same code. Errors without
        // an id (bad_frame, rate_limited, ...) are not fatal: the server keeps waiting.
        fail(refusal(msg.code, msg.message));
      }
    };
    const onLost = (info) => fail(info.code ? refusal(info.code, info.reason) : new SignalingError("connection_failed", info.reason));
    link.listen(onMessage, onLost);
    const hello = { type: "hello", id: HELLO_ID, version: PROTOCOL_VERSION, token };
    link.send(link.control, resume ? { ...hello, resume } : hello);
  });
}

/**
 * The error for a session that could not be opened because no transport opened, with no word
 * from the server. A browser cannot tell why: the status of a refused WebSocket upgrade or
 * WebTransport CONNECT (403 `origin_not_allowed`, 429, 503 `service_disabled`, ...) is hidden
 * from pages, so the message lists the likely causes. The code stays `connection_failed`.
 * @param {SignalingError} last the last transport's error @param {SignalingError[]} all
 */
function notReached(last, all) {
  if (last.code !== "connection_failed") return last;
  const tried = all.map((err) => err.message.replace(/\.+$/, "")).join("; ");
  return new SignalingError(
    "connection_failed",
    `${tried}. The server sent nothing: check the server's allowed_origins (it refuses pages of other ` +
      `origins before any message), that it is reachable, and its certificate`,
  );
}

/**
 * Opens a link (WebTransport first in "auto" mode) and has it welcomed; with `resume`, asks for
 * that lost session back (see `handshake`).
 * @returns {Promise<{link: Link, welcome: object, resumeError: string|null}>}
 */
async function openSession(cfg, token, resume = null) {
  const tryWebTransport =
    cfg.transport === "webtransport" || (cfg.transport === "auto" && typeof globalThis.WebTransport === "function");
  const unopened = []; // the errors of transports that did not open
  let opened = false; // a transport opened (so the server did not refuse this page's origin)
  if (tryWebTransport) {
    let link = null;
    try {
      link = await openWebTransport(cfg);
    } catch (err) {
      if (cfg.transport === "webtransport") throw notReached(err, [err]);
      unopened.push(err);
    }
    if (link) {
      opened = true;
      try {
        return { link, ...(await handshake(link, token, resume)) };
      } catch (err) {
        // The server was reached and refused the session (e.g. auth_failed): WSS would fare no
        // better; unless only WebTransport is switched off.
        if (cfg.transport === "webtransport" || (refusals.has(err) && err.code !== "service_disabled")) throw err;
      }
    }
  }
  let link;
  try {
    link = await openWebSocket(cfg.webSocketUrl);
  } catch (err) {
    throw opened ? err : notReached(err, [...unopened, err]);
  }
  return { link, ...(await handshake(link, token, resume)) };
}

/** Checks the options and fills in the defaults. The token is kept apart, so it cannot leak with them. */
function normalizeOptions(serverUrl, options) {
  const origin = new URL(serverUrl);
  if (typeof options?.token !== "string" || options.token === "") throw new TypeError("connect: options.token is required");
  const transport = options.transport ?? "auto";
  if (!["auto", "webtransport", "websocket"].includes(transport)) throw new TypeError(`connect: unknown transport "${transport}"`);
  return {
    serverUrl: origin.href.replace(/\/+$/, ""),
    origin,
    transport,
    webTransportUrl: options.webTransportUrl,
    webSocketUrl: options.webSocketUrl ?? `${origin.protocol === "http:" ? "ws:" : "wss:"}//${origin.host}/ws`,
    certificateHashes: options.certificateHashes,
    webTransportTimeoutMs: options.webTransportTimeoutMs ?? 3000,
    reconnect: options.reconnect ?? true,
    maxBackoffMs: options.maxBackoffMs ?? 10_000,
    refreshToken: options.refreshToken,
  };
}

// ----------------------------------------------------------------- public

/**
 * Connects to the signaling server and opens a session.
 * Rejects with a SignalingError: the server's code if it refused the session
 * (`auth_failed`, `token_expired`, `auth_required`, `unsupported_version`, ...),
 * else `connection_failed` or `timeout`. A page whose origin the server does not
 * allow (its `allowed_origins`) is refused before any message, which a browser
 * cannot tell from an unreachable server: that is `connection_failed` too, and
 * its message says to check `allowed_origins`.
 * @param {string} serverUrl The server's HTTPS origin, e.g. "https://localhost:8443".
 * @param {ConnectOptions} options
 * @returns {Promise<SignalingClient>}
 */
export async function connect(serverUrl, options) {
  const cfg = normalizeOptions(serverUrl, options);
  const { link, welcome } = await openSession(cfg, options.token);
  return new SignalingClient(INTERNAL, cfg, options.token, link, welcome);
}

/**
 * A session with the server, re-established after a drop. Get one from `connect()`.
 *
 * Events (CustomEvent, data in `detail`):
 * - "transport" `{transport}`: a session was established (the first one is dispatched
 *   in a later task, so listeners added right after `await connect()` see it);
 * - "reconnecting" `{attempt, delayMs, reason, resuming}`: the next attempt comes in `delayMs`;
 *   `resuming` says whether it asks for the lost session back (see "Session resume" above);
 * - "reconnected" `{transport, rooms, resumed, peerId, previousPeerId, restartedRooms, resumeError}`:
 *   the client is connected again and every room of `rooms` (their names) is joined again.
 *   `resumed: true`: the lost session was resumed: `peerId` is `previousPeerId`, the rooms and
 *   their members are as they were, what they missed was delivered and what the server had not
 *   got was sent again, except in `restartedRooms`, whose missed events the server could not keep:
 *   those were joined afresh (their members refreshed, with "peer-left"/"peer-joined" for
 *   changes). `resumed: false`: a new session (its new peer id is `peerId`; the other members
 *   saw `previousPeerId` leave), every room joined afresh (`restartedRooms` lists them all);
 *   `resumeError` is the server's code if it refused the resume (`resume_expired`,
 *   `resume_used`, ...), null if none was tried (the old session ended with a goodbye);
 * - "error" `{code, message}`: an error on the control channel (e.g. `rate_limited`), or a
 *   failed in-band token refresh (`wrong_user`, `auth_failed`, `token_expired`, `refresh_failed`, ...);
 * - "tokenexpiring" `{expiresInMs, refreshing}`: the session's token expires in `expiresInMs`;
 *   `refreshing` says whether `options.refreshToken` is being asked for a new one. Without the
 *   hook, call `refresh(token)` in time, or the session ends with `token_expired`;
 * - "tokenrefreshed" `{expiresAt}`: the server took a fresh token in-band; the session carries on.
 *   `expiresAt` is the new token's `exp` in milliseconds since the epoch (null if unreadable);
 * - "iceservers" `{iceServers, expiresAt}`: fresh ICE servers (TURN credentials), fetched before
 *   the old ones expired, by `refreshIceServers()`, or with a new session after a reconnect;
 * - "goodbye" `{code, message}`: the server ended the session;
 * - "closed" `{code, reason}`: final, no more reconnects (`code` is `closed` after `close()`).
 *   No reconnect follows a goodbye or refusal with `auth_failed`, `auth_required`,
 *   `unsupported_version`, `policy_violation`, `ip_blocked`, `service_disabled` or
 *   `origin_not_allowed`, nor `token_expired` without `options.refreshToken`.
 */
export class SignalingClient extends EventTarget {
  /** @type {"webtransport"|"websocket"} */ transport;
  /** This session's peer id: 16 lowercase hex digits; kept by a resume, new with a new session. @type {string} */ peerId;
  /** @type {string} */ userId;
  /** Kept by a resume, new with a new session. @type {string} */ sessionId;
  /** @type {SessionLimits} */ limits;
  /** The joined rooms, by name. @type {Map<string, Room>} */ rooms = new Map();
  /** The STUN and TURN servers to give `RTCPeerConnection`, TURN credentials minted for this
   * session; replaced before they expire (see "iceservers"). @type {RTCIceServer[]} */ iceServers = [];
  /** When the TURN credentials of `iceServers` expire, in ms since the epoch; null if none do.
   * @type {number|null} */ iceServersExpireAt = null;

  #cfg;
  #token;
  /** @type {Link|null} */ #link = null;
  #closed = false;
  #reconnecting = false;
  #needToken = false;
  #requestId = HELLO_ID;
  /** Reconnect attempts since the last session that stayed up STABLE_SESSION_MS. */
  #failures = 0;
  #stableTimer = undefined;
  #nonce = 0;
  /** Names of rooms being joined, so that a second join of one name waits for nothing. */
  #joining = new Set();
  /** Whether the last ping was answered. */
  #ponged = true;
  #pingTimer = undefined;
  #wake = null;
  #waiters = [];
  /** When the last in-band refresh succeeded (Date.now()), 0 before any. */
  #lastRefresh = 0;
  #refreshTimer = undefined;
  /** Control requests (refresh, ice_servers) go one at a time: the control channel holds one request. */
  #controlQueue = Promise.resolve();
  #iceTimer = undefined;
  /** The resume token of the newest `welcome`; null once the session cannot be resumed. */
  #resumeToken = null;
  /** Whether the server holds lost sessions (its `welcome` has a resume token): rooms then number
   * their signals and broadcasts for a resend, and acknowledge their events with `received`. */
  #serverHolds = false;
  /** Lost connections, left open (a clean close would end the held session) until a new session is up. */
  #stale = [];
  #everAdopted = false;

  /** @hideconstructor */
  constructor(key, cfg, token, link, welcome) {
    if (key !== INTERNAL) throw new TypeError("use connect() to create a SignalingClient");
    super();
    this.#cfg = cfg;
    this.#token = token;
    this.#adopt(link, welcome);
    setTimeout(() => this.#link === link && emit(this, "transport", { transport: link.transport }), 0);
  }

  /**
   * Joins a room. Waits for the session if the client is reconnecting.
   * @param {string} name
   * @returns {Promise<Room>} rejects with SignalingError (`room_full`, `invalid_room`, `room_forbidden`, ...)
   */
  async join(name) {
    if (this.#closed) throw new SignalingError("closed", "the client is closed");
    if (this.rooms.has(name) || this.#joining.has(name)) {
      throw new SignalingError("already_joined", `already in (or joining) room ${name}`);
    }
    this.#joining.add(name);
    try {
      const room = new Room(INTERNAL, this, name);
      const link = await this.#whenConnected();
      await this.#joinOn(link, room);
      this.rooms.set(name, room);
      return room;
    } finally {
      this.#joining.delete(name);
    }
  }

  /**
   * Gives the session a fresh token for the same user, in-band (`refresh`): the session, its
   * rooms and its peer id carry on, with the new token's expiry. Reconnects use the new token
   * too. With `options.refreshToken` the client does this by itself on "tokenexpiring".
   * Emits "tokenrefreshed" on success.
   * @param {string} token
   * @returns {Promise<void>} rejects with SignalingError: `wrong_user` (a token of another
   *   `sub`), `auth_failed`, `token_expired`, `not_connected` (while reconnecting),
   *   `connection_lost`, `timeout` or `closed`; the session keeps its old token then.
   */
  refresh(token) {
    if (typeof token !== "string" || token === "") {
      return Promise.reject(new TypeError("refresh: token must be a non-empty string"));
    }
    return this.#onControlQueue(() => this.#refreshOn(token));
  }

  /** Runs `task` after the control requests before it (the control channel holds one request). */
  #onControlQueue(task) {
    const run = this.#controlQueue.then(task);
    this.#controlQueue = run.catch(() => {});
    return run;
  }

  /**
   * Asks the server for fresh ICE servers (new TURN credentials) now; the client also does
   * this by itself before they expire. Updates `iceServers` and emits "iceservers".
   * @returns {Promise<RTCIceServer[]>} rejects with SignalingError (`not_connected` while
   *   reconnecting, `rate_limited`, `connection_lost`, `timeout`, `closed`)
   */
  refreshIceServers() {
    return this.#onControlQueue(async () => {
      if (this.#closed) throw new SignalingError("closed", "the client is closed");
      const link = this.#link;
      if (!link) throw new SignalingError("not_connected", "reconnecting; try again later");
      const answer = await this.#request(link, link.control, "ice_servers", (id) => ({ type: "ice_servers", id }));
      if (this.#link === link) this.#setIceServers(link, answer.ice_servers, answer.expires_at, true);
      return this.iceServers;
    });
  }

  /** Takes a list of ICE servers from the server and schedules the next refresh before they expire. */
  #setIceServers(link, servers, expiresAt, announce) {
    this.iceServers = Array.isArray(servers) ? servers : [];
    this.iceServersExpireAt = Number.isFinite(expiresAt) ? expiresAt * 1000 : null;
    clearTimeout(this.#iceTimer);
    if (this.iceServersExpireAt !== null) {
      // At 80 % of the remaining lifetime, at least 10 s from now, at most what setTimeout takes.
      const delayMs = Math.min(0x7fff_ffff, Math.max(10_000, (this.iceServersExpireAt - Date.now()) * 0.8));
      this.#iceTimer = setTimeout(() => {
        if (this.#link !== link) return;
        this.refreshIceServers().catch((err) =>
          emit(this, "error", { code: err?.code ?? "connection_lost", message: `ICE servers refresh: ${err?.message ?? err}` }),
        );
      }, delayMs);
    }
    if (announce) emit(this, "iceservers", { iceServers: this.iceServers, expiresAt: this.iceServersExpireAt });
  }

  async #refreshOn(token) {
    if (this.#closed) throw new SignalingError("closed", "the client is closed");
    const link = this.#link;
    if (!link) throw new SignalingError("not_connected", "reconnecting; try again later");
    await this.#request(link, link.control, "refresh", (id) => ({ type: "refresh", id, token }));
    this.#token = token;
    this.#lastRefresh = Date.now();
    if (this.#link === link) emit(this, "tokenrefreshed", { expiresAt: tokenExpiry(token) });
  }

  /**
   * The server said `token_expiring`: tell the application, and refresh with the hook if there
   * is one. In a later task: the notice may come right after `welcome`, before `connect()` has
   * even resolved, and listeners added right after `await connect()` must hear of it.
   */
  #onTokenExpiring(link, expiresInMs) {
    setTimeout(() => this.#tokenExpiring(link, expiresInMs), 0);
  }

  #tokenExpiring(link, expiresInMs) {
    if (link !== this.#link) return; // that session is gone; a new one gets its own notice
    const hook = this.#cfg.refreshToken;
    emit(this, "tokenexpiring", { expiresInMs, refreshing: Boolean(hook) });
    if (!hook) return;
    const sinceLast = Date.now() - this.#lastRefresh;
    const delayMs =
      sinceLast >= MIN_REFRESH_INTERVAL_MS
        ? 0
        : Math.min(MIN_REFRESH_INTERVAL_MS - sinceLast, Math.floor(expiresInMs / 2));
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => this.#refreshWithHook(link), delayMs);
  }

  async #refreshWithHook(link) {
    if (link !== this.#link) return;
    let token;
    try {
      token = await this.#cfg.refreshToken();
      if (typeof token !== "string" || token === "") throw new TypeError("it gave no token");
    } catch (err) {
      if (link === this.#link) {
        emit(this, "error", { code: "refresh_failed", message: `refreshToken failed: ${err?.message ?? err}` });
      }
      return;
    }
    if (link !== this.#link) return; // a new session is up meanwhile (and got its own notice)
    try {
      await this.refresh(token);
    } catch (err) {
      // A lost session is the reconnect's business.
      if (link === this.#link && err?.code !== "connection_lost" && err?.code !== "closed") {
        emit(this, "error", { code: err?.code ?? "refresh_failed", message: `token refresh: ${err?.message ?? err}` });
      }
    }
  }

  /** Closes for good: no reconnect, and the server ends the session at once (it holds only lost ones). Emits "closed". */
  close() {
    this.#finish("closed", "closed by the application");
  }

  /**
   * @internal Sends a `signal` or `broadcast` on the room's channel, numbered with the channel's
   * next `seq` (the server refuses a message whose `seq` is not above the channel's last).
   */
  _send(room, msg) {
    if (this.#closed) throw new SignalingError("closed", "the client is closed");
    if (this.rooms.get(room.name) !== room) throw new SignalingError("not_in_room", `not in room ${room.name}`);
    if (!this.#link || !room._channel) throw new SignalingError("not_connected", "reconnecting; try again later");
    const out = { ...msg, seq: room._nextSeq() };
    if (this.#serverHolds) {
      // With an id the server says `ack` once it took the message; until then it is kept, to be
      // sent again after a resume if the server's `last_seq` says it never arrived.
      out.id = this.#nextId();
      room._keep(out, MAX_UNACKED);
    }
    try {
      this.#link.send(room._channel, out);
    } catch (err) {
      room._unacked.delete(out.id);
      throw err;
    }
  }

  /**
   * @internal A room handled one of its events: acknowledges them with `received` every
   * RECEIVED_EVERY events (and on every ping), so the server can drop what it kept for a resume.
   */
  _eventHandled(room) {
    if (room._events - room._eventsAcked >= RECEIVED_EVERY) this.#acknowledge(room);
  }

  #acknowledge(room) {
    const link = this.#link;
    if (!this.#serverHolds || !link || !room._channel || room._events <= room._eventsAcked) return;
    try {
      link.send(room._channel, { type: "received", upto: room._events });
      room._eventsAcked = room._events;
    } catch {
      // not sent: the next ping tries again
    }
  }

  /** @internal Leaves a room; resolves on `left` (or at once if there is no session to leave). */
  async _leave(room) {
    if (this.rooms.get(room.name) !== room) return;
    const link = this.#link;
    if (link && room._channel) {
      try {
        await this.#request(link, room._channel, "leave", (id) => ({ type: "leave", id }));
      } catch (err) {
        // A lost session has left its rooms already.
        if (err.code !== "connection_lost" && err.code !== "closed") throw err;
      }
    }
    room._detach(false);
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
  }

  #adopt(link, welcome) {
    this.#link = link;
    clearTimeout(this.#stableTimer);
    this.#stableTimer = setTimeout(() => {
      if (this.#link === link) this.#failures = 0;
    }, STABLE_SESSION_MS);
    this.#requestId = HELLO_ID;
    this.transport = link.transport;
    this.peerId = welcome.peer_id;
    this.userId = welcome.user_id;
    this.sessionId = welcome.session_id;
    this.limits = welcome.limits;
    this.#resumeToken = typeof welcome.resume_token === "string" ? welcome.resume_token : null;
    this.#serverHolds = this.#resumeToken !== null;
    // The first session's list is read from `client.iceServers`; later ones are announced.
    this.#setIceServers(link, welcome.ice_servers, welcome.ice_servers_expire_at, this.#everAdopted);
    this.#everAdopted = true;
    link.maxFrameBytes = Math.min(HARD_MAX_FRAME, welcome.limits?.max_frame_bytes ?? HARD_MAX_FRAME);
    this.#startPing(link);
    for (const waiter of this.#waiters.splice(0)) waiter.resolve();
    link.listen(
      (channel, msg) => this.#onMessage(link, channel, msg),
      (info) => this.#onLost(link, info),
    );
  }

  /** Keeps the session alive: a `ping` every third of the idle timeout. */
  #startPing(link) {
    const every = Math.max(1000, Math.floor((this.limits?.idle_timeout_ms ?? 60_000) / 3));
    clearInterval(this.#pingTimer);
    this.#ponged = true;
    this.#pingTimer = setInterval(() => {
      // A ping a whole interval without its pong: the server is gone (crashed, or
      // the network path died), even if the transport has not noticed yet (QUIC
      // waits for its idle timeout). Treat it as a dropped connection.
      if (!this.#ponged) {
        link.lost({ code: null, reason: "no pong from the server" });
        return;
      }
      this.#ponged = false;
      this.#nonce = (this.#nonce + 1) >>> 0;
      link.send(link.control, { type: "ping", nonce: this.#nonce });
      if (link === this.#link) for (const room of this.rooms.values()) this.#acknowledge(room);
    }, every);
  }

  #nextId() {
    this.#requestId = this.#requestId >= 0xffff_ffff ? HELLO_ID + 1 : this.#requestId + 1;
    return this.#requestId;
  }

  /** Sends a join, leave or refresh with a request id; settles on the matching answer on that channel. */
  #request(link, channel, type, build) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId();
      // A room channel whose request got no answer (or could not be sent) is given up;
      // the control channel stays.
      const giveUp = () => channel !== link.control && link.finish(channel);
      const timer = setTimeout(() => {
        if (channel.request?.id !== id) return;
        channel.request = null;
        giveUp();
        reject(new SignalingError("timeout", `no answer to ${type} within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      const settle = (fn) => (value) => {
        clearTimeout(timer);
        fn(value);
      };
      channel.request = { id, type, resolve: settle(resolve), reject: settle(reject) };
      try {
        link.send(channel, build(id));
      } catch (err) {
        channel.request = null;
        giveUp();
        settle(reject)(err);
      }
    });
  }

  /**
   * Joins `room` on a new channel of `link`. With `resumeAfter` (the room's events received so
   * far), the room of a resumed session is asked back: the answer is `rejoined` (the room
   * carries on; the missed events follow) or, if the server lost some of them, `joined`.
   * @returns {Promise<object>} the answer
   */
  #joinOn(link, room, resumeAfter = null) {
    const channel = link.openChannel();
    channel.room = room;
    channel.resuming = resumeAfter !== null;
    return this.#request(link, channel, "join", (id) =>
      channel.resuming ? { type: "join", id, room: room.name, resume_after: resumeAfter } : { type: "join", id, room: room.name },
    );
  }

  async #whenConnected() {
    while (!this.#link) {
      if (this.#closed) throw new SignalingError("closed", "the client is closed");
      await new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    }
    return this.#link;
  }

  #onMessage(link, channel, msg) {
    if (channel === link.control) return this.#onControl(link, msg);
    const request = channel.request;
    if (request && msg.id === request.id && ["joined", "rejoined", "left", "error"].includes(msg.type)) {
      channel.request = null;
      // Handled at once, so that what follows on the channel finds the room up to date.
      if (msg.type === "joined") channel.room._attach(channel, msg.members ?? [], channel.resuming);
      if (msg.type === "rejoined") this.#resend(link, channel, Number(msg.last_seq) || 0);
      // `left` and a refused `join` end the channel: finish our side too.
      if (msg.type === "left" || (msg.type === "error" && request.type === "join")) link.finish(channel);
      if (msg.type === "error") request.reject(new SignalingError(msg.code, msg.message));
      else request.resolve(msg);
      return;
    }
    if (channel.room?._channel === channel) channel.room._onMessage(msg);
  }

  #onControl(link, msg) {
    const request = link.control.request;
    if (request && msg.id === request.id && ["ack", "ice_servers", "error"].includes(msg.type)) {
      // The answer to a refresh or ice_servers: its caller hears of it.
      link.control.request = null;
      if (msg.type === "error") request.reject(new SignalingError(msg.code, msg.message));
      else request.resolve(msg);
      return;
    }
    if (msg.type === "token_expiring") {
      const expiresInMs = Number.isFinite(msg.expires_in_ms) ? msg.expires_in_ms : 0;
      return this.#onTokenExpiring(link, expiresInMs);
    }
    if (msg.type === "error") {
      emit(this, "error", { code: msg.code, message: msg.message });
    } else if (msg.type === "goodbye") {
      // Always the server's last message; the connection closes right after it.
      emit(this, "goodbye", { code: msg.code, message: msg.message });
      this.#dropped(link, msg.code, msg.message);
    }
    if (msg.type === "pong" && msg.nonce === this.#nonce) this.#ponged = true;
  }

  /** The connection dropped without a goodbye; its close reason may still name the code. */
  #onLost(link, info) {
    if (link !== this.#link) return;
    if (info.code) emit(this, "goodbye", { code: info.code, message: info.reason });
    this.#dropped(link, info.code ?? "connection_lost", info.reason);
  }

  /**
   * A room of the resumed session is back on `channel` (`rejoined`): its missed events follow.
   * Sends again, with their seq, the signals and broadcasts the server did not get (above
   * `lastSeq`, the last it accepted); numbering goes on from there.
   */
  #resend(link, channel, lastSeq) {
    const room = channel.room;
    room._reattach(channel, lastSeq);
    for (const [id, out] of [...room._unacked]) {
      room._unacked.delete(id);
      if (out.seq <= lastSeq) continue; // it arrived; only its ack was lost
      const again = { ...out, id: this.#nextId() };
      room._unacked.set(again.id, again);
      try {
        link.send(channel, again);
      } catch {
        room._unacked.delete(again.id);
      }
    }
  }

  /** The session is over, or its connection lost: resume or reconnect, or close for good. */
  #dropped(link, code, message) {
    if (link !== this.#link || this.#closed) return;
    this.#link = null;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#iceTimer);
    if (code === "connection_lost" && this.#resumeToken && this.#cfg.reconnect) {
      // Lost without a goodbye: the server holds the session for a while. A clean close now
      // would end it, so the connection is left as it is until the session is back.
      link.abandon();
      this.#stale.push(link);
    } else {
      // The server ended the session (or does not hold it): the next one is a new one.
      this.#resumeToken = null;
      link.close("connection_lost");
    }
    for (const room of this.rooms.values()) room._channel = null;
    if (code === "token_expired" && this.#cfg.refreshToken) {
      // Not refreshed in time (or the refresh failed): a new session needs a new token.
      this.#needToken = true;
      this.#reconnect(code);
    } else if (FATAL_CODES.has(code) || !this.#cfg.reconnect) {
      this.#finish(code, message);
    } else {
      this.#reconnect(code); // shutting_down, idle_timeout, slow_consumer, a plain drop, ...
    }
  }

  async #reconnect(reason) {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    const session = await this.#retry(reason);
    this.#reconnecting = false;
    if (!session) return;
    const { link, welcome, resumeError } = session;
    const previousPeerId = this.peerId;
    const resumed = welcome.resumed === true && welcome.peer_id === previousPeerId;
    this.#adopt(link, welcome);
    // The session is back (the server closed its old connection) or a new one replaces it: the
    // old connections can go now.
    this.#closeStale();
    if (this.#link !== link) return;
    emit(this, "transport", { transport: link.transport });
    const rooms = [...this.rooms.values()];
    const restarted = await Promise.all(rooms.map((room) => this.#rejoin(link, room, resumed)));
    if (this.#link !== link) return;
    emit(this, "reconnected", {
      transport: link.transport,
      rooms: [...this.rooms.keys()],
      resumed,
      peerId: this.peerId,
      previousPeerId,
      restartedRooms: rooms.filter((room, i) => restarted[i] && this.rooms.get(room.name) === room).map((room) => room.name),
      resumeError: resumed ? null : resumeError ?? null,
    });
  }

  #closeStale() {
    for (const old of this.#stale.splice(0)) old.close("connection_lost");
  }

  /** Retries with backoff until a session is welcomed; null if the client closed meanwhile. */
  async #retry(reason) {
    for (let attempt = this.#failures + 1; ; attempt++) {
      this.#failures = attempt;
      if (this.#closed) return null;
      const delayMs = backoff(attempt, this.#cfg.maxBackoffMs);
      emit(this, "reconnecting", { attempt, delayMs, reason, resuming: this.#resumeToken !== null });
      await this.#sleep(delayMs);
      if (this.#closed) return null;
      if (this.#needToken && !(await this.#refreshToken())) return null;
      try {
        const session = await openSession(this.#cfg, this.#token, this.#resumeToken);
        if (!this.#closed) return session;
        session.link.close("closed");
        return null;
      } catch (err) {
        reason = err.code;
        if (err.code === "token_expired" && this.#cfg.refreshToken) {
          this.#needToken = true;
        } else if (refusals.has(err) && FATAL_CODES.has(err.code)) {
          emit(this, "goodbye", { code: err.code, message: err.message });
          this.#finish(err.code, err.message);
          return null;
        }
      }
    }
  }

  /** Gets a new token for the next session after `token_expired` (too late to refresh in-band). */
  async #refreshToken() {
    try {
      this.#token = await this.#cfg.refreshToken();
      this.#needToken = false;
      return true;
    } catch (err) {
      this.#finish("token_expired", `refreshToken failed: ${err?.message ?? err}`);
      return false;
    }
  }

  /**
   * Rejoins a room on a new session, or, with `resume`, asks the resumed session's room back; a
   * refusal (e.g. room_full) loses the room.
   * @returns {Promise<boolean>} whether the room was joined afresh (not `rejoined`)
   */
  async #rejoin(link, room, resume) {
    room._channel = null; // nothing goes out for the room until it is joined again
    let answer;
    try {
      answer = await this.#joinOn(link, room, resume ? room._events : null);
    } catch (err) {
      if (err.code === "connection_lost" || err.code === "closed") return true; // the next session tries again
      if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
      room._detach(true);
      emit(room, "error", { code: err.code, message: `could not rejoin the room: ${err.message}` });
      return true;
    }
    if (this.rooms.get(room.name) !== room && link === this.#link && room._channel) {
      // Left while it was being rejoined: leave on the server too.
      const channel = room._channel;
      room._detach(false);
      this.#request(link, channel, "leave", (id) => ({ type: "leave", id })).catch(() => {});
    }
    return answer?.type !== "rejoined";
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#wake?.(), ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }

  #finish(code, reason) {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#stableTimer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#iceTimer);
    this.#wake?.();
    const link = this.#link;
    this.#link = null;
    link?.close("closed");
    this.#closeStale();
    for (const room of this.rooms.values()) room._channel = null;
    const closed = new SignalingError("closed", "the client is closed");
    for (const waiter of this.#waiters.splice(0)) waiter.reject(closed);
    emit(this, "closed", { code, reason });
  }
}

/**
 * A joined room. Get one from `client.join()`; after a reconnect it is the same object.
 *
 * Events (CustomEvent, data in `detail`): "peer-joined" `{peerId, userId}`,
 * "peer-left" `{peerId}`, "signal" `{from, signal}`, "broadcast" `{from, data}`,
 * "error" `{code, message}` (a failed request, e.g. `unknown_peer` or `replayed`, or a room
 * lost on rejoining). After a resumed session (see "reconnected") the room's missed
 * events come as these same events, in order, once.
 *
 * Every `signal` and `broadcast` carries a `seq`, counted 1, 2, 3, ... from each fresh join of
 * the room and going on across a resume: the server relays only messages whose `seq` is above
 * the room's last, so a replayed or duplicated message never reaches a peer twice. When the
 * server holds sessions, each also carries a request id, and is kept until the server's `ack`,
 * to be sent again (same `seq`) after a resume if the server never got it. The room
 * acknowledges the events it got (`received`) every 16 events and on every ping, so that the
 * server need not keep them for a resume.
 */
export class Room extends EventTarget {
  /** @type {string} */ name;
  /** The other members, by peer id. @type {Map<string, Member>} */ members = new Map();
  /** @internal */ _client;
  /** @internal the room's channel on the current session, null while there is none */ _channel = null;
  /** @internal */ _leaving = null;
  /** @internal the last `seq` sent in the room (since it was joined afresh) */ _seq = 0;
  /** @internal the room's events handled since it was joined afresh (see ROOM_EVENTS) */ _events = 0;
  /** @internal how many of them the server was told of (`received`) */ _eventsAcked = 0;
  /** @internal signals and broadcasts not acknowledged yet, by request id, in `seq` order */ _unacked = new Map();

  /** @hideconstructor */
  constructor(key, client, name) {
    if (key !== INTERNAL) throw new TypeError("use client.join() to get a Room");
    super();
    this._client = client;
    this.name = name;
  }

  /**
   * Relays a signal to one member. Throws SignalingError `not_in_room`,
   * `not_connected` (while reconnecting) or `frame_too_large`, and TypeError for a bad argument.
   * @param {string} to the member's peer id (16 lowercase hex digits)
   * @param {Signal} signal
   */
  signal(to, signal) {
    if (typeof to !== "string" || !PEER_ID.test(to)) throw new TypeError(`signal: ${JSON.stringify(to)} is not a peer id`);
    this._client._send(this, { type: "signal", to, signal: wireSignal(signal) });
  }

  /** Relays a string to every other member. @param {string} data */
  broadcast(data) {
    if (typeof data !== "string") throw new TypeError("broadcast: data must be a string");
    this._client._send(this, { type: "broadcast", data });
  }

  /** Leaves the room. @returns {Promise<void>} resolves on `left` */
  leave() {
    this._leaving ??= this._client._leave(this).finally(() => (this._leaving = null));
    return this._leaving;
  }

  /** @internal The next `seq` of the room: 1, 2, 3, ... from each fresh join. */
  _nextSeq() {
    this._seq += 1;
    return this._seq;
  }

  /** @internal Keeps a sent signal or broadcast until the server acknowledges it (the oldest go beyond `max`). */
  _keep(out, max) {
    this._unacked.set(out.id, out);
    if (this._unacked.size > max) this._unacked.delete(this._unacked.keys().next().value);
  }

  /**
   * @internal The room's channel answered `joined`: brings `members` up to date, with events.
   * After a resuming join (`resuming`) the server keeps counting `seq` where it was, so the
   * numbering goes on; what was not acknowledged is dropped either way (the missed events are lost).
   */
  _attach(channel, list, resuming = false) {
    this._channel = channel;
    if (!resuming) this._seq = 0; // the server counts `seq` per channel, and this one is new
    this._events = 0;
    this._eventsAcked = 0;
    this._unacked.clear();
    const next = new Map(list.map((m) => [m.peer_id, { peerId: m.peer_id, userId: m.user_id }]));
    for (const peerId of [...this.members.keys()]) {
      if (!next.has(peerId)) this.#peerLeft(peerId);
    }
    for (const [peerId, member] of next) {
      if (!this.members.has(peerId)) this.#peerJoined(member);
    }
  }

  /**
   * @internal The room of a resumed session is back on `channel` (`rejoined`): members and the
   * event count carry on; `seq` goes on above `lastSeq`, the last one the server accepted.
   */
  _reattach(channel, lastSeq) {
    this._channel = channel;
    this._seq = Math.max(this._seq, lastSeq);
    this._eventsAcked = this._events; // the resuming join said how many there were
  }

  /** @internal The room is no longer joined; with `announce`, every member leaves with an event. */
  _detach(announce) {
    this._channel = null;
    if (!announce) return this.members.clear();
    for (const peerId of [...this.members.keys()]) this.#peerLeft(peerId);
  }

  /** @internal A message on the room's channel. */
  _onMessage(msg) {
    if (msg.type === "ack" || (msg.type === "error" && msg.id !== undefined)) this._unacked.delete(msg.id);
    if (ROOM_EVENTS.has(msg.type)) {
      this._events += 1;
      this._client._eventHandled(this);
    }
    switch (msg.type) {
      case "peer_joined":
        return this.#peerJoined({ peerId: msg.peer.peer_id, userId: msg.peer.user_id });
      case "peer_left":
        return this.#peerLeft(msg.peer_id);
      case "signal":
        return emit(this, "signal", { from: msg.from, signal: msg.signal });
      case "broadcast":
        return emit(this, "broadcast", { from: msg.from, data: msg.data });
      case "error":
        return emit(this, "error", { code: msg.code, message: msg.message });
      // `ack` only settles a kept signal or broadcast; `pong` is never asked for on a room channel
    }
  }

  #peerJoined(member) {
    this.members.set(member.peerId, member);
    emit(this, "peer-joined", { peerId: member.peerId, userId: member.userId });
  }

  #peerLeft(peerId) {
    if (!this.members.delete(peerId)) return;
    emit(this, "peer-left", { peerId });
  }
}
