// Starts the PeerJS server (npm package `peer`, pinned in package.json) over
// TLS, like ours, so that bench/run compares the two behind the same kind of
// socket: `node server.mjs <port|0> <key.pem> <cert.pem> [host]`.
// Prints one JSON line, {"port": <port>}, once it listens.
import { readFileSync } from "node:fs";
import { PeerServer } from "peer";

const [port, keyFile, certFile, host = "127.0.0.1"] = process.argv.slice(2);
if (port === undefined || !keyFile || !certFile) {
  console.error("usage: node server.mjs <port|0> <key.pem> <cert.pem> [host]");
  process.exit(2);
}

const server = PeerServer(
  {
    host,
    port: Number(port),
    path: "/",
    ssl: { key: readFileSync(keyFile, "utf8"), cert: readFileSync(certFile, "utf8") },
    // PeerJS refuses peers past 5,000 by default: the bench measures the server, not that cap.
    concurrent_limit: 1_000_000,
  },
  (httpsServer) => {
    console.log(JSON.stringify({ port: httpsServer.address().port }));
  },
);
server.on("error", (e) => console.error("peerjs:", e.message));
process.on("SIGTERM", () => process.exit(0));
