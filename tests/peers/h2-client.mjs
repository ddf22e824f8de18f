// HTTP/2 with prior knowledge (h2c), as a proxy in front of the sidecar speaks it: one session,
// three requests one after another, then three at once. Prints their statuses.
// Usage: node h2-client.mjs BASE_URL TOKEN
import http2 from "node:http2";

const [base, token] = process.argv.slice(2);
const session = http2.connect(base);
const request = () =>
  new Promise((resolve, reject) => {
    const req = session.request({ ":path": "/mcp", authorization: `Bearer ${token}` });
    let status;
    req.on("response", (headers) => {
      status = headers[":status"];
    });
    req.on("data", () => {});
    req.on("end", () => resolve(status));
    req.on("error", reject);
    req.end();
  });
const statuses = [];
for (let i = 0; i < 3; i++) statuses.push(await request());
statuses.push(...(await Promise.all([request(), request(), request()])));
console.log(statuses.join(" "));
session.close();
