// The demo call page: connect to the signaling server with a token, join a
// room, and open one RTCPeerConnection per other member, with a data-channel
// chat and optional camera/mic. Only signaling goes through the server
// (/signaling.js); chat and media go peer to peer.
//
// Who offers: the peer that joins later offers to every member it finds in
// room.members at join, and the existing members answer, so the first
// negotiation of a pair never collides. Later renegotiations (a camera started
// on either side) use the "perfect negotiation" pattern, with the later joiner
// as the impolite side, so a collision there cannot wedge the pair either.
//
// For tests: body[data-state], #status[data-state][data-transport],
// #error-code, #peers > li[data-peer-id][data-state][data-channel],
// #chat-log > li, #log > li[data-event].

import { connect, SignalingError } from "/signaling.js";

// The library may spend ~36 s in auto mode before the WSS fallback answers.
const CONNECT_TIMEOUT_MS = 40000;
const JOIN_TIMEOUT_MS = 10000;
const LEAVE_TIMEOUT_MS = 3000;
const LOG_LIMIT = 500;
const STATE_LABELS = {
  idle: "not connected", connecting: "connecting…", connected: "connected",
  reconnecting: "reconnecting…", closed: "closed", error: "error",
};
const TRANSPORT_LABELS = { webtransport: "WebTransport", websocket: "WebSocket" };

const $ = (id) => document.getElementById(id);
const short = (peerId) => String(peerId).slice(0, 8);

let client = null;        // the signaling client while we hold one
let room = null;          // the joined room
let myPeerId = null;      // our peer id, to notice a new session after a reconnect
let connecting = false;
let userClosed = false;   // we asked to leave: "closed" is no surprise
let localStream = null;   // camera/mic, once started
const peers = new Map();  // peerId -> peer (see addPeer)

// The ICE servers the server handed this session in its welcome (STUN, and
// TURN with credentials minted for it), so peers behind NATs connect too.
function rtcConfiguration() {
  return { iceServers: client?.iceServers ?? [] };
}

// ---------------------------------------------------------------- page state

function setState(state) {
  document.body.dataset.state = state;
  $("status").dataset.state = state;
  $("status-state").textContent = STATE_LABELS[state] ?? state;
}

function setTransport(transport) {
  $("status").dataset.transport = transport ?? "";
  $("status-transport").textContent = TRANSPORT_LABELS[transport] ?? "—";
}

function updateControls() {
  const busy = connecting || client !== null;
  for (const id of ["token", "transport", "room", "connect"]) $(id).disabled = busy;
  $("disconnect").disabled = client === null;
  $("camera").disabled = room === null;
  $("camera").textContent = localStream ? "Stop camera" : "Start camera";
  $("chat-input").disabled = $("chat-send").disabled = room === null;
  $("peer-count").textContent = peers.size;
  $("peers-empty").hidden = peers.size > 0;
  $("peers-empty").textContent = room
    ? "No one else here yet. Open a second tab to start a call."
    : "Not in a room yet.";
}

function showError(err, { fatal = true } = {}) {
  const code = err instanceof SignalingError ? err.code : (err?.code ?? err?.name ?? "error");
  const message = err?.message ?? String(err);
  $("error-code").textContent = code;
  $("error-message").textContent = message;
  $("error").classList.toggle("warning", !fatal);
  $("error").hidden = false;
  log("error", `${code}: ${message}`, fatal ? "error" : "warn");
  if (fatal) setState("error");
}

function clearError() {
  $("error").hidden = true;
  $("error-code").textContent = $("error-message").textContent = "";
}

function log(event, text = "", kind = "info") {
  const list = $("log");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  const li = el("li", kind);
  li.dataset.event = event;
  li.append(el("time", "", timestamp()), el("span", "event", event), el("span", "text", text));
  list.append(li);
  while (list.children.length > LOG_LIMIT) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function timestamp(date = new Date()) {
  return date.toLocaleTimeString("en-GB", { hour12: false }) + "." +
    String(date.getMilliseconds()).padStart(3, "0");
}

// An event's detail as one line: a string, an error's code and message, or JSON.
const describe = (d) =>
  d == null ? "" : typeof d === "string" ? d
    : d.message ? `${d.code ?? d.name}: ${d.message}` : JSON.stringify(d);

// Rejects with a {code: "timeout"} error instead of hanging; a result that
// arrives too late is handed to onLate (to close a client nobody will use).
function withTimeout(promise, ms, what, onLate = () => {}) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      promise.then(onLate, () => {});
      reject({ code: "timeout", message: `${what} did not finish within ${ms / 1000} s` });
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------- connect, join, leave

async function start() {
  if (connecting || client) return;
  clearError();
  const token = $("token").value.trim();
  const transport = $("transport").value;
  const roomName = $("room").value.trim() || "lobby";
  if (!token) {
    showError({ code: "no_token", message: "Paste a token first (see how to mint one below the box)." });
    return;
  }
  connecting = true;
  userClosed = false;
  setState("connecting");
  setTransport(null);
  updateControls();
  log("connecting", `${location.origin}, transport: ${transport}`);
  try {
    const c = await withTimeout(connect(location.origin, { token, transport }),
      CONNECT_TIMEOUT_MS, "connect", (late) => late.close());
    client = c;
    myPeerId = c.peerId;
    watchClient(c);
    setTransport(c.transport);
    log("connected", `as ${c.userId} (peer ${short(c.peerId)}) over ${TRANSPORT_LABELS[c.transport] ?? c.transport}`);
    const r = await withTimeout(c.join(roomName), JOIN_TIMEOUT_MS, `joining "${roomName}"`);
    room = r;
    watchRoom(r);
    log("joined", `room "${roomName}" with ${r.members.size} other member(s)`);
    setState("connected");
    showSelf(roomName, token, transport);
    // We are the later joiner: we offer to everyone already here.
    for (const member of r.members.values()) addPeer(member, { offerer: true });
  } catch (err) {
    teardown();
    showError(err);
  } finally {
    connecting = false;
    updateControls();
  }
}

async function leave() {
  userClosed = true;
  if (room) {
    log("leaving", `room "${room.name ?? $("room").value}"`);
    try {
      await withTimeout(room.leave(), LEAVE_TIMEOUT_MS, "leave");
    } catch (err) {
      log("error", `leave: ${describe(err)}`, "warn");
    }
  }
  teardown();
  setState("closed");
  log("closed", "left the room and closed the connection");
}

function teardown() {
  for (const peerId of [...peers.keys()]) removePeer(peerId);
  if (localStream) stopCamera();
  const c = client;
  client = room = myPeerId = null;
  try { c?.close(); } catch { /* already closed */ }
  $("self").hidden = $("share-link").hidden = true;
  updateControls();
}

function showSelf(roomName, token, transport) {
  $("self").textContent = `You are ${client.userId} (peer ${short(client.peerId)}) in room "${roomName}".`;
  $("self").hidden = false;
  // A second tab with the same token is a second peer of the same user: handy for a demo.
  // The token goes in the fragment, which browsers never send to a server.
  const query = new URLSearchParams({ room: roomName, transport, autojoin: "1" });
  $("share-link").href = `${location.pathname}?${query}#${new URLSearchParams({ token })}`;
  $("share-link").hidden = false;
}

function watchClient(c) {
  const on = (type, handler) =>
    c.addEventListener(type, (e) => { if (c === client) handler(e.detail); });
  on("transport", (d) => {
    setTransport(c.transport);
    log("transport", typeof d === "string" ? d : (d?.transport ?? c.transport));
  });
  on("reconnecting", (d) => { setState("reconnecting"); log("reconnecting", describe(d), "warn"); });
  on("iceservers", (d) => {
    // Fresh TURN credentials: peer connections use them for ICE restarts.
    for (const peer of peers.values()) peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: d.iceServers });
    log("ice servers", `${d.iceServers.length} server(s), credentials until ${d.expiresAt ? new Date(d.expiresAt).toLocaleTimeString() : "—"}`);
  });
  on("reconnected", (d) => {
    setTransport(c.transport);
    setState(room ? "connected" : "connecting");
    const over = `over ${TRANSPORT_LABELS[c.transport] ?? c.transport}`;
    if (d?.resumed) {
      // Same session and peer id: nobody saw us leave, the calls go on.
      const restarted = d.restartedRooms?.length ? `; rejoined afresh: ${d.restartedRooms.join(", ")}` : "";
      log("resumed", `the session is back ${over}, still peer ${short(c.peerId)}${restarted}`);
    } else {
      const why = d?.resumeError ? ` (could not resume: ${d.resumeError})` : "";
      log("reconnected", `new session ${over} as peer ${short(c.peerId)}${why}`);
    }
    resync();
  });
  on("error", (d) => showError(d, { fatal: false }));
  // The demo has no way to fetch a token (no refreshToken hook): the session
  // ends with token_expired when the pasted token expires.
  on("tokenexpiring", ({ expiresInMs }) =>
    log("token-expiring", `the token expires in ${Math.round(expiresInMs / 1000)} s; ` +
      "then the session ends (paste a fresh token and connect again)", "warn"));
  on("tokenrefreshed", ({ expiresAt }) =>
    log("token-refreshed", expiresAt ? `valid until ${new Date(expiresAt).toLocaleTimeString("en-GB")}` : ""));
  // A goodbye is fatal only if no reconnect follows (a "closed" event then comes too).
  on("goodbye", (d) => showError(d, { fatal: false }));
  on("closed", (d) => {
    log("closed", describe(d), "warn");
    // Closed for good by the server (no reconnect): that ends the demo with its code.
    if (!userClosed && d?.code && d.code !== "closed") showError(d);
    teardown();
    if (!userClosed && document.body.dataset.state !== "error") setState("closed");
  });
}

// After a reconnect with a new session the others saw us leave, so we start
// over as the later joiner; with the same session only departures matter.
function resync() {
  if (!room) return;
  if (client.peerId !== myPeerId) {
    myPeerId = client.peerId;
    for (const peerId of [...peers.keys()]) removePeer(peerId);
    for (const member of room.members.values()) addPeer(member, { offerer: true });
  } else {
    for (const peerId of [...peers.keys()]) if (!room.members.has(peerId)) removePeer(peerId);
  }
}

function watchRoom(r) {
  const on = (type, handler) =>
    r.addEventListener(type, (e) => { if (r === room) handler(e.detail); });
  on("peer-joined", ({ peerId, userId }) => {
    log("peer-joined", `${userId} (${short(peerId)})`, "recv");
    chatNote(`${userId} joined`);
    removePeer(peerId); // a peer id we still hold is a stale connection
    addPeer({ peerId, userId }, { offerer: false }); // it will offer; we answer
  });
  on("peer-left", ({ peerId }) => {
    const peer = peers.get(peerId);
    log("peer-left", `${peer?.userId ?? "?"} (${short(peerId)})`, "recv");
    if (peer) chatNote(`${peer.userId} left`);
    removePeer(peerId);
  });
  on("signal", ({ from, signal }) => {
    const peer = peers.get(from) ?? (signal.kind === "offer" &&
      addPeer({ peerId: from, userId: r.members.get(from)?.userId ?? "?" }, { offerer: false }));
    if (!peer) return log(`${signal.kind}-received`, `from unknown peer ${short(from)}, ignored`, "warn");
    // One signal at a time per peer, in arrival order.
    peer.queue = peer.queue.then(() => onSignal(peer, signal))
      .catch((err) => showError(err, { fatal: false }));
  });
  on("broadcast", ({ from, data }) => chatLine(r.members.get(from)?.userId ?? short(from), data, "remote", "via server"));
  on("error", (d) => {
    if (d?.code === "unknown_peer") log("error", `unknown_peer: ${d.message}`, "warn"); // it just left
    else showError(d, { fatal: false });
  });
}

const label = (peer) => `${peer.userId} (${short(peer.peerId)})`;

function sendSignal(peer, signal) {
  const r = room;
  if (!r) return;
  const extra = signal.kind === "candidate" ? ` ${candidateType(signal.candidate)}` : "";
  log(`${signal.kind}-sent`, `to ${label(peer)}${extra}`, "send");
  Promise.resolve().then(() => r.signal(peer.peerId, signal)).catch((err) => {
    // unknown_peer: it left while the signal was on its way.
    if (err?.code === "unknown_peer" || !peers.has(peer.peerId)) log("error", describe(err), "warn");
    else showError(err, { fatal: false });
  });
}

const candidateType = (candidate) => {
  const m = / (udp|tcp) .* typ (\w+)/i.exec(candidate ?? "");
  return m ? `(${m[2]} ${m[1].toLowerCase()})` : "";
};

// ------------------------------------------------------------------- WebRTC

function addPeer({ peerId, userId }, { offerer }) {
  const pc = new RTCPeerConnection(rtcConfiguration());
  const peer = {
    peerId, userId, pc, offerer,
    polite: !offerer,      // perfect negotiation: the answering side yields on a collision
    channel: null,
    makingOffer: false,
    ignoreOffer: false,
    pendingCandidates: [], // remote candidates that came before the remote description
    queue: Promise.resolve(),
    li: null, tile: null,
  };
  peers.set(peerId, peer);

  pc.onicecandidate = ({ candidate }) => {
    if (!candidate) return; // end of candidates: nothing to send
    // candidate.toJSON() has the RTCIceCandidateInit fields; leave out the null ones.
    const fields = Object.entries(candidate.toJSON()).filter(([, v]) => v != null);
    sendSignal(peer, { kind: "candidate", ...Object.fromEntries(fields) });
  };
  pc.onnegotiationneeded = () => negotiate(peer);
  pc.onconnectionstatechange = () => {
    log("peer-connection", `${label(peer)}: ${pc.connectionState}`, pc.connectionState === "failed" ? "error" : "info");
    renderPeer(peer);
  };
  pc.ontrack = ({ track, streams }) => showRemoteTrack(peer, track, streams[0]);
  pc.ondatachannel = ({ channel }) => { if (channel.label === "chat") setupChannel(peer, channel); };

  if (offerer) {
    addLocalTracks(peer);
    setupChannel(peer, pc.createDataChannel("chat")); // fires negotiationneeded: our first offer
  }
  renderPeer(peer);
  updateControls();
  return peer;
}

function removePeer(peerId) {
  const peer = peers.get(peerId);
  if (!peer) return;
  peers.delete(peerId);
  peer.channel?.close();
  peer.pc.close();
  peer.li?.remove();
  peer.tile?.remove();
  updateControls();
}

async function negotiate(peer) {
  const { pc } = peer;
  try {
    peer.makingOffer = true;
    await pc.setLocalDescription();
    sendSignal(peer, { kind: "offer", sdp: pc.localDescription.sdp });
  } catch (err) {
    if (peers.has(peer.peerId)) showError(err, { fatal: false });
  } finally {
    peer.makingOffer = false;
  }
}

async function onSignal(peer, signal) {
  const { pc } = peer;
  if (!peers.has(peer.peerId)) return; // it left while this signal waited
  switch (signal.kind) {
    case "offer":
    case "answer": {
      log(`${signal.kind}-received`, `from ${label(peer)}`, "recv");
      const collision = signal.kind === "offer" && (peer.makingOffer || pc.signalingState !== "stable");
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) {
        log("glare", `ignoring ${label(peer)}'s offer: ours goes first`, "warn");
        return;
      }
      await pc.setRemoteDescription({ type: signal.kind, sdp: signal.sdp }); // rolls ours back if needed
      for (const init of peer.pendingCandidates.splice(0)) await addCandidate(peer, init);
      if (signal.kind === "offer") {
        addLocalTracks(peer); // the answering side's camera joins with its first answer
        await pc.setLocalDescription();
        sendSignal(peer, { kind: "answer", sdp: pc.localDescription.sdp });
      }
      break;
    }
    case "candidate": {
      const { kind, ...init } = signal;
      log("candidate-received", `from ${label(peer)} ${candidateType(init.candidate)}`, "recv");
      if (pc.remoteDescription) await addCandidate(peer, init);
      else peer.pendingCandidates.push(init);
      break;
    }
    default:
      log(`${signal.kind}-received`, `from ${label(peer)}: ${describe(signal.data)}`, "recv");
  }
}

async function addCandidate(peer, init) {
  try {
    await peer.pc.addIceCandidate(init);
  } catch (err) {
    // Candidates of an offer we ignored in a collision are expected to fail.
    if (!peer.ignoreOffer) log("error", `candidate from ${label(peer)}: ${err.message}`, "warn");
  }
}

// -------------------------------------------------------------- chat (data channel)

function setupChannel(peer, channel) {
  peer.channel = channel;
  channel.onopen = () => { log("chat-open", `data channel with ${label(peer)}`); renderPeer(peer); };
  channel.onclose = () => renderPeer(peer);
  channel.onmessage = ({ data }) => chatLine(peer.userId, String(data), "remote");
}

function sendChat(text) {
  const open = [...peers.values()].filter((p) => p.channel?.readyState === "open");
  for (const peer of open) peer.channel.send(text);
  chatLine("you", text, "self");
  if (open.length === 0) chatNote("No open data channel yet: nobody got that.");
}

function chatLine(who, text, kind, note = "") {
  const li = el("li", `msg ${kind}`);
  li.append(el("time", "", timestamp().slice(0, 8)), el("span", "who", who), el("span", "text", text));
  if (note) li.append(el("span", "note", note));
  appendChat(li);
}

function chatNote(text) {
  appendChat(el("li", "note", text));
}

function appendChat(li) {
  const list = $("chat-log");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- camera

async function toggleCamera() {
  if (localStream) return stopCamera();
  if (!navigator.mediaDevices?.getUserMedia) {
    showError({ code: "no_camera", message: "This page cannot use the camera (it needs https or localhost)." }, { fatal: false });
    return;
  }
  $("camera").disabled = true;
  try {
    localStream = await getMedia();
    $("local-video").srcObject = localStream;
    $("local-tile").hidden = false;
    log("camera", `started: ${localStream.getTracks().map((t) => t.kind).join(" + ")}`);
    // Each pair renegotiates on negotiationneeded. An answering side that has
    // not had its first offer yet adds its tracks when it does.
    for (const peer of peers.values()) if (peer.offerer || peer.pc.remoteDescription) addLocalTracks(peer);
  } catch (err) {
    localStream = null;
    showError(err, { fatal: false });
  } finally {
    updateControls();
  }
}

// Camera and mic if allowed, else whichever one is.
async function getMedia() {
  let lastError;
  for (const constraints of [{ video: true, audio: true }, { video: true }, { audio: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

function stopCamera() {
  const tracks = localStream.getTracks();
  for (const peer of peers.values()) {
    for (const sender of peer.pc.getSenders()) if (tracks.includes(sender.track)) peer.pc.removeTrack(sender);
  }
  for (const track of tracks) track.stop();
  localStream = null;
  $("local-video").srcObject = null;
  $("local-tile").hidden = true;
  log("camera", "stopped");
  updateControls();
}

function addLocalTracks(peer) {
  if (!localStream) return;
  const sending = new Set(peer.pc.getSenders().map((s) => s.track));
  for (const track of localStream.getTracks()) {
    if (!sending.has(track)) peer.pc.addTrack(track, localStream);
  }
}

function showRemoteTrack(peer, track, stream = new MediaStream([track])) {
  if (!peer.tile) {
    peer.tile = el("figure", "tile");
    peer.tile.dataset.peerId = peer.peerId;
    peer.tile.append(el("video"), el("figcaption", "", label(peer)));
    $("videos").append(peer.tile);
  }
  const video = peer.tile.querySelector("video");
  video.autoplay = video.playsInline = true;
  if (video.srcObject !== stream) video.srcObject = stream;
  // Without a click first (autojoin), browsers only autoplay muted video.
  video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  stream.onremovetrack = () => {
    if (stream.getTracks().length === 0) { peer.tile?.remove(); peer.tile = null; }
  };
}

// ---------------------------------------------------------------- peer list

function renderPeer(peer) {
  if (!peers.has(peer.peerId)) return;
  if (!peer.li) {
    peer.li = el("li", "peer");
    peer.li.append(el("span", "who"), el("code", "id"), el("span", "role"), el("span", "pill state"), el("span", "pill channel"));
    $("peers").append(peer.li);
  }
  const state = peer.pc.connectionState;
  const channel = peer.channel?.readyState ?? "none";
  Object.assign(peer.li.dataset, { peerId: peer.peerId, userId: peer.userId, state, channel });
  peer.li.querySelector(".who").textContent = peer.userId;
  peer.li.querySelector(".id").textContent = short(peer.peerId);
  peer.li.querySelector(".role").textContent = peer.offerer ? "we offered" : "they offered";
  peer.li.querySelector(".state").textContent = state;
  peer.li.querySelector(".channel").textContent = `chat ${channel === "none" ? "waiting" : channel}`;
}

// ---------------------------------------------------------------- start-up

function init() {
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  $("token").value = fragment.get("token") ?? params.get("token") ?? "";
  // Keep the token out of the address bar, the history and any Referer.
  if (params.has("token") || fragment.has("token")) {
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  }
  const transport = params.get("transport");
  if ([...$("transport").options].some((o) => o.value === transport)) $("transport").value = transport;
  $("room").value = params.get("room") || "lobby";

  $("login").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("disconnect").addEventListener("click", leave);
  $("camera").addEventListener("click", toggleCamera);
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("chat-input").value.trim();
    if (text) sendChat(text);
    $("chat-input").value = "";
  });
  $("error-dismiss").addEventListener("click", clearError);
  $("log-clear").addEventListener("click", () => $("log").replaceChildren());
  addEventListener("unhandledrejection", (e) => showError(e.reason, { fatal: false }));
  addEventListener("pagehide", () => { userClosed = true; teardown(); });

  setState("idle");
  updateControls();
  document.documentElement.dataset.demo = "ready";
  if (params.get("autojoin") === "1") start();
}

init();
